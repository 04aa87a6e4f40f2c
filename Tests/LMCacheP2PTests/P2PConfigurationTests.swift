import Foundation
import LMCacheTestSupport
import Testing

/// `lmcache serve` refuses P2P settings that cannot work, with a message naming the key, before
/// it loads the model; and TLS files it cannot use, naming the key and the path.
struct P2PConfigurationTests {
    static func serve(_ settings: [String]) throws -> (status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = URL(filePath: P2PCluster.executable)
        process.arguments =
            ["serve", try TestModel.requirePath(), "--port", "0"] + settings.flatMap { ["--set", $0] }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let text = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, text)
    }

    @Test(
        "incomplete P2P settings stop serve with a clear message",
        arguments: [
            (["enable_p2p=true", "lmcache_instance_id=a"], "enable_p2p needs controller_url"),
            (["enable_controller=true", "lmcache_instance_id=a"], "enable_controller needs controller_url"),
            (["enable_p2p=true", "controller_url=127.0.0.1:9"], "needs lmcache_instance_id"),
            (
                ["enable_p2p=true", "controller_url=127.0.0.1:9", "lmcache_instance_id=a", "local_cpu=false"],
                "needs the CPU tier"
            ),
            (["p2p_port=70000"], "p2p_port"),
            (
                ["enable_p2p=true", "controller_url=127.0.0.1:9", "lmcache_instance_id=a", "extra_config={p2p_tls: true}"],
                "extra_config p2p_tls_cert_file is not set"
            ),
            (
                ["remote_url=rediss://127.0.0.1:1", "extra_config={redis_tls_ca_file: /nonexistent/ca.pem}"],
                "extra_config redis_tls_ca_file (/nonexistent/ca.pem) is not a readable PEM certificate file"
            ),
        ]
    )
    func refused(_ settings: [String], _ message: String) throws {
        let (status, stderr) = try Self.serve(settings)
        #expect(status != 0)
        #expect(stderr.contains(message), "\(stderr)")
    }
}
