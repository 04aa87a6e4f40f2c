import Foundation
import LMCacheCore
import LMCacheRemote
import LMCacheStorage
import LMCacheTestSupport
import LMCacheWire
import Logging
import Testing

/// The Redis tier against a real 6-node Redis Cluster (3 masters, 3 replicas) on loopback.
@Suite(.serialized)  // Needs redis-server and redis-cli (scripts/install-deps installs them).
struct RedisClusterTierTests {
    // Serialized: each test runs six redis-server processes; two such tests at once on a
    // two-core machine make failover timings flaky.

    static func tier(_ cluster: RedisClusterProcess, seeds: Int = 1) -> RedisTier {
        var options = RedisTierTests.options()
        options.requestTimeout = .seconds(3)
        return RedisTier(
            cluster: cluster.ports.prefix(seeds).map { ("127.0.0.1", $0) },
            options: options,
            logger: Logger(label: "test.redis-cluster")
        )
    }

    @Test("contract: put, get, contains, remove and batches round-trip exact bytes on the cluster")
    func contract() async throws {
        try await withRedisCluster { cluster in
            let tier = Self.tier(cluster)
            let chunks = (0..<40).map { RedisTierTests.chunk($0) }
            try await TierContract.roundTrip(tier, chunks: chunks, missing: RedisTierTests.chunk(999))
            try await TierContract.concurrent(tier, chunks: chunks, workers: 4, rounds: 30)
            await tier.close()
        }
    }

    @Test("a chunk lands on the master that owns its slot, and the slot is the one Redis computes")
    func placement() async throws {
        try await withRedisCluster { cluster in
            let tier = Self.tier(cluster)
            var owners = Set<Int>()
            for seed in 0..<12 {
                let chunk = RedisTierTests.chunk(seed)
                #expect(try await tier.put(chunk))
                let redisKey = "{\(chunk.key.description)}"
                let slot = RedisClusterSlot.of(redisKey)
                #expect(try await cluster.nodes[0].cli(["CLUSTER", "KEYSLOT", redisKey]) == "\(slot)\n")
                let owner = try #require(try await cluster.masterPort(ofSlot: slot))
                owners.insert(owner)
                #expect(tier.clusterOwner(of: chunk.key) == "127.0.0.1:\(owner)")
                // Asked directly (no redirects followed), only the owner has the key.
                #expect(try await cluster.node(port: owner)!.cli(["EXISTS", redisKey]) == "1\n")
            }
            #expect(owners.count > 1)
            await tier.close()
        }
    }

    @Test("a master killed during a workload: misses at most, never wrong bytes; its replica is elected in its place")
    func failover() async throws {
        try await withRedisCluster { cluster in
            let tier = Self.tier(cluster, seeds: 3)
            let chunks = (0..<30).map { RedisTierTests.chunk($0) }
            for chunk in chunks { #expect(try await tier.put(chunk)) }
            let victimSlot = RedisClusterSlot.of("{\(chunks[0].key.description)}")
            let victim = try #require(try await cluster.masterPort(ofSlot: victimSlot))
            let victimID = try await cluster.node(port: victim)!.cli(["CLUSTER", "MYID"]).trimmingCharacters(
                in: .whitespacesAndNewlines
            )
            var victimReplica: RedisServerProcess?
            for node in cluster.nodes {
                let lines = try await node.cli(["CLUSTER", "NODES"]).split(separator: "\n")
                if lines.contains(where: { $0.contains("myself,slave \(victimID)") }) { victimReplica = node }
            }
            let replica = try #require(victimReplica)
            // The writes so far reach the replica before its master dies.
            _ = try await cluster.node(port: victim)!.cli(["WAIT", "1", "2000"])
            // No operator steps in: the replica must win an election among the masters left
            // (cluster-node-timeout is 1 s, so that takes seconds).
            cluster.node(port: victim)!.stop()
            let killedAt = ContinuousClock.now
            var misses = 0
            var recoveredAfter: Duration?
            // Recovered once a whole pass hits. (Until every master has learnt of the election, a
            // master may answer CLUSTERDOWN for its own slots too; those are misses, not errors.)
            while ContinuousClock.now - killedAt < .seconds(30) {
                var passMisses = 0
                for chunk in chunks {
                    if let hit = try await tier.get(chunk.key) {
                        #expect(hit.contentEquals(chunk))
                    } else {
                        passMisses += 1
                        try await tier.put(chunk)  // Recomputed and stored again, as an engine would.
                    }
                }
                misses += passMisses
                if passMisses == 0 {
                    recoveredAfter = ContinuousClock.now - killedAt
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(misses > 0)
            #expect(recoveredAfter != nil)
            if recoveredAfter == nil, let node = cluster.nodes.first(where: \.isRunning) {
                Issue.record("cluster after the kill: \(try await node.cli(["CLUSTER", "NODES"]))")
            }
            // The slot is served by the elected replica, and the tier learnt it.
            #expect(try await replica.cli(["ROLE"]).hasPrefix("master"))
            #expect(try await cluster.masterPort(ofSlot: victimSlot) == replica.port)
            #expect(tier.clusterOwner(of: chunks[0].key) == "127.0.0.1:\(replica.port)")
            // Every chunk reads back exactly (replicated before the kill, or stored again after).
            for chunk in chunks { #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true) }
            await tier.close()
        }
    }

    @Test(
        "a slot migrated as redis-cli --cluster reshard does: ASK during the move, MOVED after, right bytes throughout"
    )
    func slotMigration() async throws {
        try await withRedisCluster { cluster in
            let tier = Self.tier(cluster)
            let chunk = RedisTierTests.chunk(1)
            let other = RedisTierTests.chunk(2)
            #expect(try await tier.put(chunk))
            let redisKey = "{\(chunk.key.description)}"
            let slot = RedisClusterSlot.of(redisKey)
            let from = try #require(try await cluster.masterPort(ofSlot: slot))
            var otherMaster: Int?
            for probe in [0, 5461, 10923, 16383] {
                if let port = try await cluster.masterPort(ofSlot: probe), port != from { otherMaster = port }
            }
            let to = try #require(otherMaster)
            let source = cluster.node(port: from)!
            let target = cluster.node(port: to)!
            let sourceID = try await source.cli(["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            let targetID = try await target.cli(["CLUSTER", "MYID"]).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(try await target.cli(["CLUSTER", "SETSLOT", "\(slot)", "IMPORTING", sourceID]) == "OK\n")
            #expect(try await source.cli(["CLUSTER", "SETSLOT", "\(slot)", "MIGRATING", targetID]) == "OK\n")
            // Mid-migration: the key has moved, its slot not yet; the source answers ASK.
            #expect(try await source.cli(["MIGRATE", "127.0.0.1", "\(to)", "", "0", "5000", "KEYS", redisKey]) == "OK\n")
            #expect(try await source.cli(["GET", redisKey]).hasPrefix("ASK"))
            #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
            #expect(await tier.contains(chunk.key))
            #expect(tier.clusterOwner(of: chunk.key) == "127.0.0.1:\(from)")  // ASK does not change the map.
            for node in cluster.nodes where node.isRunning {
                _ = try await node.cli(["CLUSTER", "SETSLOT", "\(slot)", "NODE", targetID])
            }
            // After: the source answers MOVED; the client follows it and learns the new owner.
            #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
            #expect(tier.clusterOwner(of: chunk.key) == "127.0.0.1:\(to)")
            #expect(try await tier.put(other))
            #expect(try await tier.get(other.key)?.contentEquals(other) == true)
            await tier.close()
        }
    }

    @Test("redis-cluster:// through makeRemoteTier; the lmcache layout is refused there")
    func factory() throws {
        var configuration = LMCacheConfiguration()
        let url = try RemoteURL(parsing: "redis-cluster://127.0.0.1:7000,127.0.0.1:7001")
        #expect(
            try makeRemoteTier(url: url, configuration: configuration, logger: Logger(label: "test")).name == "redis"
        )
        configuration.redisLayout = .lmcache
        #expect(throws: StorageError.self) {
            try makeRemoteTier(url: url, configuration: configuration, logger: Logger(label: "test"))
        }
    }
}
