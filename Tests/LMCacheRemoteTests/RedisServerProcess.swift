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
            "--protected-mode", "no", "--loglevel", "notice", "--logfile", "", "--daemonize", "no"] + extraArguments
    }

    /// Starts the server and waits until it answers; records an issue and throws if it does not.
    func start() async throws {
        if let failure = try await launch() {
            Issue.record("redis-server on port \(port) did not start: \(failure)")
            throw CancellationError()
        }
    }

    /// Starts the server and waits until it answers. Returns why it did not (the process exited,
    /// for instance because another process took the port first, or it never listened), with the
    /// end of its log, after stopping it; `nil` once it answers.
    func launch(timeout: Duration = .seconds(30)) async throws -> String? {
        let log = NSTemporaryDirectory() + "lmcache-redis-\(port)-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        FileManager.default.createFile(atPath: log, contents: nil)
        let output = try #require(FileHandle(forWritingAtPath: log))
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(Self.executable("redis-server")))
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = output
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, process.isRunning {
            // Its own log says it listens (something else may answer on the port: that one exits).
            let ready = (try? String(contentsOfFile: log, encoding: .utf8))?.contains("Ready to accept connections")
            if ready == true, Self.canConnect(port: port) { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        let exited = !process.isRunning
        stop()
        let tail = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n").suffix(5)
            .joined(separator: " | ") ?? ""
        let status = exited ? "exited with status \(process.terminationStatus)" : "did not listen within \(timeout)"
        return "\(status); its log: \(tail.isEmpty ? "(empty)" : tail)"
    }

    /// Whether the process runs.
    var isRunning: Bool { process?.isRunning ?? false }

    /// Kills the server (SIGKILL) if it runs, and waits for it.
    func stop() {
        guard let process else { return }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        // Also for a process that exited by itself: Foundation holds a `Process` until it has been
        // waited for.
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
///
/// A server that cannot start on its port (another process took it between the choice and the
/// bind) is started again on another one, up to three times.
func withRedisServer<R>(
    _ extraArguments: [String] = [], _ body: (RedisServerProcess) async throws -> R
) async throws -> R {
    let server = try await RedisServerProcess.started {
        RedisServerProcess(port: RedisServerProcess.freePort(), extraArguments: extraArguments)
    }
    defer { server.stop() }
    return try await body(server)
}

extension RedisServerProcess {
    /// A server made by `make` and started, made again (on another port) when one fails to
    /// start; records an issue and throws after `attempts` failures.
    static func started(attempts: Int = 3, _ make: () -> RedisServerProcess) async throws -> RedisServerProcess {
        var failures: [String] = []
        for _ in 0..<attempts {
            let server = make()
            guard let failure = try await server.launch() else { return server }
            failures.append("port \(server.port): \(failure)")
        }
        Issue.record("redis-server did not start: \(failures.joined(separator: "; "))")
        throw CancellationError()
    }
}
