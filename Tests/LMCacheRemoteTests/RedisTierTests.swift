import Foundation
import LMCacheCore
import LMCacheRemote
import LMCacheStorage
import LMCacheTestSupport
import LMCacheWire
import Logging
import Testing

/// The Redis tier against real `redis-server` processes on loopback, one per test.
@Suite  // Needs redis-server (Debian package redis-server; scripts/install-deps installs it).
struct RedisTierTests {
    static func chunk(_ seed: Int, tokens: Int = 16, layout: KVLayout = KVLayout(layers: 3, kvHeads: 2, headDim: 8, dtype: .float16))
        -> KVChunk
    {
        LMServerTierTests.chunk(seed: UInt64(seed), tokens: tokens, layout: layout)
    }

    static func options(_ layout: RedisLayout = .framed) -> RedisTier.Options {
        var options = RedisTier.Options(layout: layout)
        options.connections = 2
        // Generous: the whole server test target runs in parallel with six-node clusters on two cores.
        options.connectTimeout = .seconds(3)
        options.requestTimeout = .seconds(5)
        options.minimumBackoff = .milliseconds(20)
        options.maximumBackoff = .milliseconds(100)
        return options
    }

    static func tier(_ server: RedisServerProcess, _ options: RedisTier.Options = options()) -> RedisTier {
        RedisTier(host: "127.0.0.1", port: server.port, options: options, logger: Logger(label: "test.redis"))
    }

    // MARK: The tier contract (TierContract; Redis evicts by its own policy, so the budget case is
    // Redis's maxmemory, not ours, and is not checked here)

    @Test("contract: put, get, contains, remove and batches round-trip exact bytes", arguments: RedisLayout.allCases)
    func contractRoundTrip(layout: RedisLayout) async throws {
        try await withRedisServer { server in
            let tier = Self.tier(server, Self.options(layout))
            try await TierContract.roundTrip(tier, chunks: (0..<4).map { Self.chunk($0) }, missing: Self.chunk(99))
            await tier.close()
        }
    }

    @Test("contract: concurrent puts and gets from many tasks return exact bytes", arguments: RedisLayout.allCases)
    func contractConcurrent(layout: RedisLayout) async throws {
        try await withRedisServer { server in
            let tier = Self.tier(server, Self.options(layout))
            try await TierContract.concurrent(tier, chunks: (0..<48).map { Self.chunk($0) })
            await tier.close()
        }
    }

    @Test("batched get and contains; layouts of every shape; multi-megabyte values")
    func batchesAndSizes() async throws {
        try await withRedisServer(["--proto-max-bulk-len", "1gb"]) { server in
            let tier = Self.tier(server)
            var chunks: [KVChunk] = []
            for (i, layout) in [
                KVLayout(layers: 1, kvHeads: 1, headDim: 1, dtype: .float16),
                KVLayout(layers: 3, kvHeads: 2, headDim: 8, dtype: .bfloat16),
                KVLayout(layers: 28, kvHeads: 8, headDim: 128, dtype: .float16),  // 256 tokens: 28 MiB
            ].enumerated() {
                for tokens in [1, 7, 256] { chunks.append(Self.chunk(i * 1000 + tokens, tokens: tokens, layout: layout)) }
            }
            for chunk in chunks {
                let stored = try await tier.put(chunk)
                #expect(stored)
            }
            let missing = Self.chunk(4242).key
            let keys = chunks.map(\.key) + [missing]
            #expect(await tier.contains(keys) == chunks.map { _ in true } + [false])
            let batch = await tier.get(keys)
            #expect(batch.last! == nil)
            #expect(zip(batch, chunks).allSatisfy { $0.0?.contentEquals($0.1) == true })
            await tier.close()
        }
    }

    @Test("remote_serde: a tier stores frames of its serde, and tiers of every serde read them", arguments: RedisLayout.allCases)
    func serdes(layout: RedisLayout) async throws {
        try await withRedisServer { server in
            let chunk = Self.chunk(77, tokens: 64, layout: KVLayout(layers: 2, kvHeads: 1, headDim: 64, dtype: .float16))
            var sizes: [KVSerde: Int] = [:]
            for written in KVSerde.allCases {
                var configuration = LMCacheConfiguration()
                configuration.remoteSerde = written
                configuration.redisLayout = layout
                let url = try RemoteURL(parsing: "redis://127.0.0.1:\(server.port)")
                let writer = try #require(
                    try makeRemoteTier(url: url, configuration: configuration, logger: Logger(label: "test")) as? RedisTier)
                #expect(try await writer.put(chunk))
                let valueKey = layout == .framed ? "{\(chunk.key)}" : chunk.key.description + "kv_bytes"
                sizes[written] = Int(try await server.cli(["STRLEN", valueKey]).trimmingCharacters(in: .whitespacesAndNewlines))
                for reading in KVSerde.allCases {
                    var options = Self.options(layout)
                    options.serde = reading
                    let reader = Self.tier(server, options)
                    let back = try #require(try await reader.get(chunk.key), "\(reading) reading \(written)")
                    #expect(back.tokens == chunk.tokens && back.byteCount == chunk.byteCount)
                    if written.isLossless { #expect(back.contentEquals(chunk), "\(reading) reading \(written)") }
                    await reader.close()
                }
                #expect(await writer.remove(chunk.key))
                await writer.close()
            }
            let naive = try #require(sizes[.naive])
            #expect(naive == KVChunkFrame.headerLength(of: chunk) + chunk.byteCount)
            #expect(try #require(sizes[.q8]) < naive * 6 / 10)
            #expect(try #require(sizes[.cachegen]) < naive * 6 / 10)
        }
    }

    @Test("LMCache layout: exactly the two keys and the 28-byte metadata, seen with redis-cli")
    func lmcacheLayout() async throws {
        try await withRedisServer { server in
            let tier = Self.tier(server, Self.options(.lmcache))
            let chunk = Self.chunk(7, tokens: 16, layout: KVLayout(layers: 3, kvHeads: 2, headDim: 8, dtype: .bfloat16))
            #expect(try await tier.put(chunk))
            let text = chunk.key.description
            let keys = try await server.cli(["--raw", "KEYS", "*"]).split(separator: "\n").map(String.init).sorted()
            #expect(keys == [text + "kv_bytes", text + "metadata"])
            let frameLength = KVChunkFrame.headerLength(of: chunk) + chunk.byteCount
            #expect(try await server.cli(["STRLEN", text + "metadata"]) == "28\n")
            #expect(try await server.cli(["STRLEN", text + "kv_bytes"]) == "\(frameLength)\n")
            // The metadata's fields, read back as little-endian int32s.
            let hex = try await server.cli(["--no-raw", "GET", text + "metadata"])
            var expected = ""
            // length, format, dtype, shape: the frame described as the lm:// tier describes it (binary bytes).
            for value in [Int32(frameLength), KVChunkFrame.wireFormat, KVChunkFrame.wireDType, Int32(frameLength), 0, 0, 0] {
                withUnsafeBytes(of: value.littleEndian) { bytes in
                    for byte in bytes {
                        expected += (32...126).contains(byte) && byte != 0x22 && byte != 0x5C
                            ? String(UnicodeScalar(byte)) : String(format: "\\x%02x", byte)
                    }
                }
            }
            #expect(hex == "\"\(expected)\"\n")
            // A metadata key that does not match its value makes a miss, not wrong bytes.
            _ = try await server.cli(["SET", text + "metadata", "short"])
            #expect(try await tier.get(chunk.key) == nil)
            await tier.close()
        }
    }

    @Test("the default layout stores one hash-tagged key per chunk")
    func framedLayout() async throws {
        try await withRedisServer { server in
            let tier = Self.tier(server)
            let chunk = Self.chunk(3)
            #expect(try await tier.put(chunk))
            let keys = try await server.cli(["--raw", "KEYS", "*"])
            #expect(keys == "{\(chunk.key.description)}\n")
            // A foreign or corrupted value is a miss.
            _ = try await server.cli(["SET", "{\(chunk.key.description)}", "not a frame"])
            #expect(try await tier.get(chunk.key) == nil)
            await tier.close()
        }
    }

    @Test("remote_ttl: values expire")
    func ttl() async throws {
        try await withRedisServer { server in
            var options = Self.options()
            options.ttl = .seconds(100)
            let tier = Self.tier(server, options)
            let chunk = Self.chunk(5)
            #expect(try await tier.put(chunk))
            let ttl = Int(try await server.cli(["TTL", "{\(chunk.key.description)}"]).trimmingCharacters(in: .whitespacesAndNewlines))
            #expect((90...100).contains(ttl ?? -1))
            options.ttl = .milliseconds(700)
            let short = Self.tier(server, options)
            #expect(try await short.put(Self.chunk(6)))
            let pttl = Int(try await server.cli(["PTTL", "{\(Self.chunk(6).key.description)}"]).trimmingCharacters(in: .whitespacesAndNewlines))
            #expect(pttl == -2 || (1...700).contains(pttl ?? -1))  // -2: already gone on a slow machine.
            try await Task.sleep(for: .milliseconds(1000))
            #expect(await !short.contains(Self.chunk(6).key))
            await tier.close()
            await short.close()
        }
    }

    @Test("AUTH with a password, with an ACL user, and SELECT of a database")
    func authentication() async throws {
        try await withRedisServer(["--requirepass", "s3cret"]) { server in
            _ = try await server.cli(["-a", "s3cret", "--no-auth-warning", "ACL", "SETUSER", "cache", "on", ">pw", "~*", "+@all"])
            var options = Self.options()
            options.password = "s3cret"
            options.database = 3
            let tier = Self.tier(server, options)
            let chunk = Self.chunk(11)
            #expect(try await tier.put(chunk))
            #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
            #expect(try await server.cli(["-a", "s3cret", "--no-auth-warning", "-n", "3", "DBSIZE"]) == "1\n")
            options.user = "cache"
            options.password = "pw"
            let user = Self.tier(server, options)
            #expect(try await user.get(chunk.key)?.contentEquals(chunk) == true)
            await tier.close()
            await user.close()
        }
    }

    @Test("a wrong password or a missing one: a clear log line and misses at once, no hang")
    func failuresAreMisses() async throws {
        try await withRedisServer(["--requirepass", "s3cret"]) { server in
            for password in ["wrong", nil] {
                var options = Self.options()
                options.password = password
                // A hang would run into this; a refusal must come back long before it.
                options.requestTimeout = .seconds(30)
                let tier = Self.tier(server, options)
                let start = ContinuousClock.now
                let stored = try await tier.put(Self.chunk(1))
                let hit = try await tier.get(Self.chunk(1).key)
                #expect(!stored && hit == nil)
                #expect(await !tier.contains(Self.chunk(1).key))
                #expect(await tier.get([Self.chunk(1).key, Self.chunk(2).key]).allSatisfy { $0 == nil })
                #expect(ContinuousClock.now - start < .seconds(10))
                await tier.close()
            }
        }
    }

    @Test("server killed: misses; server back on the same port: the tier recovers by itself")
    func recovery() async throws {
        let port = RedisServerProcess.freePort()
        let first = RedisServerProcess(port: port, extraArguments: [])
        try await first.start()
        defer { first.stop() }
        let tier = RedisTier(host: "127.0.0.1", port: port, options: Self.options(), logger: Logger(label: "test.redis"))
        let chunk = Self.chunk(21)
        #expect(try await tier.put(chunk))
        #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
        first.stop()
        let start = ContinuousClock.now
        for _ in 0..<20 {
            #expect(try await tier.get(chunk.key) == nil)
            #expect(try await tier.put(chunk) == false)
        }
        // Misses at once, never a wait per request (which would be 20 × the 5-second request timeout);
        // the bound leaves room for a CPU-starved CI run.
        #expect(ContinuousClock.now - start < .seconds(10))
        let second = RedisServerProcess(port: port, extraArguments: [])
        try await second.start()
        defer { second.stop() }
        #expect(await eventually { (try? await tier.put(chunk)) == true })
        #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
        await tier.close()
    }

    @Test("once one connection reaches a returning server, the others stop backing off")
    func backOffEndsTogether() async throws {
        var options = RedisClient.Options()
        options.connections = 2
        options.minimumBackoff = .seconds(8)
        options.maximumBackoff = .seconds(8)
        let port = RedisServerProcess.freePort()
        let client = RedisClient(host: "127.0.0.1", port: port, options: options, logger: Logger(label: "test.redis"))
        let first = "key-a"
        let second = try #require((0..<64).lazy.map { "key-\($0)" }.first { client.slotIndex(for: $0) != client.slotIndex(for: first) })
        func ping(_ key: String) async -> Bool {
            (try? await client.send(RESPCommand("EXISTS", key), routingKey: key)) != nil
        }
        // No server: the first connection fails now, the second 6 s later; each then backs off 8 s.
        let start = ContinuousClock.now
        #expect(await !ping(first))
        try await Task.sleep(until: start + .seconds(6))
        #expect(await !ping(second))
        let server = RedisServerProcess(port: port, extraArguments: [])
        try await server.start()
        defer { server.stop() }
        // The first connection's back-off ends 8 s after its failure: it reaches the server.
        #expect(await eventually(timeout: .seconds(30)) { await ping(first) })
        let reached = ContinuousClock.now
        // The second's would last until 14 s; it is cleared, so this request is answered.
        if ContinuousClock.now - start < .seconds(14) {
            #expect(await ping(second))
        } else {
            Issue.record("the machine held the test past the second back-off (\(reached - start)); nothing was checked")
        }
        await client.close()
    }

    @Test("a test server whose port is taken reports redis-server's exit and log; started() moves to another port")
    func portTaken() async throws {
        try await withRedisServer { holder in
            let clash = RedisServerProcess(port: holder.port, extraArguments: [])
            let failure = try #require(try await clash.launch())
            #expect(failure.contains("exited with status"), "\(failure)")
            #expect(!clash.isRunning)
            var ports = [holder.port, RedisServerProcess.freePort()]  // The first one made clashes.
            let moved = try await RedisServerProcess.started {
                RedisServerProcess(port: ports.removeFirst(), extraArguments: [])
            }
            defer { moved.stop() }
            #expect(moved.port != holder.port && ports.isEmpty)
            #expect(try await moved.cli(["PING"]) == "PONG\n")
        }
    }

    @Test("remote_url redis://user:password@host:port/db through makeRemoteTier and the configuration")
    func factory() async throws {
        try await withRedisServer(["--requirepass", "pw"]) { server in
            var configuration = LMCacheConfiguration()
            configuration.redisLayout = .lmcache
            configuration.remoteTTL = 60
            let url = try RemoteURL(parsing: "redis://:pw@127.0.0.1:\(server.port)/2")
            let tier = try makeRemoteTier(url: url, configuration: configuration, logger: Logger(label: "test"))
            let chunk = Self.chunk(31)
            #expect(try await tier.put(chunk))
            #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
            let ttl = try await server.cli(["-a", "pw", "--no-auth-warning", "-n", "2", "TTL", chunk.key.description + "metadata"])
            #expect((50...60).contains(Int(ttl.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1))
            await (tier as? RedisTier)?.close()
        }
    }
}
