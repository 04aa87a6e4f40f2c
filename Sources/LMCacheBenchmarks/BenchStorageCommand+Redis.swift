import ArgumentParser
import LMCacheCommandSupport
import LMCacheCore
import LMCacheRemote
import LMCacheWire
import Logging
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `lmcache bench storage --tier redis`: the Redis tier against raw GET/SET of the same bytes.
///
/// The same chunks go through (1) our Redis tier (frames with tokens and checksum, in the
/// configured `redis_layout`), one request at a time, (2) the tier's batched get of all chunks,
/// and (3) raw SET/GET of the chunks' KV bytes through one plain connection, in the manner of
/// `redis-benchmark`: the baseline, so the figures show what the tier adds. Reads copy each value
/// out to a destination buffer, as an engine loading KV does. The server is `remote_url` when the
/// configuration names a `redis://` or `redis-cluster://` one; else, with `--redis-cluster`, a
/// Redis Cluster of three masters started on loopback, and otherwise a redis-server started on a
/// free loopback port. On a cluster the baseline sends each key straight to the master that owns
/// its slot, and the report gives each master's raw figures (`baseline_nodes`).
extension BenchStorageCommand {
    func runRedis() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.bench")
        let config = try cache.load(logger: logger).configuration
        let parts = layout.split(separator: "x").compactMap { Int($0) }
        guard parts.count == 3, parts.allSatisfy({ $0 > 0 }), let kvDType = KVDType(rawValue: dtype) else {
            throw ValidationError("--layout must be LAYERSxKV_HEADSxHEAD_DIM and --dtype float16, bfloat16 or float32")
        }
        let kvLayout = KVLayout(layers: parts[0], kvHeads: parts[1], headDim: parts[2], dtype: kvDType)
        let chunkBytes = kvLayout.byteCount(tokens: chunkTokens)
        let chunkCount = max(1, Int((sizeGib * Double(1 << 30) / Double(chunkBytes)).rounded(.up)))
        let totalBytes = chunkCount * chunkBytes

        let tokens = (0..<(chunkCount * chunkTokens)).map { Int32(truncatingIfNeeded: $0 &* 2_654_435_761 % 262_144) }
        let keyer = ChunkKeyer(model: ModelIdentity(name: "bench", fingerprint: "0"), layout: kvLayout,
            chunkSize: chunkTokens)
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        let chunks: [KVChunk] = keyer.chunks(for: tokens).map { keyed in
            let storage = HeapChunkStorage(count: chunkBytes) { bytes in
                for i in stride(from: 0, to: chunkBytes - 7, by: 8) {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    bytes.storeBytes(of: seed, toByteOffset: i, as: UInt64.self)
                }
            }
            return KVChunk(key: keyed.key, tokens: Array(tokens[keyed.range]), layout: kvLayout, storage: storage)
        }
        let values: [ByteBuffer] = chunks.map { chunk in chunk.withUnsafeBytes { ByteBuffer(bytes: $0) } }
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: totalBytes, alignment: 4096)
        defer { destination.deallocate() }
        memset(destination.baseAddress!, 0, totalBytes)

        let configured = config.remoteURL.flatMap { ["redis", "redis-cluster"].contains($0.scheme) ? $0 : nil }
        let clusterMode = configured.map { $0.scheme == "redis-cluster" } ?? redisCluster
        let redis = configured == nil && !clusterMode ? try RedisProcess.start(logger: logger) : nil
        defer { redis?.stop() }
        let ownCluster = configured == nil && clusterMode ? try await RedisClusterProcesses.start(logger: logger) : nil
        defer { ownCluster?.stop() }
        let endpoints =
            configured?.endpoints ?? ownCluster?.endpoints
            ?? redis.map { [RemoteURL.Endpoint(host: "127.0.0.1", port: $0.port)] } ?? []
        guard let endpoint = endpoints.first
        else { throw CommandFailure("no redis-server to measure: set remote_url or install redis-server") }
        if clusterMode && config.redisLayout != .framed {
            throw CommandFailure("a Redis Cluster needs redis_layout framed")
        }

        var options = RedisTier.Options(layout: config.redisLayout)
        options.connections = 1
        options.requestTimeout = .seconds(60)
        options.maximumValueBytes = chunkBytes + (1 << 20)
        options.user = configured?.user
        options.password = configured?.password
        options.database = configured?.database
        let tier =
            clusterMode
            ? RedisTier(cluster: endpoints.map { ($0.host, $0.port) }, options: options, logger: logger)
            : RedisTier(host: endpoint.host, port: endpoint.port, options: options, logger: logger)
        var clientOptions = RedisClient.Options()
        clientOptions.connections = 1
        clientOptions.requestTimeout = .seconds(60)
        clientOptions.user = options.user
        clientOptions.password = options.password
        clientOptions.database = clusterMode ? nil : options.database
        // The baseline: raw SET/GET over one plain connection per server, each key sent to the
        // master that owns it on a cluster.
        let rawKeys = values.indices.map { "raw-\($0)" }
        let raw: RedisClusterBaseline
        if clusterMode {
            raw = try await RedisClusterBaseline.make(seeds: endpoints, keys: rawKeys, options: clientOptions, logger: logger)
        } else {
            let client = RedisClient(host: endpoint.host, port: endpoint.port, options: clientOptions, logger: logger)
            raw = RedisClusterBaseline(clients: ["\(endpoint)": client], owners: rawKeys.map { _ in "\(endpoint)" })
        }
        for (address, client) in raw.clients {
            guard case .simpleString("PONG")? = try? await client.send(RESPCommand("PING")) else {
                throw CommandFailure("no Redis server answers at \(address)")
            }
        }
        var nodeSeconds: [String: (put: Double, get: Double, bytes: Int)] = [:]

        func copyOut(_ index: Int, _ bytes: UnsafeRawBufferPointer) {
            precondition(bytes.count == chunkBytes, "a value of \(bytes.count) bytes came back")
            memcpy(destination.baseAddress! + index * chunkBytes, bytes.baseAddress!, chunkBytes)
        }
        func verify(_ what: String) throws {
            for (index, chunk) in chunks.enumerated() {
                let same = chunk.withUnsafeBytes { memcmp($0.baseAddress!, destination.baseAddress! + index * chunkBytes, chunkBytes) == 0 }
                guard same else { throw CommandFailure("\(what): bytes read back differ from bytes stored") }
            }
            memset(destination.baseAddress!, 0, totalBytes)
        }

        var tierPut: [Double] = [], tierGet: [Double] = [], tierBatchGet: [Double] = []
        var rawPut: [Double] = [], rawGet: [Double] = [], rawPipelined: [Double] = []
        for _ in 0..<iterations {
            tierPut.append(try await Self.seconds {
                for chunk in chunks { guard try await tier.put(chunk) else { throw CommandFailure("redis tier: put declined") } }
            })
            tierGet.append(try await Self.seconds {
                for (index, chunk) in chunks.enumerated() {
                    guard let hit = try await tier.get(chunk.key) else { throw CommandFailure("redis tier: miss") }
                    hit.withUnsafeBytes { copyOut(index, $0) }
                }
            })
            try verify("redis tier")
            tierBatchGet.append(try await Self.seconds {
                // Each chunk copied out as it arrives, as the storage manager promotes it.
                let base = UInt(bitPattern: destination.baseAddress)
                let received = Mutex(0)
                await tier.get(chunks.map(\.key)) { index, hit in
                    hit.withUnsafeBytes { bytes in
                        precondition(bytes.count == chunkBytes, "a value of \(bytes.count) bytes came back")
                        memcpy(UnsafeMutableRawPointer(bitPattern: base)! + index * chunkBytes, bytes.baseAddress!, chunkBytes)
                    }
                    received.withLock { $0 += 1 }
                }
                guard received.withLock({ $0 }) == chunks.count else { throw CommandFailure("redis tier batch: miss") }
            })
            try verify("redis tier batch")
            for chunk in chunks { await tier.remove(chunk.key) }

            rawPut.append(try await Self.seconds {
                for (index, value) in values.enumerated() {
                    let owner = raw.owners[index]
                    let start = ContinuousClock.now
                    let reply = try await raw.clients[owner]!.send(RESPCommand([ByteBuffer(string: "SET"), ByteBuffer(string: rawKeys[index]), value]))
                    guard reply == .simpleString("OK") else { throw CommandFailure("raw SET: \(reply)") }
                    nodeSeconds[owner, default: (0, 0, 0)].put += Self.seconds(ContinuousClock.now - start)
                    nodeSeconds[owner, default: (0, 0, 0)].bytes += chunkBytes
                }
            })
            rawGet.append(try await Self.seconds {
                for index in values.indices {
                    let owner = raw.owners[index]
                    let start = ContinuousClock.now
                    guard case .bulkString(let value?) = try await raw.clients[owner]!.send(RESPCommand("GET", rawKeys[index])) else {
                        throw CommandFailure("raw GET: miss")
                    }
                    value.withUnsafeReadableBytes { copyOut(index, $0) }
                    nodeSeconds[owner, default: (0, 0, 0)].get += Self.seconds(ContinuousClock.now - start)
                }
            })
            try verify("raw GET")
            rawPipelined.append(try await Self.seconds {
                // Every GET of a server in one pipelined batch on its connection.
                for (address, client) in raw.clients {
                    let indices = values.indices.filter { raw.owners[$0] == address }
                    let replies = try await client.send(indices.map { RESPCommand("GET", rawKeys[$0]) })
                    for (index, reply) in zip(indices, replies) {
                        guard case .bulkString(let value?) = reply else { throw CommandFailure("raw pipelined GET: miss") }
                        value.withUnsafeReadableBytes { copyOut(index, $0) }
                    }
                }
            })
            try verify("raw pipelined GET")
            for index in values.indices { _ = try await raw.clients[raw.owners[index]]!.send(RESPCommand("DEL", rawKeys[index])) }
        }
        await raw.close()
        await tier.close()

        let gb = Double(totalBytes) / 1e9
        func gbps(_ runs: [Double]) -> Double { gb / Self.median(runs) }
        let report: [(String, String)] = [
            ("tier", "\"redis\""),
            (
                "server",
                configured.map { "\"\($0)\"" }
                    ?? (clusterMode ? "\"Redis Cluster of 3 masters on loopback\"" : "\"redis-server on loopback\"")
            ),
            ("cluster", clusterMode ? "true" : "false"),
            ("layout", "\"\(config.redisLayout)\""),
            ("bytes", "\(totalBytes)"),
            ("chunk_bytes", "\(chunkBytes)"),
            ("chunks", "\(chunkCount)"),
            ("iterations", "\(iterations)"),
            ("put_gbps", Self.format(gbps(tierPut))),
            ("get_gbps", Self.format(gbps(tierGet))),
            ("batch_get_gbps", Self.format(gbps(tierBatchGet))),
            (
                "baseline",
                "\"raw SET/GET of the same bytes, one connection per server, one request at a time\""
            ),
            ("baseline_put_gbps", Self.format(gbps(rawPut))),
            ("baseline_get_gbps", Self.format(gbps(rawGet))),
            ("put_vs_baseline", Self.format(gbps(tierPut) / gbps(rawPut))),
            ("get_vs_baseline", Self.format(gbps(tierGet) / gbps(rawGet))),
            ("baseline_pipelined_get_gbps", Self.format(gbps(rawPipelined))),
            ("batch_get_vs_pipelined_baseline", Self.format(gbps(tierBatchGet) / gbps(rawPipelined))),
            (
                "baseline_nodes",
                "[" + nodeSeconds.keys.sorted().map { node in
                    let figures = nodeSeconds[node]!
                    let gigabytes = Double(figures.bytes) / 1e9
                    return "{\"node\": \"\(node)\", \"values\": \(raw.owners.filter { $0 == node }.count), "
                        + "\"put_gbps\": \(Self.format(gigabytes / figures.put)), \"get_gbps\": \(Self.format(gigabytes / figures.get))}"
                }.joined(separator: ", ") + "]"
            ),
        ]
        if json {
            print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } else {
            for (key, value) in report { print("\(key.padded(to: 20)) \(value)") }
        }
    }
}
