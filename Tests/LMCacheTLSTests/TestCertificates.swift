import Foundation
import LMCacheCore
import LMCacheTestSupport
import Testing

/// Test-only certificates made by the `openssl` command at test time, in a fresh directory: a CA,
/// a certificate it signed for `localhost` and `127.0.0.1` (server and client use), and an
/// unrelated second CA. No key is kept beyond the test.
final class TestCertificates: Sendable {
    let directory: TemporaryDirectory

    var caFile: String { path("ca.pem") }
    var otherCAFile: String { path("other-ca.pem") }
    var certificateFile: String { path("leaf.pem") }
    var keyFile: String { path("leaf.key") }

    func path(_ name: String) -> String { directory.url.appendingPathComponent(name).path }

    /// Makes the files.
    init() async throws {
        directory = try TemporaryDirectory("lmcache-tls")
        let ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try await Self.openssl(
            ["req", "-x509"] + ecKey + [
                "-keyout", path("ca.key"), "-out", path("ca.pem"),
                "-days", "2", "-subj", "/CN=lmcache test CA",
            ]
        )
        try await Self.openssl(
            ["req", "-x509"] + ecKey + [
                "-keyout", path("other-ca.key"), "-out",
                path("other-ca.pem"), "-days", "2", "-subj", "/CN=lmcache other test CA",
            ]
        )
        try await Self.openssl(
            ["req"] + ecKey + [
                "-keyout", path("leaf.key"), "-out", path("leaf.csr"),
                "-subj", "/CN=localhost",
            ]
        )
        try
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
            .write(toFile: path("leaf.ext"), atomically: false, encoding: .utf8)
        try await Self.openssl([
            "x509", "-req", "-in", path("leaf.csr"), "-CA", path("ca.pem"), "-CAkey",
            path("ca.key"), "-set_serial", "2", "-days", "2", "-extfile", path("leaf.ext"), "-out", path("leaf.pem"),
        ])
    }

    /// `lm_tls`-style files for a server with the signed certificate.
    func serverFiles(_ link: String, clientCA: String? = nil) -> TLSFiles {
        TLSFiles(link: link, caFile: clientCA, certificateFile: certificateFile, keyFile: keyFile)
    }

    static var isAvailable: Bool { executable("openssl") != nil }

    static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    private static func openssl(_ arguments: [String]) async throws {
        let result = try await runChildProcess(try #require(executable("openssl")), arguments, mergeStandardError: true)
        try #require(result.status == 0, "openssl \(arguments.joined(separator: " ")): \(result.output)")
    }
}
