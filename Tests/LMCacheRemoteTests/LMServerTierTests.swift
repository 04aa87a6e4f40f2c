import LMCacheCore
import LMCacheRemote
import LMCacheServer
import LMCacheStorage
import LMCacheTestSupport
import LMCacheWire
import Logging
import NIOCore
import ServiceLifecycle
import Testing

/// The remote tier against a real server on loopback.
struct LMServerTierTests {
    static func chunk(
        seed: UInt64,
        tokens count: Int = 16,
        layout: KVLayout = KVLayout(layers: 3, kvHeads: 2, headDim: 8, dtype: .float16)
    )
        -> KVChunk
    {
        let tokens = (0..<count).map { Int32(truncatingIfNeeded: seed &* 7919 &+ UInt64($0)) }
        let key = CacheKey(
            hash: ChunkHash(low: seed &* 0x9E37_79B9, high: ~seed),
            tokenCount: count,
            modelName: "test/model",
            dtype: layout.dtype
        )
        var state = seed | 1
        return KVChunk(
            key: key,
            tokens: tokens,
            layout: layout,
            storage: HeapChunkStorage(count: layout.byteCount(tokens: count)) { bytes in
                for i in 0..<bytes.count {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    bytes[i] = UInt8(truncatingIfNeeded: state >> 56)
                }
            }
        )
    }

    static func fastOptions() -> LMServerTier.Options {
        var options = LMServerTier.Options()
        options.connections = 2
        options.connectTimeout = .seconds(2)
        options.requestTimeout = .seconds(30)
        options.minimumBackoff = .milliseconds(20)
        options.maximumBackoff = .milliseconds(100)
        return options
    }

    @Test("chunks round-trip byte for byte, with their tokens and layout")
    func roundTrip() async throws {
        try await withServer { (_, port) async throws in
            let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
            let layouts = [
                KVLayout(layers: 1, kvHeads: 1, headDim: 1, dtype: .float16),
                KVLayout(layers: 3, kvHeads: 2, headDim: 8, dtype: .bfloat16),
                KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float32),
            ]
            var chunks: [KVChunk] = []
            for (i, layout) in layouts.enumerated() {
                for tokens in [1, 7, 256] {
                    chunks.append(Self.chunk(seed: UInt64(i * 1000 + tokens), tokens: tokens, layout: layout))
                }
            }
            for chunk in chunks { #expect(try await tier.put(chunk)) }
            for chunk in chunks {
                #expect(await tier.contains(chunk.key))
                let back = try #require(try await tier.get(chunk.key))
                #expect(back.contentEquals(chunk))
                #expect(back.key == chunk.key)
            }
            let batch = await tier.get(chunks.map(\.key))
            #expect(zip(batch, chunks).allSatisfy { $0.0?.contentEquals($0.1) == true })
            let absent = Self.chunk(seed: 424242)
            #expect(try await tier.get(absent.key) == nil)
            #expect(await tier.contains(absent.key) == false)
            #expect(await tier.contains([chunks[0].key, absent.key]) == [true, false])
            #expect(await tier.isHealthy())
            await tier.close()
        }
    }

    @Test("contract: round trips, batches and concurrent use (lm:// has no delete)")
    func contract() async throws {
        try await withServer { (_, port) async throws in
            let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
            let chunks = (0..<48).map { Self.chunk(seed: UInt64($0)) }
            try await TierContract.roundTrip(
                tier, chunks: Array(chunks.prefix(4)), missing: Self.chunk(seed: 999), removable: false)
            try await TierContract.concurrent(tier, chunks: chunks)
            await tier.close()
        }
    }

    @Test("a foreign or corrupted value under a chunk's key is a miss")
    func foreignValues() async throws {
        try await withServer { (_, port) async throws in
            let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
            let chunk = Self.chunk(seed: 5)
            // Bytes another client stored.
            #expect(await tier.putRaw(LMServerTier.wireKey(chunk.key), ByteBuffer(repeating: 0xAB, count: 5000)))
            #expect(try await tier.get(chunk.key) == nil)
            // A valid frame with one KV byte flipped.
            var frame = KVChunkFrame.encode(chunk)
            let last = frame.writerIndex - 1
            frame.setInteger(frame.getInteger(at: last, as: UInt8.self)! ^ 1, at: last)
            #expect(await tier.putRaw(LMServerTier.wireKey(chunk.key), frame))
            #expect(try await tier.get(chunk.key) == nil)
            // A valid frame for another key.
            let other = Self.chunk(seed: 6)
            #expect(await tier.putRaw(LMServerTier.wireKey(chunk.key), KVChunkFrame.encode(other)))
            #expect(try await tier.get(chunk.key) == nil)
            // Truncated frame.
            let whole = KVChunkFrame.encode(chunk)
            #expect(
                await tier.putRaw(
                    LMServerTier.wireKey(chunk.key),
                    whole.getSlice(at: 0, length: whole.readableBytes - 1)!
                )
            )
            #expect(try await tier.get(chunk.key) == nil)
            // The real thing.
            #expect(try await tier.put(chunk))
            #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
            await tier.close()
        }
    }

    @Test("with no server, requests are misses and declined puts, never errors")
    func serverDown() async throws {
        // A port that nothing listens on: bind, learn it, stop.
        let port = try await withServer { _, port in port }
        let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
        let chunk = Self.chunk(seed: 1)
        let start = ContinuousClock.now
        for _ in 0..<20 {
            #expect(try await tier.get(chunk.key) == nil)
            #expect(await tier.contains(chunk.key) == false)
            #expect(try await tier.put(chunk) == false)
        }
        // Misses at once, never a wait per request; the bound leaves room for a CPU-starved CI run.
        #expect(ContinuousClock.now - start < .seconds(10))
    }

    @Test("the server stopping mid-stream turns requests into misses; a restart brings hits back")
    func killAndRestart() async throws {
        let chunks = (0..<8).map {
            Self.chunk(
                seed: UInt64($0),
                tokens: 256,
                layout: KVLayout(layers: 8, kvHeads: 2, headDim: 64, dtype: .float16)
            )
        }
        let port = try await withServer { (_, port) async throws in
            let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
            for chunk in chunks { #expect(try await tier.put(chunk)) }
            #expect(try await tier.get(chunks[0].key)?.contentEquals(chunks[0]) == true)
            await tier.close()
            return port
        }
        // One tier outlives two server lives on the same port.
        let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
        try await withServer(LMServerConfiguration(port: port, capacityBytes: 64 << 20)) { (_, _) async throws in
            for chunk in chunks { #expect(try await tier.put(chunk)) }
            #expect(try await tier.get(chunks[1].key)?.contentEquals(chunks[1]) == true)
        }
        // Server gone (the task stopped, its connections closed while the tier held them).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for chunk in chunks {
                        _ = try await tier.get(chunk.key)
                        #expect(try await tier.get(chunk.key) == nil)
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(await tier.contains(chunks[0].key) == false)
        // Back on the same port: the tier reconnects by itself (the new server starts empty).
        try await withServer(LMServerConfiguration(port: port, capacityBytes: 64 << 20)) { (_, _) async throws in
            #expect(await eventually { (try? await tier.put(chunks[2])) == true })
            #expect(await eventually { (try? await tier.get(chunks[2].key))??.contentEquals(chunks[2]) == true })
        }
        await tier.close()
    }

    @Test("once one connection reaches a returning server, the others stop backing off")
    func backOffEndsTogether() async throws {
        var options = Self.fastOptions()
        options.minimumBackoff = .seconds(8)
        options.maximumBackoff = .seconds(8)
        let layout = KVLayout(layers: 2, kvHeads: 1, headDim: 64, dtype: .float16)
        let port = try await withServer { (_, port) async throws in port }
        let tier = LMServerTier(host: "127.0.0.1", port: port, options: options)
        // Two chunks on different connections.
        let first = Self.chunk(seed: 1, tokens: 16, layout: layout)
        let second = try #require(
            (2..<64).lazy.map { Self.chunk(seed: UInt64($0), tokens: 16, layout: layout) }
                .first { tier.slot(of: $0.key) != tier.slot(of: first.key) })
        // No server: the first connection fails now, the second 6 s later; each then backs off 8 s.
        let start = ContinuousClock.now
        #expect(try await tier.get(first.key) == nil)
        try await Task.sleep(until: start + .seconds(6))
        #expect(try await tier.get(second.key) == nil)
        try await withServer(LMServerConfiguration(port: port, capacityBytes: 64 << 20)) { (_, _) async throws in
            // The first connection's back-off ends 8 s after its failure: it reaches the server.
            #expect(await eventually(timeout: .seconds(30)) { (try? await tier.put(first)) == true })
            let reached = ContinuousClock.now
            // The second's would last until 14 s; it is cleared, so this put is not declined.
            #expect(try await tier.put(second))
            if ContinuousClock.now - start < .seconds(14) {
                #expect(try await tier.get(second.key)?.contentEquals(second) == true)
            } else {
                Issue.record("the machine held the test past the second back-off (\(reached - start)); nothing was checked")
            }
        }
        await tier.close()
    }

    @Test("GETs in flight when the server stops are misses, never wrong data or errors")
    func stopDuringTransfer() async throws {
        // 4 MiB: large enough to be mid-transfer when the server stops, small enough for debug builds.
        let big = Self.chunk(
            seed: 77,
            tokens: 256,
            layout: KVLayout(layers: 4, kvHeads: 8, headDim: 128, dtype: .float16)
        )
        let server = LMServer(
            configuration: LMServerConfiguration(host: "127.0.0.1", port: 0, capacityBytes: 512 << 20),
            logger: Logger(label: "test.server")
        )
        let services = ServiceGroup(services: [server], logger: Logger(label: "test.services"))
        let serverTask = Task { try await services.run() }
        let port = try await server.listeningPort()
        let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.fastOptions())
        #expect(try await tier.put(big))
        #expect(try await tier.get(big.key)?.contentEquals(big) == true)
        // Readers keep going while the server stops underneath them.
        let readers = (0..<2).map { _ in
            Task {
                var misses = 0
                for _ in 0..<20 {
                    if let chunk = try await tier.get(big.key) {
                        #expect(chunk.contentEquals(big))
                    } else {
                        misses += 1
                    }
                }
                return misses
            }
        }
        try await Task.sleep(for: .milliseconds(50))
        await services.triggerGracefulShutdown()
        _ = await serverTask.result
        var misses = 0
        for reader in readers { misses += try await reader.value }
        #expect(misses > 0)
        await tier.close()
    }

    @Test("makeRemoteTier builds the lm:// and redis:// tiers and refuses rediss:// without a TLS provider")
    func factory() throws {
        let tier = try makeRemoteTier(url: RemoteURL(parsing: "lm://localhost:65432"), logger: Logger(label: "test"))
        #expect(tier.name == "lm")
        let redis = try makeRemoteTier(url: RemoteURL(parsing: "redis://u:p@localhost:6379/2"), logger: Logger(label: "test"))
        #expect(redis.name == "redis")
        #expect(throws: StorageError.self) {
            try makeRemoteTier(url: RemoteURL(parsing: "rediss://localhost:6379"), logger: Logger(label: "test"))
        }
    }
}
