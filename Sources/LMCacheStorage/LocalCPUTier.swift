public import LMCacheCore
public import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The CPU-memory tier (`local_cpu`, `max_local_cpu_size`): chunks in one pre-faulted pool.
///
/// Memory is mapped once, up front, at the configured budget, and touched so that puts run at
/// memory bandwidth instead of page-fault speed. Chunks take extents of the pool; when a put
/// needs room, chunks are evicted in ``CachePolicy`` order (LRU, LFU or FIFO), skipping chunks
/// that are pinned.
///
/// **Pins.** `get` returns a ``KVChunk`` that points into the pool without copying; the chunk's
/// extent is pinned for as long as any reference to that `KVChunk` lives, and unpinned when the
/// last one goes away, so a pin cannot leak and a reader never sees memory reused under it.
/// Removing a pinned chunk hides it at once and frees its memory at the last unpin.
///
/// **Concurrency.** All bookkeeping happens under one lock, held only for short transitions;
/// the copies into and out of the pool run outside it, so readers and writers of different
/// chunks proceed in parallel. A chunk being written is invisible until it is complete.
///
/// ```swift
/// let tier = try LocalCPUTier(capacity: 5 << 30, policy: .lru)
/// tier.put(chunk)
/// let hit = tier.get(chunk.key)
/// ```
public final class LocalCPUTier: StorageTier {
    public let name = "cpu"
    private let core: Core

    /// Creates the tier and maps (and, with `prefault`, touches) `capacity` bytes.
    /// - Parameters:
    ///   - capacity: The byte budget.
    ///   - policy: Eviction order.
    ///   - prefault: Touch every page now (recommended; tests of small tiers may skip it).
    ///   - logger: Where the tier logs.
    /// - Throws: ``StorageError`` with code `outOfMemory` when the memory cannot be mapped.
    public init(
        capacity: Int,
        policy: CachePolicy = .lru,
        prefault: Bool = true,
        logger: Logger = Logger(label: "lmcache.storage.cpu")
    ) throws(StorageError) {
        guard capacity > 0 else { throw StorageError(.invalidArgument, "CPU tier capacity must be positive") }
        let pool = try MemoryPool(size: capacity, prefault: prefault)
        core = Core(pool: pool, capacity: capacity, policy: policy, logger: logger)
    }

    /// Creates the tier that `configuration` describes (`max_local_cpu_size`, `cache_policy`).
    public convenience init(
        configuration: LMCacheConfiguration,
        prefault: Bool = true,
        logger: Logger = Logger(label: "lmcache.storage.cpu")
    ) throws(StorageError) {
        try self.init(
            capacity: configuration.maxLocalCPUBytes,
            policy: configuration.cachePolicy,
            prefault: prefault,
            logger: logger
        )
    }

    /// Counters and gauges of the tier's state.
    public struct Statistics: Hashable, Sendable {
        /// The byte budget (rounded down to the pool's alignment).
        public var capacity: Int
        /// Bytes held by chunks, including chunks removed while pinned and not yet released.
        public var usedBytes: Int
        /// Chunks that can be found.
        public var count: Int
        /// Chunks with at least one live reader.
        public var pinnedCount: Int
        /// Lookups that found / did not find a chunk.
        public var hits: Int
        public var misses: Int
        /// Chunks stored, evicted, and declined for lack of room.
        public var stored: Int
        public var evicted: Int
        public var rejected: Int
    }

    /// The tier's current statistics.
    public var statistics: Statistics { core.state.withLock { $0.statistics } }

    /// Whether the tier holds `key`. Does not count as a use for eviction.
    public func contains(_ key: CacheKey) -> Bool {
        core.state.withLock { $0.contains(key) }
    }

    /// The chunk under `key`, pinned until the returned object is released; `nil` on a miss.
    public func get(_ key: CacheKey) -> KVChunk? {
        let found = core.state.withLock { $0.pin(key) }
        guard let found else {
            core.misses.increment()
            return nil
        }
        core.hits.increment()
        let lease = PoolLease(
            core: core,
            slot: found.slot,
            bytes: UnsafeRawBufferPointer(
                start: core.pool.base + found.offset,
                count: found.byteCount
            )
        )
        return KVChunk(key: key, tokens: found.tokens, layout: found.layout, storage: lease)
    }

    /// Stores a copy of `chunk`; `false` when it is already present or cannot be made room for.
    @discardableResult
    public func put(_ chunk: KVChunk) -> Bool {
        chunk.withUnsafeBytes { bytes in
            put(key: chunk.key, tokens: chunk.tokens, layout: chunk.layout, byteCount: bytes.count) { destination in
                destination.copyMemory(from: bytes)
            }
        }
    }

    /// Stores a chunk whose bytes `fill` writes straight into the pool (no intermediate copy).
    ///
    /// `fill` receives exactly `layout.byteCount(tokens: tokens.count)` bytes and must write all of
    /// them. If it throws, nothing is stored and the error is rethrown.
    /// - Returns: `false` when the key is already present (or being written) or no room can be made.
    @discardableResult
    public func put<E: Error>(
        key: CacheKey,
        tokens: [Int32],
        layout: KVLayout,
        byteCount: Int? = nil,
        fill: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(E) -> Bool {
        let count = layout.byteCount(tokens: tokens.count)
        precondition(byteCount == nil || byteCount == count, "put: \(byteCount ?? 0) bytes for \(tokens.count) tokens")
        precondition(tokens.count == key.tokenCount, "put: \(tokens.count) tokens for a key of \(key.tokenCount)")
        let reservation = core.state.withLock { $0.reserve(key: key, tokens: tokens, layout: layout, byteCount: count) }
        let slot: Int
        let offset: Int
        switch reservation {
        case .present:
            return false
        case .noRoom(let evicted):
            core.evictions.increment(by: evicted)
            if evicted > 0 { notify(admitted: []) }
            core.rejections.increment()
            core.logger.debug("no room in the CPU tier", metadata: ["lmcache.chunk.bytes": "\(count)"])
            return false
        case .reserved(let s, let o, let evicted):
            core.evictions.increment(by: evicted)
            slot = s
            offset = o
        }
        let destination = UnsafeMutableRawBufferPointer(start: core.pool.base + offset, count: count)
        do {
            try fill(destination)
        } catch {
            core.state.withLock { $0.abort(slot) }
            throw error
        }
        let visible = core.state.withLock { $0.publish(slot) }
        notify(admitted: visible ? [key] : [])
        core.stores.increment()
        core.storedBytes.increment(by: count)
        return true
    }

    /// Removes `key`. A pinned chunk disappears at once and its memory is freed at the last unpin.
    @discardableResult
    public func remove(_ key: CacheKey) -> Bool {
        let removed = core.state.withLock { $0.remove(key) }
        notify(admitted: [])
        return removed
    }

    /// Removes every chunk (pinned ones are freed when released).
    public func removeAll() {
        core.state.withLock { $0.removeAll() }
        notify(admitted: [])
    }

    // MARK: - Change observation

    /// Receives the keys that became findable in the tier and the keys that left it (evicted or
    /// removed), in batches, after the change and outside the tier's lock. It must return quickly
    /// (queue the keys; do no I/O). A P2P instance reports them to its controller.
    public typealias ChangeObserver = @Sendable (_ admitted: [CacheKey], _ removed: [CacheKey]) -> Void

    /// Calls `observer` after every later change (replacing any earlier observer; `nil` stops).
    /// Chunks already in the tier are not reported: read ``keys`` first to learn them.
    public func observeChanges(_ observer: ChangeObserver?) {
        core.observer.withLock { $0 = observer }
        core.state.withLock { state in
            state.tracksDepartures = observer != nil
            _ = state.takeDeparted()
        }
    }

    /// Every key findable now.
    /// - Complexity: O(count).
    public var keys: [CacheKey] { core.state.withLock { $0.keys } }

    private func notify(admitted: [CacheKey]) {
        guard let observer = core.observer.withLock({ $0 }) else { return }
        let removed = core.state.withLock { $0.takeDeparted() }
        guard !admitted.isEmpty || !removed.isEmpty else { return }
        observer(admitted, removed)
    }

    // MARK: - Internals

    /// Shared by the tier and its leases, so the pool outlives every chunk handed out.
    final class Core: Sendable {
        let pool: MemoryPool
        let state: Mutex<State>
        let logger: Logger
        let hits: Counter
        let misses: Counter
        let stores: Counter
        let storedBytes: Counter
        let evictions: Counter
        let rejections: Counter
        let observer = Mutex<ChangeObserver?>(nil)

        init(pool: MemoryPool, capacity: Int, policy: CachePolicy, logger: Logger) {
            self.pool = pool
            self.state = Mutex(State(capacity: min(capacity, pool.size), policy: policy))
            self.logger = logger
            let dimensions = [("tier", "cpu")]
            hits = Counter(label: "lmcache.storage.hits", dimensions: dimensions)
            misses = Counter(label: "lmcache.storage.misses", dimensions: dimensions)
            stores = Counter(label: "lmcache.storage.stores", dimensions: dimensions)
            storedBytes = Counter(label: "lmcache.storage.stored_bytes", dimensions: dimensions)
            evictions = Counter(label: "lmcache.storage.evictions", dimensions: dimensions)
            rejections = Counter(label: "lmcache.storage.rejections", dimensions: dimensions)
        }
    }

    /// A pin on one slot: the storage behind a ``KVChunk`` returned by `get`.
    ///
    /// `@unchecked Sendable`: `bytes` points into the pool extent of a published chunk, which no
    /// one writes, and the extent cannot be reused while this lease (the pin) lives.
    final class PoolLease: KVChunkStorage, @unchecked Sendable {
        let core: Core
        let slot: Int
        let bytes: UnsafeRawBufferPointer

        init(core: Core, slot: Int, bytes: UnsafeRawBufferPointer) {
            self.core = core
            self.slot = slot
            self.bytes = bytes
        }

        deinit { core.state.withLock { $0.unpin(slot) } }
    }
}
