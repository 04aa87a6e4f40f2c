import Foundation
import LMCacheTestSupport
import Testing

/// A `redis-server` started for a test on a free loopback port, without persistence.
///
/// Use ``withRedisServer(_:_:)``: it stops the process when the body returns or throws.
final class RedisServerProcess: @unchecked Sendable {
    // `@unchecked Sendable`: `process` is only started and stopped by the test that owns it.
    let port: Int
    let arguments: [String]
    private var process: Process?

    static var isAvailable: Bool { executable("redis-server") != nil }

    static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/usr/local/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(port: Int, extraArguments: [String]) {
        self.port = port
        arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--protected-mode", "no", "--loglevel", "warning", "--logfile", "", "--daemonize", "no"] + extraArguments
    }

    /// Starts the server and waits until it answers.
    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(Self.executable("redis-server")))
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process = process
        for _ in 0..<500 {
            if Self.canConnect(port: port) { return }
            try await Task.sleep(for: .milliseconds(20))
        }
        stop()
        Issue.record("redis-server did not listen on port \(port)")
        throw CancellationError()
    }

    /// Whether the process runs.
    var isRunning: Bool { process?.isRunning ?? false }

    /// Kills the server (SIGKILL) and waits for it.
    func stop() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// Runs `redis-cli` against the server and returns its output (waiting on a thread of its
    /// own, not on one of the few cooperative threads every other test needs).
    func cli(_ arguments: [String]) async throws -> String {
        let path = try #require(Self.executable("redis-cli"))
        return try await runChildProcess(path, ["-h", "127.0.0.1", "-p", "\(port)"] + arguments).output
    }

    deinit { stop() }

    static func freePort() -> Int { freeLoopbackPort() }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

/// Runs a fresh `redis-server` for the duration of `body`, stopping it also when `body` throws.
func withRedisServer<R>(
    _ extraArguments: [String] = [], _ body: (RedisServerProcess) async throws -> R
) async throws -> R {
    let server = RedisServerProcess(port: RedisServerProcess.freePort(), extraArguments: extraArguments)
    try await server.start()
    defer { server.stop() }
    return try await body(server)
}
