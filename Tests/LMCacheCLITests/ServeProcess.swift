import Foundation
import LMCacheTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A built executable (`lmcache serve`, `lmcache_server`) run as a separate process on loopback port 0
/// (so no two tests race for a port), its output in a temporary log file that tells the bound port;
/// stopped by SIGTERM (then SIGKILL) when the test is done.
final class ServeProcess {
    let process = Process()
    let log: URL
    /// The text in the log just before the bound port.
    let portMarker: String
    /// The bound port, once ``waitForPort(timeout:)`` has seen it.
    private(set) var port = 0

    /// The binary named `name` next to the test bundle in the build directory.
    /// Starts `name arguments…` with `environment` added to this process's (less any `LMCACHE_*`).
    init(_ name: String, _ arguments: [String], portMarker: String, environment: [String: String] = [:]) throws {
        self.portMarker = portMarker
        log = FileManager.default.temporaryDirectory.appending(path: "\(name)-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.executableURL = builtExecutable(name)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LMCACHE_") }
        env["LMCACHE_LOG_LEVEL"] = "info"
        env.merge(environment) { $1 }
        process.environment = env
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// `lmcache serve` on the test model, any free loopback port; `settings` are `--set` pairs, `options`
    /// more command-line options.
    static func serve(settings: [String], options: [String] = []) throws -> ServeProcess {
        var arguments = ["serve", try TestModel.requirePath(), "--host", "127.0.0.1", "--port", "0"] + options
        for setting in settings { arguments += ["--set", setting] }
        return try ServeProcess("lmcache", arguments, portMarker: "http://127.0.0.1:")
    }

    /// `lmcache_server` on any free loopback port, with a budget of `gib` GiB.
    static func cacheServer(gib: Double) throws -> ServeProcess {
        try ServeProcess(
            "lmcache_server",
            ["127.0.0.1", "0"],
            portMarker: "lmcache.address=127.0.0.1:",
            environment: ["LMCACHE_SERVER_MAX_SIZE": "\(gib)"]
        )
    }

    var base: URL { URL(string: "http://127.0.0.1:\(port)")! }

    /// What the process wrote so far, for failure messages.
    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// Waits until the log names the bound port (or the process exits, or `timeout` passes).
    @discardableResult
    func waitForPort(timeout: Duration = .seconds(300)) async throws -> Int {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let text = output
            if let range = text.range(of: portMarker),
                let port = Int(text[range.upperBound...].prefix { $0.isNumber })
            {
                self.port = port
                return port
            }
            guard process.isRunning else {
                throw Failure("\(process.executableURL!.lastPathComponent) exited: \(text)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure("\(process.executableURL!.lastPathComponent) named no port within \(timeout): \(output)")
    }

    /// Waits for the port, then until `GET /health` answers 200.
    func waitUntilServing(timeout: Duration = .seconds(300)) async throws {
        try await waitForPort(timeout: timeout)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let (status, _) = try? await HTTP.get(base.appending(path: "health")), status == 200 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw Failure("no answer on port \(port): \(output)")
    }

    /// SIGTERM, then SIGKILL after a grace period; removes the log.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGTERM)
            let deadline = Date().addingTimeInterval(15)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: log)
    }

    deinit { stop() }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Plain HTTP requests to a server under test.
enum HTTP {
    static func get(_ url: URL) async throws -> (Int, String) {
        var request = URLRequest(url: url)
        request.timeoutInterval = 10
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// POSTs a JSON body; returns the status and the JSON object of the reply.
    static func post(_ url: URL, json: [String: Any]) async throws -> (Int, [String: Any]) {
        var request = URLRequest(url: url)
        request.httpMethod = "POST"
        request.httpBody = try JSONSerialization.data(withJSONObject: json)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.timeoutInterval = 600
        let (data, response) = try await URLSession.shared.data(for: request)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, object)
    }

    /// The value of the Prometheus sample `name` (with its labels) in `/metrics`, or 0 when absent.
    static func metric(_ base: URL, _ name: String) async throws -> Double {
        let (_, text) = try await get(base.appending(path: "metrics"))
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            return Double(line.dropFirst(name.count + 1)) ?? 0
        }
        return 0
    }
}

/// Runs `python3 arguments…`; returns the exit status, stdout and stderr. The waits happen on threads
/// of their own, not on the cooperative threads that the other tests need.
func runPython(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
    try await onOwnThread {
        let process = Process()
        process.executableURL = URL(filePath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Both pipes are drained while the program runs (stderr on a second thread).
        let errors = ErrorsReader(err.fileHandleForReading)
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = errors.wait()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }
}

/// Reads a file handle to its end on a thread of its own.
private final class ErrorsReader: @unchecked Sendable {
    // @unchecked: `data` is written by the reading thread before it signals, and read after the wait.
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }

    func wait() -> Data {
        done.wait()
        return data
    }
}
