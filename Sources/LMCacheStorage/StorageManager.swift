public import LMCacheCore
public import Logging
import Metrics
public import ServiceLifecycle
import Synchronization

/// All tiers acting as one cache: the CPU tier first, then slower tiers (disk, remote) in order.
///
/// - **Lookup** returns how many leading chunks are available anywhere (prefix mode), asking
///   each slower tier once, in a batch, for the keys the faster ones lack.
/// - **Retrieve** returns those chunks, checking each chunk's token ids; a hit in a slower tier is
///   promoted into the CPU tier.
/// - **Store** writes the CPU tier synchronously and queues the chunk for the slower tiers
///   (write-behind). The queue is bounded: when it is full the write is dropped and counted;
///   `store` never waits.
/// - **Prefetch** queues loads from slower tiers into the CPU tier ahead of use.
///
/// Queued work runs in ``run()``: the manager is a `Service`, run in the program's `ServiceGroup`
/// (as `lmcache serve` runs it beside the HTTP server and the peers; listed before them, it shuts
/// down after them and flushes its queue within ``flushTimeout``), or around a piece of work with
/// ``withWriteBehind(flushTimeout:_:)`` (as `LLM` does). ``flush()`` waits for the queue to drain.
///
/// ```swift
/// let manager = try StorageManager(configuration: config)
/// let (cached, _) = try await manager.withWriteBehind(flushTimeout: .seconds(2)) {
///     manager.store(chunk)
///     return await manager.lookup(keys)
/// }
/// ```
public final class StorageManager: Service, Sendable {
    /// How long the queue may take to drain when a service group shuts the manager down; what is
    /// left after it is dropped (the cache is only an optimisation). `nil`: as long as it takes.
    public let flushTimeout: Duration?
    /// The CPU tier, when `local_cpu` is on.
    public let cpu: LocalCPUTier?
    /// The slower tiers, in lookup order.
    public let slowerTiers: [any StorageTier]
    private let logger: Logger
    private let jobs: AsyncStream<Job>
    private let queue: AsyncStream<Job>.Continuation
    private let state = Mutex(State())
    private let queueCapacity: Int
    private let droppedWrites = Counter(label: "lmcache.storage.write_behind.dropped")
    private let promotions = Counter(label: "lmcache.storage.promotions")
    private let tierHits: [Counter]
    private let tierLatency: [Timer]

    enum Job: Sendable {
        case write(KVChunk)
        case prefetch([CacheKey])
    }

    struct State: Sendable {
        var pending = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        var statistics = Statistics()
    }

    /// What the manager has done.
    public struct Statistics: Hashable, Sendable {
        /// Chunks queued for the slower tiers.
        public var writesQueued = 0
        /// Chunks not queued because the queue was full.
        public var writesDropped = 0
        /// Chunk writes to slower tiers that completed / that a tier declined or failed.
        public var writesCompleted = 0
        public var writesFailed = 0
        /// Chunks served from a slower tier and copied into the CPU tier.
        public var promotions = 0
        /// Chunks loaded into the CPU tier by prefetch.
        public var prefetched = 0
        /// Hits per tier name (`cpu`, `disk`, …) and misses (no tier had it).
        public var hits: [String: Int] = [:]
        public var misses = 0
    }

    /// Creates a manager over the given tiers.
    /// - Parameters:
    ///   - cpu: The CPU tier, or `nil` when it is off.
    ///   - slowerTiers: Disk and remote tiers, fastest first.
    ///   - writeQueueCapacity: Jobs the write-behind queue holds before dropping writes.
    ///   - flushTimeout: How long the queue may take to drain at a service group's shutdown.
    public init(
        cpu: LocalCPUTier?,
        slowerTiers: [any StorageTier],
        writeQueueCapacity: Int = 256,
        flushTimeout: Duration? = .seconds(2),
        logger: Logger = Logger(label: "lmcache.storage")
    ) {
        precondition(writeQueueCapacity > 0, "writeQueueCapacity must be positive")
        self.flushTimeout = flushTimeout
        self.cpu = cpu
        self.slowerTiers = slowerTiers
        self.logger = logger
        self.queueCapacity = writeQueueCapacity
        (jobs, queue) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .bufferingOldest(writeQueueCapacity))
        let names = (cpu.map { [$0.name] } ?? []) + slowerTiers.map(\.name)
        tierHits = names.map { Counter(label: "lmcache.storage.manager.hits", dimensions: [("tier", $0)]) }
        tierLatency = names.map { Timer(label: "lmcache.storage.manager.get.duration", dimensions: [("tier", $0)]) }
    }

    /// Builds the tiers `configuration` describes: CPU (`local_cpu`, `max_local_cpu_size`), disk
    /// (`local_disk`, `max_local_disk_size`), and a remote tier (`remote_url`) made by `remoteTier`,
    /// then `additionalTiers` (the P2P tier), searched last.
    /// - Throws: ``StorageError`` when a tier cannot be created.
    public convenience init(
        configuration: LMCacheConfiguration,
        prefault: Bool = false,
        remoteTier: ((RemoteURL) throws -> any StorageTier)? = nil,
        additionalTiers: [any StorageTier] = [],
        logger: Logger = Logger(label: "lmcache.storage")
    ) throws {
        let cpu =
            configuration.localCPU && configuration.maxLocalCPUBytes > 0
            ? try LocalCPUTier(configuration: configuration, prefault: prefault, logger: logger) : nil
        var slower: [any StorageTier] = []
        if let disk = try LocalDiskTier(configuration: configuration, logger: logger) { slower.append(disk) }
        if let url = configuration.remoteURL {
            guard let remoteTier else {
                throw StorageError(.unavailable, "remote_url \(url) is set but this program has no remote tiers")
            }
            slower.append(try remoteTier(url))
        }
        slower += additionalTiers
        self.init(cpu: cpu, slowerTiers: slower, logger: logger)
    }

    /// The manager's statistics.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    // MARK: Lookup and retrieval

    /// The number of leading keys available in some tier: the cached prefix, in chunks.
    ///
    /// - Complexity: one CPU-tier lookup per key, then one batched `contains` per slower tier over
    ///   the keys the tiers before it lacked.
    public func lookup(_ keys: [CacheKey]) async -> Int {
        var count = 0
        if let cpu {
            while count < keys.count && cpu.contains(keys[count]) { count += 1 }
        }
        guard count < keys.count, !slowerTiers.isEmpty else { return count }
        var found = [Bool](repeating: false, count: keys.count - count)
        var remaining = Array(keys[count...])
        var positions = Array(0..<remaining.count)
        for tier in slowerTiers where !remaining.isEmpty {
            let answers = await tier.contains(remaining)
            var stillMissing: [CacheKey] = []
            var stillPositions: [Int] = []
            for (index, hit) in answers.enumerated() {
                if hit {
                    found[positions[index]] = true
                } else {
                    stillMissing.append(remaining[index])
                    stillPositions.append(positions[index])
                }
            }
            // Only keys before the first gap matter for a prefix.
            if let gap = found.firstIndex(of: false) {
                let cut = stillPositions.firstIndex { $0 > gap } ?? stillPositions.count
                remaining = Array(stillMissing[..<cut])
                positions = Array(stillPositions[..<cut])
            } else {
                remaining = []
            }
        }
        return count + (found.firstIndex(of: false) ?? found.count)
    }

    /// The chunk under `key` holding exactly `tokens`, from the fastest tier that has it; a hit in a
    /// slower tier is promoted into the CPU tier. `nil` when no tier has it.
    public func get(_ key: CacheKey, tokens: some Collection<Int32>) async -> KVChunk? {
        let hit = await fetch([(key, Array(tokens))])[0]
        if hit == nil { state.withLock { $0.statistics.misses += 1 } }
        return hit
    }

    /// The leading run of `chunks` available in the tiers, each checked against its tokens in
    /// `tokens`; stops at the first chunk no tier has.
    ///
    /// The chunks the CPU tier lacks are asked of each slower tier in one batch
    /// (``StorageTier/get(_:receive:)``: pipelined windows on Redis, many reads in flight on a
    /// disk), not one chunk after another; hits are promoted into the CPU tier (from disk straight
    /// into its pool).
    public func retrieve(_ chunks: [TokenChunk], tokens: [Int32]) async -> [KVChunk] {
        guard !chunks.isEmpty else { return [] }
        let found = await fetch(chunks.map { ($0.key, Array(tokens[$0.range])) })
        let run = found.prefix { $0 != nil }.map { $0! }
        if run.count < chunks.count { state.withLock { $0.statistics.misses += 1 } }
        return run
    }

    /// Each wanted chunk from the fastest tier that holds it with exactly its tokens (`nil` where
    /// none does): the CPU tier first, then each slower tier asked once for all that are still
    /// missing; hits in slower tiers are promoted into the CPU tier.
    private func fetch(_ wanted: [(key: CacheKey, tokens: [Int32])]) async -> [KVChunk?] {
        var found = [KVChunk?](repeating: nil, count: wanted.count)
        var missing: [Int] = []
        var tierIndex = 0
        if let cpu {
            let start = ContinuousClock.now
            for (index, chunk) in wanted.enumerated() {
                if let hit = try? await cpu.get(chunk.key, verifying: chunk.tokens) {
                    found[index] = hit
                    record(hit: 0, since: start)
                } else {
                    missing.append(index)
                }
            }
            tierIndex = 1
        } else {
            missing = Array(wanted.indices)
        }
        for tier in slowerTiers where !missing.isEmpty {
            defer { tierIndex += 1 }
            let start = ContinuousClock.now
            let keys = missing.map { wanted[$0].key }
            let expected = missing.map { wanted[$0].tokens }
            let hits = await tier.promote(keys, verifying: expected, into: cpu)
            if let cpu {
                for case let hit? in hits where cpu.contains(hit.key) { countPromotion() }
            }
            var stillMissing: [Int] = []
            for (offset, index) in missing.enumerated() {
                if let hit = hits[offset] {
                    found[index] = hit
                    record(hit: tierIndex, since: start)
                } else {
                    stillMissing.append(index)
                }
            }
            missing = stillMissing
        }
        return found
    }

    private func countPromotion() {
        promotions.increment()
        state.withLock { $0.statistics.promotions += 1 }
    }

    private func record(hit tierIndex: Int, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        tierHits[tierIndex].increment()
        tierLatency[tierIndex].recordNanoseconds(
            elapsed.components.seconds * 1_000_000_000 + elapsed.components.attoseconds / 1_000_000_000
        )
        let name = tierIndex == 0 && cpu != nil ? "cpu" : slowerTiers[tierIndex - (cpu == nil ? 0 : 1)].name
        state.withLock { $0.statistics.hits[name, default: 0] += 1 }
    }

    // MARK: Store and prefetch

    /// Stores `chunk` in the CPU tier now and queues it for the slower tiers. Never waits: when the
    /// queue is full, the slower tiers miss this chunk and the drop is counted.
    public func store(_ chunk: KVChunk) {
        cpu?.put(chunk)
        guard slowerTiers.contains(where: \.storesChunks) else { return }
        enqueue(.write(chunk))
    }

    /// Queues loading `keys` from slower tiers into the CPU tier.
    public func prefetch(_ keys: [CacheKey]) {
        guard cpu != nil, !slowerTiers.isEmpty, !keys.isEmpty else { return }
        enqueue(.prefetch(keys))
    }

    private func enqueue(_ job: Job) {
        state.withLock { $0.pending += 1 }
        switch queue.yield(job) {
        case .enqueued:
            if case .write = job { state.withLock { $0.statistics.writesQueued += 1 } }
        case .dropped, .terminated:
            if case .write = job { droppedWrites.increment() }
            let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                if case .write = job { state.statistics.writesDropped += 1 }
                return state.finishOne()
            }
            for waiter in waiters { waiter.resume() }
        @unknown default:
            break
        }
    }

    /// Runs queued writes and prefetches until the task is cancelled, or, in a `ServiceGroup`, until the
    /// group shuts the manager down: then what is queued gets ``flushTimeout`` to reach the slower
    /// tiers, and the rest is dropped.
    ///
    /// Neither way waits for a write stuck in a stalled tier: the write-behind is cancelled and left to
    /// end on its own when the write returns (its tier's I/O timeout). Once per manager: its queue
    /// closes when the write-behind stops.
    public func run() async {
        let writer = Task { await self.processJobs() }
        defer { writer.cancel() }
        // Returns at the group's graceful shutdown (never outside a group); throws when cancelled.
        guard (try? await gracefulShutdown()) != nil else { return }
        if await !drain(within: flushTimeout), let flushTimeout {
            logger.warning("the cache's write-behind did not drain within \(flushTimeout); the rest is dropped")
        }
    }

    /// Runs queued writes and prefetches until the task is cancelled.
    private func processJobs() async {
        await withTaskCancellationHandler {
            for await job in jobs {
                switch job {
                case .write(let chunk): await writeBehind(chunk)
                case .prefetch(let keys): await load(keys)
                }
                let waiters = state.withLock { $0.finishOne() }
                for waiter in waiters { waiter.resume() }
            }
        } onCancel: {
            queue.finish()
        }
        // Jobs left unprocessed are dropped: release anyone waiting for them.
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.pending = 0
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Runs `body` with the write-behind running alongside, then waits until what was queued has
    /// reached the slower tiers, at most `flushTimeout` (`nil`: as long as it takes); what is left
    /// after that is dropped (the cache is only an optimisation). For a piece of work (a batch job,
    /// a test) rather than a service's lifetime (``run()``).
    ///
    /// The timeout holds even when a tier stalls inside a write, as in ``run()``; and like it, once
    /// per manager.
    ///
    /// - Returns: `body`'s result, and whether the queue drained.
    /// - Throws: what `body` throws (nothing is flushed then).
    public func withWriteBehind<T: Sendable>(
        flushTimeout: Duration? = nil,
        _ body: () async throws -> T
    ) async throws -> (result: T, flushed: Bool) {
        let writer = Task { await self.processJobs() }
        defer { writer.cancel() }
        let result = try await body()
        return (result, await drain(within: flushTimeout))
    }

    /// Waits for ``flush()``, at most `timeout`; whether the queue drained. Neither the flush nor the
    /// timer is awaited after the first of them.
    private func drain(within timeout: Duration?) async -> Bool {
        guard let timeout else {
            await flush()
            return true
        }
        // The first of the flush and the timer; neither is awaited after that.
        let (outcomes, outcome) = AsyncStream.makeStream(of: Bool.self)
        let flusher = Task {
            await self.flush()
            outcome.yield(true)
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            outcome.yield(false)
        }
        var first = outcomes.makeAsyncIterator()
        let flushed = await first.next() ?? false
        timer.cancel()
        flusher.cancel()
        outcome.finish()
        return flushed
    }

    /// Waits until every job queued so far has run (or `run()` has stopped).
    public func flush() async {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Bool in
                if state.pending == 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func writeBehind(_ chunk: KVChunk) async {
        for tier in slowerTiers where tier.storesChunks {
            let stored: Bool
            do {
                stored = try await tier.put(chunk)
            } catch {
                logger.debug(
                    "write-behind failed",
                    metadata: ["lmcache.tier": "\(tier.name)", "lmcache.error": "\(error)"]
                )
                stored = false
            }
            state.withLock {
                if stored { $0.statistics.writesCompleted += 1 } else { $0.statistics.writesFailed += 1 }
            }
        }
    }

    private func load(_ keys: [CacheKey]) async {
        guard let cpu else { return }
        for key in keys where !cpu.contains(key) {
            for tier in slowerTiers {
                guard let chunk = try? await tier.get(key) else { continue }
                if cpu.put(chunk) { state.withLock { $0.statistics.prefetched += 1 } }
                break
            }
        }
    }
}

extension StorageManager.State {
    /// Marks one job done; returns the waiters to resume when none is left.
    mutating func finishOne() -> [CheckedContinuation<Void, Never>] {
        pending -= 1
        guard pending == 0 else { return [] }
        defer { waiters = [] }
        return waiters
    }
}
