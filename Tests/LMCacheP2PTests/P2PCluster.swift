import Foundation
import LMCacheTestSupport
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Real `lmcache controller` and `lmcache serve` processes for the P2P tests, each logging to a
/// file of its own; everything started is killed when the cluster is stopped (also on failure),
/// and the logs' tails are printed when a test failed.
final class P2PCluster: @unchecked Sendable {
    /// The `lmcache` binary next to the test bundle in the build directory.
    static var executable: String { builtExecutable("lmcache").path }

    struct Instance {
        var name: String
        var host: String
        var port: Int
        var process: Process
        var log: URL
    }

    let directory: URL
    // Guarded by being used from one test task only.
    private(set) var instances: [String: Instance] = [:]
    private(set) var controller: Process?
    private(set) var controllerLog: URL
    private var controllerStarts = 0

    init() throws {
        directory = FileManager.default.temporaryDirectory.appending(path: "lmcache-p2p-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        controllerLog = directory.appending(path: "controller.log")
    }

    /// Starts (or restarts) the controller on `host:port`, optionally inside network namespace `netns`.
    func startController(host: String, port: Int, heartbeatTimeout: Double = 3) throws {
        controllerStarts += 1
        controllerLog = directory.appending(path: "controller-\(controllerStarts).log")
        controller = try launch(
            [
                Self.executable, "controller", "--host", host, "--port", "\(port)",
                "--heartbeat-timeout", "\(heartbeatTimeout)",
            ],
            netns: nil,
            log: controllerLog
        )
    }

    /// Starts `lmcache serve` as instance `name`, HTTP on `host:port`, chunks served on `p2pHost`.
    func startInstance(
        _ name: String,
        host: String,
        port: Int,
        p2pHost: String,
        controller: String,
        netns: String? = nil
    ) throws {
        let log = directory.appending(path: "\(name).log")
        let settings = [
            "chunk_size=256", "max_local_cpu_size=0.125", "enable_p2p=true", "enable_controller=true",
            "controller_url=\(controller)", "lmcache_instance_id=\(name)", "p2p_host=\(p2pHost)", "p2p_port=0",
        ]
        let arguments =
            [Self.executable, "serve", try TestModel.requirePath(), "--host", host, "--port", "\(port)"]
            + settings.flatMap { ["--set", $0] }
        let process = try launch(arguments, netns: netns, log: log)
        instances[name] = Instance(name: name, host: host, port: port, process: process, log: log)
    }

    private func launch(_ arguments: [String], netns: String?, log: URL) throws -> Process {
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        if let netns {
            process.executableURL = URL(filePath: try Netns.ipTool())
            process.arguments = ["netns", "exec", netns] + arguments
        } else {
            process.executableURL = URL(filePath: arguments[0])
            process.arguments = Array(arguments.dropFirst())
        }
        var environment = ProcessInfo.processInfo.environment
        environment["LMCACHE_LOG_LEVEL"] = "info"
        process.environment = environment
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        return process
    }

    /// Kills instance `name` outright.
    func kill(_ name: String) {
        guard let instance = instances[name], instance.process.isRunning else { return }
        Foundation.kill(instance.process.processIdentifier, SIGKILL)
        instance.process.waitUntilExit()
    }

    /// Kills the controller outright.
    func killController() {
        guard let controller, controller.isRunning else { return }
        Foundation.kill(controller.processIdentifier, SIGKILL)
        controller.waitUntilExit()
    }

    /// Waits until every instance answers `/health`.
    func waitUntilHealthy(timeout: Duration = .seconds(180)) async throws {
        for instance in instances.values {
            let deadline = ContinuousClock.now + timeout
            while true {
                if let reply = try? await Self.request(instance, path: "/health", body: nil, timeout: 2),
                    reply.status == 200
                {
                    break
                }
                guard instance.process.isRunning else {
                    throw ClusterFailure("instance \(instance.name) exited: \(tail(instance.log))")
                }
                guard ContinuousClock.now < deadline else {
                    throw ClusterFailure("instance \(instance.name) not healthy: \(tail(instance.log))")
                }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// Waits until the current controller's log shows `count` registrations.
    func waitForRegistrations(_ count: Int, timeout: Duration = .seconds(60)) async throws {
        try await waitForControllerLog("instance registered", count: count, timeout: timeout)
    }

    /// Registrations the current controller has logged.
    func registrations() -> Int { controllerLogCount("instance registered") }

    /// Waits until the current controller's log holds `text` `count` times.
    func waitForControllerLog(_ text: String, count: Int = 1, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while controllerLogCount(text) < count {
            guard ContinuousClock.now < deadline else {
                throw ClusterFailure(
                    "waited for \(count) × \"\(text)\" in the controller's log: \(tail(controllerLog))"
                )
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    private func controllerLogCount(_ text: String) -> Int {
        let log = (try? String(contentsOf: controllerLog, encoding: .utf8)) ?? ""
        return log.components(separatedBy: text).count - 1
    }

    /// A completion at temperature 0: its text and `usage.prompt_tokens_details.cached_tokens`.
    func complete(_ name: String, prompt: String, maxTokens: Int = 8) async throws -> (text: String, cached: Int) {
        let instance = try #require(instances[name])
        let body: [String: Any] = ["prompt": prompt, "max_tokens": maxTokens, "temperature": 0]
        let reply = try await Self.request(
            instance,
            path: "/v1/completions",
            body: try JSONSerialization.data(withJSONObject: body),
            timeout: 300
        )
        guard reply.status == 200,
            let object = try JSONSerialization.jsonObject(with: reply.body) as? [String: Any],
            let text = (object["choices"] as? [[String: Any]])?.first?["text"] as? String,
            let usage = object["usage"] as? [String: Any],
            let cached = (usage["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int
        else {
            throw ClusterFailure("\(name) answered \(reply.status): \(String(decoding: reply.body, as: UTF8.self))")
        }
        return (text, cached)
    }

    private static func request(
        _ instance: Instance,
        path: String,
        body: Data?,
        timeout: TimeInterval
    ) async throws
        -> (status: Int, body: Data)
    {
        var request = URLRequest(url: URL(string: "http://\(instance.host):\(instance.port)\(path)")!)
        request.timeoutInterval = timeout
        if let body {
            request.httpMethod = "POST"
            request.httpBody = body
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    /// The last lines of `log`.
    func tail(_ log: URL, lines: Int = 30) -> String {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    /// Kills everything still running; prints the logs when `failed`.
    func stop(failed: Bool) {
        for name in instances.keys.sorted() { kill(name) }
        killController()
        if failed {
            for instance in instances.values.sorted(by: { $0.name < $1.name }) {
                print("--- \(instance.name) log ---\n\(tail(instance.log))")
            }
            print("--- controller log ---\n\(tail(controllerLog))")
        }
        try? FileManager.default.removeItem(at: directory)
    }
}

struct ClusterFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A document of about `sentences × 18` tokens, different for each `seed`.
func p2pDocument(seed: Int, sentences: Int = 32) -> String {
    let places = ["quay", "mill", "chapel", "granary", "viaduct", "foundry", "lock", "signal box"]
    let verbs = ["inspected", "repainted", "surveyed", "restored", "photographed", "measured"]
    return (0..<sentences).map { i in
        let place = places[(i * 3 + seed) % places.count]
        let verb = verbs[(i + seed * 5) % verbs.count]
        return "Entry \(seed)-\(i): the old \(place) was \(verb) in week \(i * 3 + seed % 7)."
    }.joined(separator: " ")
}

/// A free TCP port on the loopback interface.
func freePort() throws -> Int { freeLoopbackPort() }
