public import LMCacheCore
import Synchronization

/// The contract every tier keeps: CPU memory, local disk, and remote stores alike.
///
/// Requirements are the minimal set; batched forms and token verification are extensions.
/// A tier never throws for a plain miss: `get` returns `nil`. It throws only when the tier
/// itself failed (an I/O error, a broken connection), so callers can count and log failures
/// and treat them as misses.
public protocol StorageTier: AnyObject, Sendable {
    /// A short name for logs and metrics: `"cpu"`, `"disk"`, `"lm"`, `"redis"`.
    var name: String { get }

    /// Whether the tier holds `key`.
    func contains(_ key: CacheKey) async -> Bool

    /// Whether the tier holds each of `keys`, in order. A requirement (with a default that asks
    /// key by key) so that tiers which can answer a batch at once (pipelined remote stores, the
    /// P2P tier's single controller lookup) are called that way through `any StorageTier`.
    func contains(_ keys: [CacheKey]) async -> [Bool]

    /// The chunk stored under `key`, or `nil` on a miss. The chunk stays valid (pinned) for as
    /// long as the caller holds it.
    func get(_ key: CacheKey) async throws -> KVChunk?

    /// Fetches the chunks under `keys`, handing each hit to `receive` with its index in `keys` as
    /// soon as it arrives (in any order; misses and failures are not reported). A requirement (with
    /// a default that keeps a few single gets in flight) so that tiers which fetch many chunks at
    /// once (pipelined windows on Redis, reads in flight on a disk) are called that way through
    /// `any StorageTier`: a hit of many chunks then costs about one round trip, not one per chunk.
    /// `receive` should copy what it keeps and return: a chunk may pin a connection's receive
    /// buffer, and a batch that held every reply would hold all of its bytes at once.
    func get(_ keys: [CacheKey], receive: @escaping @Sendable (Int, KVChunk) -> Void) async

    /// Fetches the chunks under `keys`, each if it holds its entry of `tokens`, into `cpu` (the
    /// storage manager's CPU tier) where it has room, and returns them in order, from there when
    /// stored, `nil` for each miss. A chunk with other tokens (a hash collision, a corrupted store) is
    /// never returned, and is removed. A requirement, with a default that copies each chunk of the
    /// batched ``get(_:receive:)`` as it arrives (``promoteByCopying(_:verifying:into:)``), so that a
    /// tier that reads straight into the CPU tier's memory (the disk tier) is called that way through
    /// `any StorageTier`.
    func promote(_ keys: [CacheKey], verifying tokens: [[Int32]], into cpu: LocalCPUTier?) async -> [KVChunk?]

    /// Stores a copy of `chunk`. Returns `false` when the tier declined it (no room that could be
    /// made, or already present); storing is best effort, like every cache.
    @discardableResult
    func put(_ chunk: KVChunk) async throws -> Bool

    /// Removes `key`; returns whether it was present.
    @discardableResult
    func remove(_ key: CacheKey) async -> Bool

    /// Whether `put` can store anything. `false` for read-only tiers (the P2P tier, which fetches
    /// from peers): the storage manager then queues no write-behind for them.
    var storesChunks: Bool { get }
}

/// Single gets the default batched `get` keeps in flight.
private let defaultGetsInFlight = 8

extension StorageTier {
    /// Tiers store chunks unless they say otherwise.
    public var storesChunks: Bool { true }

    /// Whether the tier holds each key, asked one at a time.
    public func contains(_ keys: [CacheKey]) async -> [Bool] {
        var result: [Bool] = []
        result.reserveCapacity(keys.count)
        for key in keys { result.append(await contains(key)) }
        return result
    }

    /// Fetches the chunks under `keys` with up to eight single gets in flight.
    public func get(_ keys: [CacheKey], receive: @escaping @Sendable (Int, KVChunk) -> Void) async {
        await withTaskGroup(of: (Int, KVChunk?).self) { group in
            var next = 0
            func startNext() {
                guard next < keys.count else { return }
                let (index, key) = (next, keys[next])
                group.addTask { (index, try? await self.get(key)) }
                next += 1
            }
            for _ in 0..<min(defaultGetsInFlight, keys.count) { startNext() }
            while let (index, chunk) = await group.next() {
                if let chunk { receive(index, chunk) }
                startNext()
            }
        }
    }

    /// Promotes by copying each chunk of the batched ``get(_:receive:)`` as it arrives.
    public func promote(_ keys: [CacheKey], verifying tokens: [[Int32]], into cpu: LocalCPUTier?) async -> [KVChunk?] {
        await promoteByCopying(keys, verifying: tokens, into: cpu)
    }

    /// ``promote(_:verifying:into:)`` through the batched ``get(_:receive:)``: each chunk is checked
    /// and copied into `cpu` as it arrives, and the copy is kept, so that the tier's reply buffers are
    /// released at once.
    public func promoteByCopying(_ keys: [CacheKey], verifying tokens: [[Int32]], into cpu: LocalCPUTier?) async
        -> [KVChunk?]
    {
        precondition(keys.count == tokens.count, "one token run per key")
        let received = Mutex((hits: [KVChunk?](repeating: nil, count: keys.count), foreign: [CacheKey]()))
        await get(keys) { offset, hit in
            guard hit.tokens == tokens[offset] else {
                received.withLock { $0.foreign.append(hit.key) }
                return
            }
            var kept = hit
            if let cpu, cpu.put(hit) { kept = cpu.get(hit.key) ?? hit }
            received.withLock { $0.hits[offset] = kept }
        }
        let (hits, foreign) = received.withLock { $0 }
        for key in foreign { await remove(key) }
        return hits
    }

    /// The chunks under `keys`, in order, `nil` for each miss: ``get(_:receive:)`` collected.
    public func get(_ keys: [CacheKey]) async -> [KVChunk?] {
        let found = Mutex([KVChunk?](repeating: nil, count: keys.count))
        await get(keys) { index, chunk in found.withLock { $0[index] = chunk } }
        return found.withLock { $0 }
    }

    /// The number of leading keys the tier holds: the length of the cached prefix, in chunks.
    public func prefixHitCount(_ keys: [CacheKey]) async -> Int {
        var count = 0
        for key in keys {
            guard await contains(key) else { break }
            count += 1
        }
        return count
    }

    /// The chunk under `key` if it holds exactly `tokens`; a chunk with other tokens (a hash
    /// collision, or a corrupted store) is removed and reported as a miss.
    public func get(_ key: CacheKey, verifying tokens: some Collection<Int32>) async throws -> KVChunk? {
        guard let chunk = try await get(key) else { return nil }
        guard chunk.tokens.elementsEqual(tokens) else {
            await remove(key)
            return nil
        }
        return chunk
    }
}
