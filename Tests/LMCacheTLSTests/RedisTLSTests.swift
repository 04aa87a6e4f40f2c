import Foundation
import LMCacheCore
import LMCacheRemote
import LMCacheStorage
import LMCacheTLS
import LMCacheTestSupport
import Logging
import Testing

/// `rediss://` against Debian's `redis-server` listening with its own TLS (`--tls-port`; the
/// package is built with OpenSSL), with certificates made at test time.
@Suite(.enabled(if: TestCertificates.isAvailable && RedisTLSServer.isAvailable, "needs openssl and redis-server"))
struct RedisTLSTests {
    static func configuration(_ extra: [String: String]) -> LMCacheConfiguration {
        var configuration = LMCacheConfiguration()
        configuration.extraConfig = extra
        return configuration
    }

    static func tier(
        _ url: String,
        _ extra: [String: String],
        logger: Logger = Logger(label: "test.redis")
    ) throws
        -> any StorageTier
    {
        try makeRemoteTier(
            url: RemoteURL(parsing: url),
            configuration: configuration(extra),
            security: { try TLS.client($0) },
            logger: logger
        )
    }

    @Test("rediss:// with a password: AUTH over TLS, chunks round-trip; a wrong CA or password is a miss")
    func roundTrip() async throws {
        let certificates = try await TestCertificates()
        let server = try await RedisTLSServer.start(
            certificates,
            ["--requirepass", "pa55", "--tls-auth-clients", "no"]
        )
        defer { server.stop() }
        let url = "rediss://:pa55@127.0.0.1:\(server.port)"
        let tier = try Self.tier(url, ["redis_tls_ca_file": certificates.caFile])
        #expect(try await TLSTests.roundTrips(tier, 0..<8))
        #expect(await tier.contains(TLSTests.chunk(3).key))

        let log = LogRecorder()
        let wrongCA = try Self.tier(url, ["redis_tls_ca_file": certificates.otherCAFile], logger: log.logger)
        #expect(try await wrongCA.get(TLSTests.chunk(3).key) == nil)
        #expect(try await wrongCA.put(TLSTests.chunk(9)) == false)
        #expect(log.contains("CERTIFICATE_VERIFY_FAILED"), "\(log.all)")

        let wrongPassword = try Self.tier(
            "rediss://:nope@127.0.0.1:\(server.port)",
            ["redis_tls_ca_file": certificates.caFile]
        )
        #expect(try await wrongPassword.get(TLSTests.chunk(3).key) == nil)
        // Plain redis:// against the TLS port: a miss, not a hang or a crash.
        let plain = try Self.tier("redis://:pa55@127.0.0.1:\(server.port)", [:])
        #expect(try await plain.get(TLSTests.chunk(3).key) == nil)
    }

    @Test("rediss:// with mutual TLS: served with redis_tls_cert_file and key, refused without")
    func mutualTLS() async throws {
        let certificates = try await TestCertificates()
        let server = try await RedisTLSServer.start(certificates, ["--tls-auth-clients", "yes"])
        defer { server.stop() }
        let url = "rediss://127.0.0.1:\(server.port)"
        let withCertificate = try Self.tier(
            url,
            [
                "redis_tls_ca_file": certificates.caFile, "redis_tls_cert_file": certificates.certificateFile,
                "redis_tls_key_file": certificates.keyFile,
            ]
        )
        #expect(try await TLSTests.roundTrips(withCertificate, 0..<4))
        let without = try Self.tier(url, ["redis_tls_ca_file": certificates.caFile])
        #expect(try await without.get(TLSTests.chunk(0).key) == nil)
    }
}

/// A `redis-server` with TLS only (`--port 0 --tls-port P`) on loopback, killed by ``stop()``.
final class RedisTLSServer: Sendable {
    let port: Int
    private let process: UncheckedProcess

    static var isAvailable: Bool { TestCertificates.executable("redis-server") != nil }

    private init(port: Int, process: Process) {
        self.port = port
        self.process = UncheckedProcess(process: process)
    }

    /// Starts the server and waits until `redis-cli --tls` gets an answer from it.
    static func start(_ certificates: TestCertificates, _ extra: [String]) async throws -> RedisTLSServer {
        let port = freeLoopbackPort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(TestCertificates.executable("redis-server")))
        process.arguments =
            [
                "--port", "0", "--tls-port", "\(port)", "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--tls-cert-file", certificates.certificateFile, "--tls-key-file",
                certificates.keyFile, "--tls-ca-cert-file", certificates.caFile, "--loglevel", "warning",
            ] + extra
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let server = RedisTLSServer(port: port, process: process)
        let cli = try #require(TestCertificates.executable("redis-cli"))
        for _ in 0..<250 {
            let reply = try await runChildProcess(
                cli,
                [
                    "--tls", "--cacert", certificates.caFile, "--cert",
                    certificates.certificateFile, "--key", certificates.keyFile, "-h", "127.0.0.1", "-p", "\(port)",
                    "PING",
                ],
                mergeStandardError: true
            )
            // PONG, or NOAUTH from a server with a password: either way it answers over TLS.
            if reply.output.contains("PONG") || reply.output.contains("NOAUTH") { return server }
            try await Task.sleep(for: .milliseconds(40))
        }
        server.stop()
        Issue.record("redis-server did not answer on TLS port \(port)")
        throw CancellationError()
    }

    func stop() {
        guard process.process.isRunning else { return }
        kill(process.process.processIdentifier, SIGKILL)
        process.process.waitUntilExit()
    }
}

/// The server's `Process`, started and stopped by the one test that owns it.
private struct UncheckedProcess: @unchecked Sendable {
    let process: Process
}
