import LMCacheCore

extension LocalDiskTier {
    /// The disk tier's index and budget, mutated only under the tier's lock.
    ///
    /// Eviction picks the entry with the smallest policy rank by a scan: O(*n*) per eviction, a
    /// few microseconds for tens of thousands of chunks, small beside the file I/O it precedes.
    struct State: Sendable {
        struct Entry: Sendable {
            var fileName: String
            var size: Int
            var uses: Int
            var lastUse: UInt64
            var stored: UInt64
        }

        enum Reservation {
            case reserved(victims: [String])
            case declined
            case tooLarge
        }

        let policy: CachePolicy
        /// False for good once the file system refused a write for a reason that does not pass
        /// (read-only, no permission); reads go on.
        var writable = true
        /// While set, a full disk keeps new chunks out until this instant; reads go on.
        var writesPausedUntil: ContinuousClock.Instant?
        var entries: [CacheKey: Entry] = [:]
        /// Keys being written, with the bytes reserved for them.
        var writing: [CacheKey: Int] = [:]
        var usedBytes = 0
        var reservedBytes = 0
        var clock: UInt64 = 0
        var counters = Statistics(
            writable: true,
            usedBytes: 0,
            count: 0,
            hits: 0,
            misses: 0,
            stored: 0,
            evicted: 0,
            corrupt: 0,
            rejected: 0
        )

        init(policy: CachePolicy) { self.policy = policy }

        var statistics: Statistics {
            var result = counters
            result.writable = writable && writesPausedUntil.map { ContinuousClock.now >= $0 } ?? true
            result.usedBytes = usedBytes
            result.count = entries.count
            return result
        }

        /// Marks a hit and returns the file name, or counts a miss.
        mutating func use(_ key: CacheKey) -> String? {
            guard var entry = entries[key] else {
                counters.misses += 1
                return nil
            }
            clock += 1
            entry.uses += 1
            entry.lastUse = clock
            entries[key] = entry
            counters.hits += 1
            return entry.fileName
        }

        /// Reserves room for a file of `size` bytes, choosing victims to delete first.
        mutating func reserve(_ key: CacheKey, size: Int, capacity: Int, now: ContinuousClock.Instant) -> Reservation {
            if let until = writesPausedUntil, now >= until { writesPausedUntil = nil }
            guard writable, writesPausedUntil == nil, entries[key] == nil, writing[key] == nil else {
                counters.rejected += 1
                return .declined
            }
            guard size <= capacity else {
                counters.rejected += 1
                return .tooLarge
            }
            var victims: [String] = []
            while usedBytes + reservedBytes + size > capacity {
                guard let victim = nextVictim() else {
                    // Everything left is being written: no room now.
                    counters.rejected += 1
                    return .declined
                }
                let entry = entries.removeValue(forKey: victim)!
                usedBytes -= entry.size
                victims.append(entry.fileName)
                counters.evicted += 1
            }
            writing[key] = size
            reservedBytes += size
            return .reserved(victims: victims)
        }

        /// Indexes a file now complete on disk (a finished write, or one found at start).
        mutating func commit(_ key: CacheKey, fileName: String, size: Int, fresh: Bool = true) {
            if let reserved = writing.removeValue(forKey: key) { reservedBytes -= reserved }
            clock += 1
            if let old = entries[key] { usedBytes -= old.size }
            entries[key] = Entry(fileName: fileName, size: size, uses: 1, lastUse: clock, stored: clock)
            usedBytes += size
            if fresh { counters.stored += 1 }
        }

        /// Releases the reservation of a write that failed.
        mutating func abandon(_ key: CacheKey, size: Int) {
            if let reserved = writing.removeValue(forKey: key) { reservedBytes -= reserved }
            counters.rejected += 1
        }

        /// Drops `key` from the index (its file is gone or bad).
        mutating func forget(_ key: CacheKey) {
            if let entry = entries.removeValue(forKey: key) { usedBytes -= entry.size }
        }

        mutating func remove(_ key: CacheKey) -> String? {
            guard let entry = entries.removeValue(forKey: key) else { return nil }
            usedBytes -= entry.size
            return entry.fileName
        }

        mutating func removeAll() -> [String] {
            let names = entries.values.map(\.fileName)
            entries.removeAll()
            usedBytes = 0
            return names
        }

        /// Evicts until the indexed bytes fit `capacity`; returns the files to delete.
        mutating func shrink(to capacity: Int) -> [String] {
            var victims: [String] = []
            while usedBytes > capacity, let victim = nextVictim() {
                let entry = entries.removeValue(forKey: victim)!
                usedBytes -= entry.size
                victims.append(entry.fileName)
            }
            return victims
        }

        private func nextVictim() -> CacheKey? {
            switch policy {
            case .lru: entries.min { $0.value.lastUse < $1.value.lastUse }?.key
            case .fifo: entries.min { $0.value.stored < $1.value.stored }?.key
            case .lfu: entries.min { ($0.value.uses, $0.value.lastUse) < ($1.value.uses, $1.value.lastUse) }?.key
            }
        }
    }
}
