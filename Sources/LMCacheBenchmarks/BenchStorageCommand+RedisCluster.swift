import LMCacheCommandSupport
import LMCacheCore
import LMCacheRemote
import LMCacheWire
import Logging
import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A Redis Cluster of three masters (no replicas) started on loopback for `lmcache bench storage
/// --tier redis --redis-cluster`, stopped with the benchmark.
struct RedisClusterProcesses {
    let nodes: [RedisProcess]
    let directory: String

    var endpoints: [RemoteURL.Endpoint] { nodes.map { RemoteURL.Endpoint(host: "127.0.0.1", port: $0.port) } }

    /// Starts three cluster-enabled `redis-server`s, joins them with `redis-cli --cluster create`
    /// and waits until the cluster reports `cluster_state:ok`.
    static func start(logger: Logger) async throws -> RedisClusterProcesses {
        var template = Array("/tmp/lmcache-bench-cluster-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CommandFailure("cannot create a directory for the cluster") }
        let directory = String(cString: made)
        var nodes: [RedisProcess] = []
        do {
            for _ in 0..<3 {
                // The cluster bus listens on port + 10000: both below Linux's ephemeral range.
                var port = 0
                repeat {
                    port = Int.random(in: 10000...22000)
                } while RedisProcess.canConnect(port: port) || RedisProcess.canConnect(port: port + 10000)
                    || nodes.contains { $0.port == port }
                guard
                    let node = try RedisProcess.start(
                        logger: logger,
                        port: port,
                        extraArguments: [
                            "--cluster-enabled", "yes", "--cluster-config-file", "\(directory)/nodes-\(port).conf",
                            "--dir", directory,
                        ]
                    )
                else { throw CommandFailure("redis-server not found: cannot start a cluster") }
                nodes.append(node)
            }
            let create = try RedisProcess.runCLI(
                ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" } + [
                    "--cluster-replicas", "0", "--cluster-yes",
                ]
            )
            guard create == 0 else { throw CommandFailure("redis-cli --cluster create failed (status \(create))") }
            let cluster = RedisClusterProcesses(nodes: nodes, directory: directory)
            try await cluster.waitUntilHealthy(logger: logger)
            return cluster
        } catch {
            for node in nodes { node.stop() }
            throw error
        }
    }

    private func waitUntilHealthy(logger: Logger) async throws {
        let clients = nodes.map { RedisClient(host: "127.0.0.1", port: $0.port, logger: logger) }
        defer { Task { for client in clients { await client.close() } } }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            var healthy = true
            for client in clients {
                let info = try? await client.send(RESPCommand("CLUSTER", "INFO"))
                if info?.string?.contains("cluster_state:ok") != true { healthy = false }
            }
            if healthy { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw CommandFailure("the Redis Cluster did not become healthy within 30 s")
    }

    func stop() {
        for node in nodes { node.stop() }
        for node in nodes { unlink("\(directory)/nodes-\(node.port).conf") }
        rmdir(directory)
    }
}

/// Raw SET/GET against the masters of a cluster, each key sent straight to the master that owns
/// its slot over that master's own connection (as `redis-benchmark --cluster` does): the
/// baseline for the cluster tier, with the time and bytes of each master kept apart.
struct RedisClusterBaseline {
    /// One plain connection per master, by `host:port`.
    let clients: [String: RedisClient]
    /// The master of each value's key, by value index.
    let owners: [String]

    /// Learns the slot map and opens a client per master for the keys `keys`.
    static func make(
        seeds: [RemoteURL.Endpoint],
        keys: [String],
        options: RedisClient.Options,
        logger: Logger
    ) async throws -> RedisClusterBaseline {
        let router = RedisClusterClient(seeds: seeds.map { ($0.host, $0.port) }, nodeOptions: options, logger: logger)
        await router.refresh(force: true)
        var owners: [String] = []
        for key in keys {
            guard let owner = router.owner(ofSlot: RedisClusterSlot.of(key)) else {
                throw CommandFailure("no Redis Cluster node answered CLUSTER SLOTS at \(seeds)")
            }
            owners.append(owner)
        }
        await router.close()
        var clients: [String: RedisClient] = [:]
        for owner in Set(owners) {
            let colon = owner.lastIndex(of: ":")!
            var host = String(owner[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            clients[owner] = RedisClient(
                host: host,
                port: Int(owner[owner.index(after: colon)...]) ?? 0,
                options: options,
                logger: logger
            )
        }
        return RedisClusterBaseline(clients: clients, owners: owners)
    }

    func close() async {
        for client in clients.values { await client.close() }
    }
}

extension BenchStorageCommand {
    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
