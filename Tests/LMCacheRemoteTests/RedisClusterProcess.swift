import Foundation
import LMCacheTestSupport
import Testing

/// A Redis Cluster of 3 masters and 3 replicas on loopback, started for a test.
///
/// Use ``withRedisCluster(_:)``: it kills every node and removes the nodes' files when the body
/// returns or throws.
final class RedisClusterProcess: @unchecked Sendable {
    // `@unchecked Sendable`: the nodes are only started and stopped by the test that owns them.
    private(set) var nodes: [RedisServerProcess]
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "lmcache-redis-cluster-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        nodes = []
    }

    /// A node on a port that no other node uses and nothing listens on (nor on its bus port).
    private func makeNode() -> RedisServerProcess {
        var port: Int
        repeat {
            // The cluster bus listens on port + 10000. Both stay below Linux's ephemeral range
            // (32768 and up), where the tests' own client connections could hold the port.
            port = Int.random(in: 10000...22000)
        } while ports.contains(port) || RedisServerProcess.canConnect(port: port)
            || RedisServerProcess.canConnect(port: port + 10000)
        return RedisServerProcess(
            port: port,
            extraArguments: [
                "--cluster-enabled", "yes", "--cluster-config-file", "\(directory)/nodes-\(port).conf",
                "--cluster-node-timeout", "1000", "--dir", directory,
                // A replica may be elected however long ago it last heard from its master (on a
                // busy machine the last exchange can be older than the default limit allows).
                "--cluster-replica-validity-factor", "0",
            ]
        )
    }

    var ports: [Int] { nodes.map(\.port) }

    func start() async throws {
        // A node that cannot start (its port or bus port taken meanwhile) is replaced by one on
        // other ports.
        while nodes.count < 6 { nodes.append(try await RedisServerProcess.started { makeNode() }) }
        let create = try await nodes[0].cli(
            ["--cluster", "create"] + ports.map { "127.0.0.1:\($0)" } + ["--cluster-replicas", "1", "--cluster-yes"]
        )
        guard create.contains("[OK] All 16384 slots covered") else {
            Issue.record("redis-cli --cluster create failed: \(create)")
            throw CancellationError()
        }
        #expect(try await waitUntilHealthy())
        #expect(try await waitUntilReplicasSynced(), "replicas did not finish their first sync")
    }

    /// Waits until every running replica reports its link to its master up (first sync done).
    func waitUntilReplicasSynced(timeout: Duration = .seconds(30)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let infos = try await runningNodesAnswer(["INFO", "replication"])
            if infos.allSatisfy({ !$0.contains("role:slave") || $0.contains("master_link_status:up") }) { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// Each running node's answer to one `redis-cli` command.
    func runningNodesAnswer(_ command: [String]) async throws -> [String] {
        var answers: [String] = []
        for node in nodes where node.isRunning { answers.append(try await node.cli(command)) }
        return answers
    }

    /// Waits until every running node reports `cluster_state:ok`.
    func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let states = try await runningNodesAnswer(["CLUSTER", "INFO"])
            if states.allSatisfy({ $0.contains("cluster_state:ok") }) { return true }
            try await Task.sleep(for: .milliseconds(100))
        }
        return false
    }

    /// The port of the master that serves `slot`, from a running node's `CLUSTER NODES`
    /// (`id host:port@bus flags master ping pong epoch link slot-ranges…`).
    func masterPort(ofSlot slot: Int) async throws -> Int? {
        guard let node = nodes.first(where: \.isRunning) else { return nil }
        for line in try await node.cli(["CLUSTER", "NODES"]).split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count >= 9, fields[2].contains("master"), !fields[2].contains("fail") else { continue }
            for range in fields[8...] where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                guard let low = bounds.first, let high = bounds.last, (low...high).contains(slot) else { continue }
                let address = fields[1].split(separator: "@")[0]
                return Int(address.split(separator: ":").last!)
            }
        }
        return nil
    }

    /// How many slots the master on `port` serves.
    func slotCount(ofPort port: Int) async throws -> Int {
        guard let node = nodes.first(where: \.isRunning) else { return 0 }
        var count = 0
        for line in try await node.cli(["CLUSTER", "NODES"]).split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count >= 9, fields[1].hasPrefix("127.0.0.1:\(port)@") else { continue }
            for range in fields[8...] where !range.hasPrefix("[") {
                let bounds = range.split(separator: "-").compactMap { Int($0) }
                if let low = bounds.first, let high = bounds.last { count += high - low + 1 }
            }
        }
        return count
    }

    func node(port: Int) -> RedisServerProcess? { nodes.first { $0.port == port } }

    func stop() {
        for node in nodes { node.stop() }
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { stop() }
}

/// Runs a fresh 6-node Redis Cluster for the duration of `body`, stopping it also when `body` throws.
func withRedisCluster<R>(_ body: (RedisClusterProcess) async throws -> R) async throws -> R {
    let cluster = try RedisClusterProcess()
    defer { cluster.stop() }
    try await cluster.start()
    return try await body(cluster)
}
