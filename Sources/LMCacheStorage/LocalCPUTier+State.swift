import LMCacheCore

extension LocalCPUTier {
    /// The CPU tier's bookkeeping, mutated only under the tier's lock.
    ///
    /// Chunks live in slots. A slot is *writing* (reserved, invisible), then *ready* (findable,
    /// evictable when unpinned). Ready slots sit in one doubly linked list in eviction order:
    /// head = next victim. LRU moves a slot to the tail on every hit; FIFO never moves it; LFU
    /// keeps counts and scans for the least used (ties: least recent). A slot removed while
    /// pinned is *orphaned*: gone from the index and the list, freed at its last unpin.
    struct State: Sendable {
        struct Slot: Sendable {
            var key: CacheKey
            var tokens: [Int32]
            var layout: KVLayout
            var extent: ExtentAllocator.Extent
            var byteCount: Int
            var pins = 0
            var ready = false
            var orphaned = false
            var previous = -1
            var next = -1
            var uses = 0
            var lastUse: UInt64 = 0
        }

        enum Reservation {
            case reserved(slot: Int, offset: Int, evicted: Int)
            case present
            case noRoom(evicted: Int)
        }

        struct Found {
            var slot: Int
            var offset: Int
            var byteCount: Int
            var tokens: [Int32]
            var layout: KVLayout
        }

        /// Whether keys leaving the tier are collected in ``departed`` (only while observed).
        var tracksDepartures = false
        /// Keys evicted or removed since the last ``takeDeparted()``.
        private var departed: [CacheKey] = []
        private var allocator: ExtentAllocator
        private var slots: [Slot?] = []
        private var freeSlots: [Int] = []
        private var index: [CacheKey: Int] = [:]
        private var head = -1
        private var tail = -1
        private var clock: UInt64 = 0
        private let policy: CachePolicy
        private var counters = Statistics(
            capacity: 0,
            usedBytes: 0,
            count: 0,
            pinnedCount: 0,
            hits: 0,
            misses: 0,
            stored: 0,
            evicted: 0,
            rejected: 0
        )

        /// Extents are page-aligned so that disk reads with O_DIRECT can land in the pool.
        static let alignment = 4096

        init(capacity: Int, policy: CachePolicy) {
            allocator = ExtentAllocator(capacity: capacity, alignment: Self.alignment)
            self.policy = policy
            counters.capacity = allocator.capacity
        }

        var statistics: Statistics {
            var result = counters
            result.usedBytes = allocator.usedBytes
            result.count = index.count
            result.pinnedCount = slots.reduce(0) { $0 + (($1?.pins ?? 0) > 0 ? 1 : 0) }
            return result
        }

        /// The findable keys.
        var keys: [CacheKey] { index.compactMap { slots[$0.value]!.ready ? $0.key : nil } }

        func contains(_ key: CacheKey) -> Bool {
            guard let slot = index[key] else { return false }
            return slots[slot]!.ready
        }

        // MARK: Transitions

        mutating func pin(_ key: CacheKey) -> Found? {
            guard let slot = index[key], var entry = slots[slot], entry.ready else {
                counters.misses += 1
                return nil
            }
            counters.hits += 1
            entry.pins += 1
            entry.uses += 1
            clock += 1
            entry.lastUse = clock
            slots[slot] = entry
            if policy == .lru { moveToTail(slot) }
            return Found(
                slot: slot,
                offset: entry.extent.offset,
                byteCount: entry.byteCount,
                tokens: entry.tokens,
                layout: entry.layout
            )
        }

        mutating func unpin(_ slot: Int) {
            guard var entry = slots[slot] else {
                assertionFailure("unpin of a free slot")
                return
            }
            precondition(entry.pins > 0, "unpin without pin")
            entry.pins -= 1
            if entry.pins == 0 && entry.orphaned {
                release(slot)
            } else {
                slots[slot] = entry
            }
        }

        mutating func reserve(key: CacheKey, tokens: [Int32], layout: KVLayout, byteCount: Int) -> Reservation {
            if index[key] != nil { return .present }
            var evicted = 0
            var extent = allocator.allocate(byteCount)
            while extent == nil {
                guard allocator.roundedSize(byteCount).map({ $0 <= allocator.capacity }) == true,
                    let victim = nextVictim()
                else {
                    counters.rejected += 1
                    counters.evicted += evicted
                    return .noRoom(evicted: evicted)
                }
                evict(victim)
                evicted += 1
                extent = allocator.allocate(byteCount)
            }
            let slot: Int
            if let reused = freeSlots.popLast() {
                slot = reused
            } else {
                slot = slots.count
                slots.append(nil)
            }
            slots[slot] = Slot(key: key, tokens: tokens, layout: layout, extent: extent!, byteCount: byteCount)
            index[key] = slot
            counters.evicted += evicted
            _checkInvariants()
            return .reserved(slot: slot, offset: extent!.offset, evicted: evicted)
        }

        /// Makes a written slot findable; `false` when it was removed while being written.
        @discardableResult
        mutating func publish(_ slot: Int) -> Bool {
            guard var entry = slots[slot] else { return false }
            clock += 1
            entry.ready = true
            entry.lastUse = clock
            entry.uses = 1
            slots[slot] = entry
            counters.stored += 1
            if entry.orphaned {
                // Removed while it was being written: nobody can find it; free it now.
                if entry.pins == 0 { release(slot) }
                return false
            }
            append(slot)
            _checkInvariants()
            return true
        }

        /// The keys that left the tier since the last call.
        mutating func takeDeparted() -> [CacheKey] {
            defer { departed = [] }
            return departed
        }

        mutating func abort(_ slot: Int) {
            guard let entry = slots[slot] else { return }
            if index[entry.key] == slot { index[entry.key] = nil }
            release(slot)
        }

        mutating func remove(_ key: CacheKey) -> Bool {
            guard let slot = index.removeValue(forKey: key), var entry = slots[slot] else { return false }
            let wasReady = entry.ready
            if wasReady && tracksDepartures { departed.append(key) }
            if entry.ready { unlink(slot) }
            if entry.pins == 0 && entry.ready {
                release(slot)
            } else {
                // Pinned, or still being written: freed at the last unpin or at publish.
                entry.orphaned = true
                slots[slot] = entry
            }
            _checkInvariants()
            return wasReady
        }

        mutating func removeAll() {
            for key in Array(index.keys) { _ = remove(key) }
        }

        // MARK: Eviction order

        /// The first unpinned ready slot in eviction order, or `nil` if every chunk is pinned.
        private func nextVictim() -> Int? {
            switch policy {
            case .lru, .fifo:
                var slot = head
                while slot != -1 {
                    let entry = slots[slot]!
                    if entry.pins == 0 { return slot }
                    slot = entry.next
                }
                return nil
            case .lfu:
                var best: Int?
                var bestKey: (Int, UInt64) = (Int.max, UInt64.max)
                var slot = head
                while slot != -1 {
                    let entry = slots[slot]!
                    if entry.pins == 0 && (entry.uses, entry.lastUse) < bestKey {
                        best = slot
                        bestKey = (entry.uses, entry.lastUse)
                    }
                    slot = entry.next
                }
                return best
            }
        }

        private mutating func evict(_ slot: Int) {
            let entry = slots[slot]!
            index[entry.key] = nil
            if tracksDepartures { departed.append(entry.key) }
            unlink(slot)
            release(slot)
        }

        /// Frees the slot's extent and the slot itself.
        private mutating func release(_ slot: Int) {
            let entry = slots[slot]!
            allocator.release(entry.extent)
            slots[slot] = nil
            freeSlots.append(slot)
        }

        private mutating func append(_ slot: Int) {
            slots[slot]!.previous = tail
            slots[slot]!.next = -1
            if tail != -1 { slots[tail]!.next = slot } else { head = slot }
            tail = slot
        }

        private mutating func unlink(_ slot: Int) {
            let previous = slots[slot]!.previous
            let next = slots[slot]!.next
            if previous != -1 { slots[previous]!.next = next } else { head = next }
            if next != -1 { slots[next]!.previous = previous } else { tail = previous }
            slots[slot]!.previous = -1
            slots[slot]!.next = -1
        }

        private mutating func moveToTail(_ slot: Int) {
            guard tail != slot else { return }
            unlink(slot)
            append(slot)
        }

        #if LMCACHE_INTERNAL_CHECKS
        func _checkInvariants() {
            allocator._checkInvariants()
            var listed = 0
            var slot = head
            var previous = -1
            while slot != -1 {
                let entry = slots[slot]!
                precondition(entry.ready && !entry.orphaned && entry.previous == previous, "eviction list broken")
                precondition(index[entry.key] == slot, "listed slot not indexed")
                listed += 1
                previous = slot
                slot = entry.next
            }
            precondition(previous == tail, "eviction list tail broken")
            let readyIndexed = index.values.filter { slots[$0]!.ready }.count
            precondition(listed == readyIndexed, "eviction list and index disagree")
        }
        #else
        @inline(__always) func _checkInvariants() {}
        #endif
    }
}
