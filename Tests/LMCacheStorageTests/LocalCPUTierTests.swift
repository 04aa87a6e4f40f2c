import LMCacheCore
import LMCacheStorage
import Testing

@Suite("CPU tier")
struct LocalCPUTierTests {
    /// 16 tokens × 128 bytes = 2048 bytes, one 4 KiB extent per chunk.
    static let extent = 4096

    static func tier(chunks: Int, policy: CachePolicy = .lru) throws -> LocalCPUTier {
        try LocalCPUTier(capacity: chunks * extent, policy: policy, prefault: false)
    }

    @Test("put then get returns the same bytes and tokens")
    func roundTrip() throws {
        let tier = try Self.tier(chunks: 4)
        let chunk = Fixtures.chunk(1)
        #expect(tier.put(chunk))
        #expect(tier.contains(chunk.key))
        let hit = try #require(tier.get(chunk.key))
        #expect(hit.contentEquals(chunk))
        #expect(hit.key == chunk.key)
        #expect(!tier.put(chunk), "a second put of a present key is declined")
        #expect(tier.get(Fixtures.chunk(2).key) == nil)
        let stats = tier.statistics
        #expect(stats.hits == 1 && stats.misses == 1 && stats.stored == 1 && stats.count == 1)
    }

    @Test("LRU evicts the least recently used chunk first")
    func lruOrder() throws {
        let tier = try Self.tier(chunks: 3, policy: .lru)
        let chunks = (0..<4).map { Fixtures.chunk($0) }
        for chunk in chunks.prefix(3) { #expect(tier.put(chunk)) }
        _ = tier.get(chunks[0].key)  // 0 becomes most recent; 1 is now least recent.
        #expect(tier.put(chunks[3]))
        #expect(tier.contains(chunks[0].key))
        #expect(!tier.contains(chunks[1].key))
        #expect(tier.contains(chunks[2].key) && tier.contains(chunks[3].key))
        #expect(tier.statistics.evicted == 1)
    }

    @Test("FIFO evicts the oldest chunk whatever its use")
    func fifoOrder() throws {
        let tier = try Self.tier(chunks: 3, policy: .fifo)
        let chunks = (0..<4).map { Fixtures.chunk($0) }
        for chunk in chunks.prefix(3) { tier.put(chunk) }
        _ = tier.get(chunks[0].key)
        tier.put(chunks[3])
        #expect(!tier.contains(chunks[0].key))
        #expect(tier.contains(chunks[1].key) && tier.contains(chunks[2].key) && tier.contains(chunks[3].key))
    }

    @Test("LFU evicts the least used chunk, the least recent among equals")
    func lfuOrder() throws {
        let tier = try Self.tier(chunks: 3, policy: .lfu)
        let chunks = (0..<5).map { Fixtures.chunk($0) }
        for chunk in chunks.prefix(3) { tier.put(chunk) }
        for _ in 0..<3 { _ = tier.get(chunks[0].key) }
        _ = tier.get(chunks[2].key)
        tier.put(chunks[3])  // 1 is used least.
        #expect(!tier.contains(chunks[1].key))
        tier.put(chunks[4])  // 3 (one use, newest) against 2 (two uses): 3 goes.
        #expect(!tier.contains(chunks[3].key))
        #expect(tier.contains(chunks[0].key) && tier.contains(chunks[2].key) && tier.contains(chunks[4].key))
    }

    @Test("pinned chunks survive eviction pressure; a full tier of pins declines new chunks")
    func pinsSurvive() throws {
        let tier = try Self.tier(chunks: 2)
        let a = Fixtures.chunk(10)
        let b = Fixtures.chunk(11)
        tier.put(a)
        tier.put(b)
        var pinnedA: KVChunk? = tier.get(a.key)
        var pinnedB: KVChunk? = tier.get(b.key)
        for i in 0..<10 { #expect(!tier.put(Fixtures.chunk(100 + i))) }
        #expect(tier.statistics.rejected == 10)
        #expect(pinnedA!.contentEquals(a) && pinnedB!.contentEquals(b))
        pinnedB = nil  // unpin b: it becomes the only victim.
        #expect(tier.put(Fixtures.chunk(200)))
        #expect(tier.contains(a.key) && !tier.contains(b.key))
        #expect(pinnedA!.contentEquals(a))
        pinnedA = nil
        #expect(tier.statistics.pinnedCount == 0)
        _ = pinnedA
        _ = pinnedB
    }

    @Test("a chunk removed while pinned stays readable and is freed at the last release")
    func removeWhilePinned() throws {
        let tier = try Self.tier(chunks: 2)
        let a = Fixtures.chunk(1)
        tier.put(a)
        var reader: KVChunk? = tier.get(a.key)
        #expect(tier.remove(a.key))
        #expect(!tier.contains(a.key) && tier.get(a.key) == nil)
        #expect(tier.statistics.usedBytes == Self.extent, "memory is held until the reader lets go")
        // Fill the tier: the orphan's extent must not be handed out while it is read.
        #expect(tier.put(Fixtures.chunk(2)))
        #expect(tier.put(Fixtures.chunk(3)), "evicts chunk 2, never the orphan's extent")
        #expect(!tier.contains(Fixtures.chunk(2).key) && tier.contains(Fixtures.chunk(3).key))
        #expect(reader!.contentEquals(a))
        reader = nil
        _ = reader
        #expect(tier.statistics.pinnedCount == 0)
        tier.removeAll()
        #expect(tier.statistics.usedBytes == 0)
    }

    @Test("a chunk larger than the whole tier is declined without evicting anything")
    func oversized() throws {
        let tier = try Self.tier(chunks: 2)
        tier.put(Fixtures.chunk(1))
        #expect(!tier.put(Fixtures.chunk(2, tokens: 100)))
        #expect(tier.contains(Fixtures.chunk(1).key))
        #expect(tier.statistics.evicted == 0)
    }

    @Test("a fill that throws stores nothing and leaks nothing")
    func failedFill() throws {
        struct Boom: Error {}
        let tier = try Self.tier(chunks: 2)
        let chunk = Fixtures.chunk(1)
        #expect(throws: Boom.self) {
            try tier.put(key: chunk.key, tokens: chunk.tokens, layout: chunk.layout) { _ throws(Boom) in throw Boom() }
        }
        #expect(!tier.contains(chunk.key))
        #expect(tier.statistics.usedBytes == 0)
        #expect(tier.put(chunk))
    }

    @Test("mixed sizes fragment and coalesce without losing bytes")
    func mixedSizes() throws {
        let tier = try LocalCPUTier(capacity: 64 * Self.extent, policy: .lru, prefault: false)
        var expected: [KVChunk] = []
        for i in 0..<300 {
            let chunk = Fixtures.chunk(i, tokens: [16, 40, 64, 100, 7][i % 5])
            tier.put(chunk)
            expected.append(chunk)
        }
        var found = 0
        for chunk in expected {
            if let hit = tier.get(chunk.key) {
                #expect(hit.contentEquals(chunk))
                found += 1
            }
        }
        #expect(found > 10)
        tier.removeAll()
        #expect(tier.statistics.usedBytes == 0 && tier.statistics.count == 0)
    }

    @Test("concurrent puts and gets from many tasks return exact bytes; accounting returns to zero")
    func concurrency() async throws {
        let tier = try LocalCPUTier(capacity: 48 * Self.extent, policy: .lru, prefault: true)
        let chunks = (0..<96).map { Fixtures.chunk($0) }
        try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    var hits = 0
                    for round in 0..<400 {
                        let chunk = chunks[(worker * 17 + round * 7) % chunks.count]
                        if round % 3 == 0 {
                            tier.put(chunk)
                        } else if let hit = tier.get(chunk.key) {
                            #expect(hit.contentEquals(chunk))
                            hits += 1
                        }
                        if round % 50 == 49 { tier.remove(chunks[(worker + round) % chunks.count].key) }
                    }
                    return hits
                }
            }
            var total = 0
            for try await hits in group { total += hits }
            #expect(total > 0)
        }
        let stats = tier.statistics
        #expect(stats.pinnedCount == 0)
        #expect(stats.usedBytes <= stats.capacity)
        tier.removeAll()
        #expect(tier.statistics.usedBytes == 0 && tier.statistics.count == 0)
    }

    @Test("the StorageTier contract: batched contains, prefix hits, token verification")
    func contract() async throws {
        let tier: any StorageTier = try Self.tier(chunks: 8)
        let tokens = (0..<64).map { Int32($0) }
        let keyer = ChunkKeyer(model: Fixtures.model, layout: Fixtures.layout, chunkSize: 16)
        let chunks = keyer.chunks(for: tokens).map { chunk in
            KVChunk(
                key: chunk.key,
                tokens: Array(tokens[chunk.range]),
                layout: Fixtures.layout,
                storage: HeapChunkStorage(count: Fixtures.layout.byteCount(tokens: 16)) {
                    $0.initializeMemory(as: UInt8.self, repeating: 9)
                }
            )
        }
        for chunk in chunks where chunk.key != chunks[2].key { try await tier.put(chunk) }
        #expect(await tier.contains(chunks.map(\.key)) == [true, true, false, true])
        #expect(await tier.prefixHitCount(chunks.map(\.key)) == 2)
        #expect(try await tier.get(chunks[0].key, verifying: tokens[0..<16]) != nil)
        // A key whose stored tokens differ (a collision) is a miss and is dropped.
        #expect(try await tier.get(chunks[1].key, verifying: tokens[0..<16]) == nil)
        #expect(await !tier.contains(chunks[1].key))
        #expect(await tier.remove(chunks[0].key))
        #expect(await !tier.remove(chunks[0].key))
    }
}
