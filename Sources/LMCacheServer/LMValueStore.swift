public import LMCacheWire
import Metrics
public import NIOCore
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// One stored value: the payload bytes of a PUT and the metadata it came with.
///
/// The payload is a `ByteBuffer`, reference-counted: a GET writes the very same storage to the
/// socket without copying it, and eviction while a reply is being written only drops the
/// store's reference.
public struct LMStoredValue: Sendable {
    /// The payload, exactly as received.
    public var payload: ByteBuffer
    /// The memory-format code of the PUT.
    public var format: Int32
    /// The dtype code of the PUT.
    public var dtype: Int32
    /// The shape of the PUT.
    public var shape: LMShape

    /// Creates a value.
    public init(payload: ByteBuffer, format: Int32, dtype: Int32, shape: LMShape) {
        self.payload = payload
        self.format = format
        self.dtype = dtype
        self.shape = shape
    }

    /// The reply header of a GET hit on this value.
    public var replyHeader: LMReplyHeader {
        LMReplyHeader(
            code: LMReplyHeader.success,
            length: Int32(payload.readableBytes),
            format: format,
            dtype: dtype,
            shape: shape
        )
    }
}

/// The server's in-memory store: opaque values under string keys, within a byte budget, with
/// least-recently-used eviction.
///
/// Every value is charged its payload's storage plus its key and a fixed overhead
/// (``entryOverhead``), so the budget bounds the memory the store holds. A value that cannot fit
/// even in an empty store is declined. A PUT to a key that exists replaces the old value, as in
/// LMCache's server. `get` counts as a use; `contains` does not.
///
/// All bookkeeping happens under one lock; nothing is copied while it is held.
///
/// ```swift
/// let store = LMValueStore(capacity: 1 << 30)
/// store.put("k", LMStoredValue(payload: buffer, format: 1, dtype: 2, shape: .zero))
/// let hit = store.get("k")
/// ```
public final class LMValueStore: Sendable {
    /// Bytes charged per entry on top of its payload and key (index and list bookkeeping).
    public static let entryOverhead = 128

    /// The outcome of ``put(_:_:)``.
    public enum PutOutcome: Hashable, Sendable {
        /// Stored, after evicting `evicted` older values.
        case stored(evicted: Int)
        /// Larger than the whole budget; nothing changed.
        case tooLarge
    }

    /// Counters and gauges of the store.
    public struct Statistics: Hashable, Sendable {
        /// The byte budget.
        public var capacity: Int
        /// Bytes charged to stored values.
        public var usedBytes: Int
        /// Values stored.
        public var count: Int
        public var hits: Int
        public var misses: Int
        /// Values evicted to make room.
        public var evictions: Int
        /// PUTs declined because the value exceeds the budget.
        public var rejected: Int
    }

    /// Values at least this large are kept in the store's pool (``LMValuePool``); smaller ones
    /// in their own heap buffers, where a pool's 4 KiB extents would waste more than they save.
    public static let pooledMinimumBytes = 64 << 10

    private let state: Mutex<State>
    private let metrics: Metrics
    private let pool: LMValuePool?

    /// Creates an empty store.
    /// - Parameters:
    ///   - capacity: The byte budget; must be positive.
    ///   - prefault: Touch all of the value pool's memory now (as much memory as the budget),
    ///     so that no PUT pays for first-touch page faults.
    public init(capacity: Int, prefault: Bool = false) {
        precondition(capacity > 0, "the store's capacity must be positive")
        state = Mutex(State(capacity: capacity))
        metrics = Metrics()
        // Without a pool (the region could not be mapped) every value gets a heap buffer.
        pool = try? LMValuePool(capacity: capacity, prefault: prefault)
    }

    deinit { pool?.close() }

    /// The store's statistics.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Stores `value` under `key`, replacing an older value and evicting least-recently-used
    /// values as needed.
    /// - Complexity: O(1) amortized, plus O(1) per evicted value.
    @discardableResult
    public func put(_ key: String, _ value: LMStoredValue) -> PutOutcome { store(key, value).outcome }

    /// ``put(_:_:)``, also returning the value as stored (its payload moved into the store's
    /// memory), for callers that keep using it after the PUT.
    package func store(_ key: String, _ value: LMStoredValue) -> (outcome: PutOutcome, stored: LMStoredValue) {
        var value = value
        let size = value.payload.readableBytes
        if let pool, size >= Self.pooledMinimumBytes,
            size + key.utf8.count + Self.entryOverhead <= state.withLock({ $0.capacity })
        {
            // One copy into reused, already-faulted memory; the receive buffer is free again at once.
            value.payload = pooledCopy(value.payload, pool: pool)
        } else if value.payload.storageCapacity > size + max(4096, size / 8) {
            // A slice of a large receive buffer would pin all of it: keep only the payload's bytes.
            value.payload = Self.heapCopy(value.payload)
        }
        let cost = value.payload.storageCapacity + key.utf8.count + Self.entryOverhead
        let (outcome, displaced) = state.withLock { $0.insert(key, value, cost: cost) }
        _ = displaced  // Released here, outside the lock.
        switch outcome {
        case .stored(let evicted):
            if evicted > 0 { metrics.evictions.increment(by: evicted) }
            metrics.stored.increment()
        case .tooLarge:
            metrics.rejected.increment()
        }
        publishGauges()
        return (outcome, value)
    }

    /// A copy of `payload` in the pool, evicting least-recently-used values while the pool has no
    /// extent that large; a heap copy when even an empty store leaves none (extents still held by
    /// replies being written, or fragmentation).
    private func pooledCopy(_ payload: ByteBuffer, pool: LMValuePool) -> ByteBuffer {
        while true {
            if let buffer = pool.buffer(copying: payload) { return buffer }
            guard let victim = state.withLock({ $0.evictOldest() }) else { break }
            metrics.evictions.increment()
            _ = victim  // Released here, outside the lock: its extent returns to the pool.
        }
        return Self.heapCopy(payload)
    }

    private static func heapCopy(_ payload: ByteBuffer) -> ByteBuffer {
        var copy = ByteBufferAllocator().buffer(capacity: payload.readableBytes)
        copy.writeImmutableBuffer(payload)
        return copy
    }

    /// The value under `key`, marked as most recently used; `nil` on a miss.
    /// - Complexity: O(1).
    public func get(_ key: String) -> LMStoredValue? {
        let value = state.withLock { $0.get(key) }
        if value == nil { metrics.misses.increment() } else { metrics.hits.increment() }
        return value
    }

    /// Whether `key` is stored. Not a use for eviction.
    public func contains(_ key: String) -> Bool {
        state.withLock { $0.contains(key) }
    }

    /// Removes `key`; returns whether it was stored.
    @discardableResult
    public func remove(_ key: String) -> Bool {
        let removed = state.withLock { $0.remove(key) }
        publishGauges()
        return removed != nil
    }

    /// Bytes of the value pool's extents in use (values stored, or evicted and still being
    /// written to a socket); `nil` when the store has no pool.
    package var _poolUsedBytes: Int? { pool?.usedBytes }

    /// Every stored key, least recently used first.
    public var keys: [String] { state.withLock { $0.keysInOrder() } }

    private func publishGauges() {
        let (count, bytes) = state.withLock { ($0.count, $0.usedBytes) }
        metrics.objects.record(count)
        metrics.bytes.record(bytes)
    }

    private struct Metrics: Sendable {
        let hits = Counter(label: "lmcache.server.hits")
        let misses = Counter(label: "lmcache.server.misses")
        let stored = Counter(label: "lmcache.server.stores")
        let evictions = Counter(label: "lmcache.server.evictions")
        let rejected = Counter(label: "lmcache.server.rejections")
        let objects = Gauge(label: "lmcache.server.objects")
        let bytes = Gauge(label: "lmcache.server.bytes")
    }
}

extension LMValueStore {
    /// The index and the recency list, mutated only under the store's lock.
    ///
    /// Entries live in slots of an array; a doubly linked list through the slots keeps them in
    /// recency order (head = least recently used, the next victim).
    struct State: Sendable {
        struct Entry: Sendable {
            var key: String
            var value: LMStoredValue
            var cost: Int
            var previous = -1
            var next = -1
        }

        let capacity: Int
        private(set) var usedBytes = 0
        private var slots: [Entry?] = []
        private var freeSlots: [Int] = []
        private var index: [String: Int] = [:]
        private var head = -1
        private var tail = -1
        private var hits = 0
        private var misses = 0
        private var evictions = 0
        private var rejected = 0

        init(capacity: Int) { self.capacity = capacity }

        var count: Int { index.count }

        var statistics: Statistics {
            Statistics(
                capacity: capacity,
                usedBytes: usedBytes,
                count: index.count,
                hits: hits,
                misses: misses,
                evictions: evictions,
                rejected: rejected
            )
        }

        func contains(_ key: String) -> Bool { index[key] != nil }

        mutating func get(_ key: String) -> LMStoredValue? {
            guard let slot = index[key] else {
                misses += 1
                return nil
            }
            hits += 1
            unlink(slot)
            append(slot)
            return slots[slot]!.value
        }

        /// Returns the outcome and the values that left the store (to be released outside the lock).
        mutating func insert(_ key: String, _ value: LMStoredValue, cost: Int) -> (PutOutcome, [LMStoredValue]) {
            guard cost <= capacity else {
                rejected += 1
                return (.tooLarge, [])
            }
            var displaced: [LMStoredValue] = []
            if let old = remove(key) { displaced.append(old) }
            var evicted = 0
            while usedBytes + cost > capacity, head >= 0 {
                let victim = slots[head]!.key
                displaced.append(remove(victim)!)
                evicted += 1
            }
            let slot: Int
            if let reused = freeSlots.popLast() {
                slot = reused
            } else {
                slot = slots.count
                slots.append(nil)
            }
            slots[slot] = Entry(key: key, value: value, cost: cost)
            index[key] = slot
            append(slot)
            usedBytes += cost
            evictions += evicted
            _checkInvariants()
            return (.stored(evicted: evicted), displaced)
        }

        /// Evicts the least recently used value, if any.
        mutating func evictOldest() -> LMStoredValue? {
            guard head >= 0 else { return nil }
            evictions += 1
            let value = remove(slots[head]!.key)
            _checkInvariants()
            return value
        }

        @discardableResult
        mutating func remove(_ key: String) -> LMStoredValue? {
            guard let slot = index.removeValue(forKey: key) else { return nil }
            unlink(slot)
            let entry = slots[slot]!
            slots[slot] = nil
            freeSlots.append(slot)
            usedBytes -= entry.cost
            return entry.value
        }

        func keysInOrder() -> [String] {
            var result: [String] = []
            result.reserveCapacity(index.count)
            var slot = head
            while slot >= 0 {
                result.append(slots[slot]!.key)
                slot = slots[slot]!.next
            }
            return result
        }

        private mutating func append(_ slot: Int) {
            slots[slot]!.previous = tail
            slots[slot]!.next = -1
            if tail >= 0 { slots[tail]!.next = slot } else { head = slot }
            tail = slot
        }

        private mutating func unlink(_ slot: Int) {
            let entry = slots[slot]!
            if entry.previous >= 0 { slots[entry.previous]!.next = entry.next } else { head = entry.next }
            if entry.next >= 0 { slots[entry.next]!.previous = entry.previous } else { tail = entry.previous }
            slots[slot]!.previous = -1
            slots[slot]!.next = -1
        }

        func _checkInvariants() {
            #if LMCACHE_INTERNAL_CHECKS
            precondition(usedBytes <= capacity, "store over budget: \(usedBytes) > \(capacity)")
            var total = 0
            var seen = 0
            var slot = head
            while slot >= 0 {
                let entry = slots[slot]!
                precondition(index[entry.key] == slot, "index out of step with the list")
                total += entry.cost
                seen += 1
                slot = entry.next
            }
            precondition(seen == index.count && total == usedBytes, "list out of step with the index")
            #endif
        }
    }
}
