import LMCacheCore
import LMCacheStorage
import Synchronization
import LMCacheTestSupport
import Testing

/// A real disk tier seen only through the tier contract (so the storage manager cannot take its
/// disk-to-pool path), recording each batched get it is asked for.
final class RecordingTier: StorageTier {
    let name = "recording"
    let inner: LocalDiskTier
    let batches = Mutex<[[CacheKey]]>([])

    init(_ inner: LocalDiskTier) { self.inner = inner }

    func contains(_ key: CacheKey) async -> Bool { await inner.contains(key) }
    func get(_ key: CacheKey) async throws -> KVChunk? { try await inner.get(key) }
    func get(_ keys: [CacheKey], receive: @escaping @Sendable (Int, KVChunk) -> Void) async {
        batches.withLock { $0.append(keys) }
        await inner.get(keys, receive: receive)
    }
    func put(_ chunk: KVChunk) async throws -> Bool { try await inner.put(chunk) }
    func remove(_ key: CacheKey) async -> Bool { await inner.remove(key) }
}

@Suite("Batched retrieval")
struct BatchedRetrievalTests {
    static let tokens = (0..<(16 * 6)).map { Int32($0 * 7 % 1000) }

    static func keyedChunks() -> (pieces: [TokenChunk], chunks: [KVChunk]) {
        let keyer = ChunkKeyer(model: Fixtures.model, layout: Fixtures.layout, chunkSize: 16)
        let pieces = keyer.chunks(for: tokens)
        let chunks = pieces.map { piece in
            KVChunk(
                key: piece.key,
                tokens: Array(tokens[piece.range]),
                layout: Fixtures.layout,
                storage: HeapChunkStorage(count: Fixtures.layout.byteCount(tokens: 16)) {
                    $0.initializeMemory(as: UInt8.self, repeating: UInt8(3 + piece.range.lowerBound / 16))
                }
            )
        }
        return (pieces, chunks)
    }

    @Test("the chunks the CPU tier lacks are asked of a slower tier in one batch, served in order and promoted")
    func oneBatch() async throws {
        let directory = try TemporaryDirectory("lmcache-batched")
        defer { directory.remove() }
        let (pieces, chunks) = Self.keyedChunks()
        let cpu = try LocalCPUTier(capacity: 1 << 20, prefault: false)
        let slow = RecordingTier(try LocalDiskTier(directory: directory.path, capacity: 1 << 20))
        let manager = StorageManager(cpu: cpu, slowerTiers: [slow])
        cpu.put(chunks[0])
        cpu.put(chunks[3])
        for index in [1, 2, 4, 5] { slow.inner.write(chunks[index]) }

        let retrieved = await manager.retrieve(pieces, tokens: Self.tokens)
        #expect(retrieved.count == 6)
        for (index, chunk) in retrieved.enumerated() { #expect(chunk.contentEquals(chunks[index]), "chunk \(index)") }
        #expect(slow.batches.withLock { $0 } == [[1, 2, 4, 5].map { chunks[$0].key }], "one batch of the four missing")
        for chunk in chunks { #expect(cpu.contains(chunk.key)) }
        #expect(manager.statistics.promotions == 4)
        #expect(manager.statistics.hits["recording"] == 4)
    }

    @Test("a chunk whose tokens differ is not served, is removed from its tier, and ends the run")
    func foreignTokens() async throws {
        let directory = try TemporaryDirectory("lmcache-batched-foreign")
        defer { directory.remove() }
        let (pieces, chunks) = Self.keyedChunks()
        let slow = RecordingTier(try LocalDiskTier(directory: directory.path, capacity: 1 << 20))
        let manager = StorageManager(cpu: nil, slowerTiers: [slow])
        // Chunk 2's key holding other tokens: a collision or a corrupted store.
        let impostor = KVChunk(
            key: chunks[2].key, tokens: chunks[2].tokens.map { $0 + 1 }, layout: Fixtures.layout,
            storage: HeapChunkStorage(count: chunks[2].byteCount) { $0.initializeMemory(as: UInt8.self, repeating: 9) }
        )
        for chunk in [chunks[0], chunks[1], impostor, chunks[3]] { slow.inner.write(chunk) }

        let retrieved = await manager.retrieve(pieces, tokens: Self.tokens)
        #expect(retrieved.count == 2)
        for (index, chunk) in retrieved.enumerated() { #expect(chunk.contentEquals(chunks[index])) }
        #expect(!slow.inner.containsNow(chunks[2].key), "removed")
        #expect(slow.inner.containsNow(chunks[3].key))
        #expect(manager.statistics.misses == 1)
    }

    @Test("the disk tier reads a batch into caller memory and reports each key")
    func diskReadInto() throws {
        let directory = try TemporaryDirectory("lmcache-batched-read")
        defer { directory.remove() }
        let (_, chunks) = Self.keyedChunks()
        let disk = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        for chunk in chunks where chunk.key != chunks[4].key { disk.write(chunk) }
        let buffers = chunks.map { UnsafeMutableRawBufferPointer.allocate(byteCount: $0.byteCount, alignment: 64) }
        defer { for buffer in buffers { buffer.deallocate() } }
        for buffer in buffers { buffer.initializeMemory(as: UInt8.self, repeating: 0) }

        let read = disk.read(chunks.map(\.key), into: buffers)
        #expect(read == [true, true, true, true, false, true])
        for (index, chunk) in chunks.enumerated() where index != 4 {
            chunk.withUnsafeBytes { expected in #expect(expected.elementsEqual(UnsafeRawBufferPointer(buffers[index]))) }
        }
    }
}
