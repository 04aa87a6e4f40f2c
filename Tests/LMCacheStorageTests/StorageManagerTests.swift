import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Logging
import ServiceLifecycle
import Synchronization
import Testing

/// A real disk tier behind a gate: its writes wait until the test opens the gate. Stands for a
/// slow or stalled disk without sleeping.
final class GatedTier: StorageTier {
    let name = "gated"
    let inner: LocalDiskTier
    private let gate = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    init(_ inner: LocalDiskTier) { self.inner = inner }

    func open() {
        let waiters = gate.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func pass() async {
        await withCheckedContinuation { continuation in
            let open = gate.withLock { state -> Bool in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if open { continuation.resume() }
        }
    }

    func contains(_ key: CacheKey) async -> Bool { await inner.contains(key) }
    func get(_ key: CacheKey) async throws -> KVChunk? { try await inner.get(key) }
    func put(_ chunk: KVChunk) async throws -> Bool {
        await pass()
        return try await inner.put(chunk)
    }
    func remove(_ key: CacheKey) async -> Bool { await inner.remove(key) }
}

@Suite("Storage manager")
struct StorageManagerTests {
    /// Runs `body` with `manager.run()` going in a child task.
    @Test("a chunk evicted from CPU is served from disk and promoted back")
    func tiering() async throws {
        let directory = try TemporaryDirectory("lmcache-manager")
        defer { directory.remove() }
        let cpu = try LocalCPUTier(capacity: 2 * 4096, prefault: false)
        let disk = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        let manager = StorageManager(cpu: cpu, slowerTiers: [disk])
        let chunks = (0..<5).map { Fixtures.chunk($0) }
        _ = try await manager.withWriteBehind {
            for chunk in chunks { manager.store(chunk) }
            await manager.flush()
            #expect(disk.statistics.count == 5)
            #expect(!cpu.contains(chunks[0].key), "the CPU tier holds only the last two")
            let hit = try #require(await manager.get(chunks[0].key, tokens: chunks[0].tokens))
            #expect(hit.contentEquals(chunks[0]))
            #expect(cpu.contains(chunks[0].key), "promoted")
            #expect(manager.statistics.promotions == 1)
            #expect(manager.statistics.hits["disk"] == 1)
            #expect(await manager.get(chunks[4].key, tokens: chunks[4].tokens) != nil)
            #expect(manager.statistics.hits["cpu"] == 1)
        }
    }

    @Test("lookup counts the leading run of chunks found in any tier")
    func prefixLookup() async throws {
        let directory = try TemporaryDirectory("lmcache-manager-lookup")
        defer { directory.remove() }
        let cpu = try LocalCPUTier(capacity: 16 * 4096, prefault: false)
        let disk = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        let manager = StorageManager(cpu: cpu, slowerTiers: [disk])
        let tokens = (0..<(16 * 6)).map { Int32($0) }
        let keyer = ChunkKeyer(model: Fixtures.model, layout: Fixtures.layout, chunkSize: 16)
        let chunks = keyer.chunks(for: tokens).map { piece in
            KVChunk(
                key: piece.key,
                tokens: Array(tokens[piece.range]),
                layout: Fixtures.layout,
                storage: HeapChunkStorage(count: Fixtures.layout.byteCount(tokens: 16)) {
                    $0.initializeMemory(as: UInt8.self, repeating: UInt8(piece.range.lowerBound / 16))
                }
            )
        }
        // Chunks 0, 1 in CPU; 2, 3 only on disk; 4 nowhere; 5 in CPU.
        cpu.put(chunks[0])
        cpu.put(chunks[1])
        disk.write(chunks[2])
        disk.write(chunks[3])
        cpu.put(chunks[5])
        let keys = chunks.map(\.key)
        #expect(await manager.lookup(keys) == 4)
        #expect(await manager.lookup(Array(keys.prefix(2))) == 2)
        #expect(await manager.lookup([keys[4]] + keys) == 0)
        let retrieved = await manager.retrieve(keyer.chunks(for: tokens), tokens: tokens)
        #expect(retrieved.count == 4)
        for (index, chunk) in retrieved.enumerated() { #expect(chunk.contentEquals(chunks[index])) }
    }

    @Test("store never waits for a stalled slower tier; a full queue drops writes and counts them")
    func writeBehindNeverBlocks() async throws {
        let directory = try TemporaryDirectory("lmcache-manager-stall")
        defer { directory.remove() }
        let cpu = try LocalCPUTier(capacity: 256 * 4096, prefault: false)
        let gated = GatedTier(try LocalDiskTier(directory: directory.path, capacity: 1 << 22))
        let manager = StorageManager(cpu: cpu, slowerTiers: [gated], writeQueueCapacity: 4)
        let chunks = (0..<100).map { Fixtures.chunk($0) }
        _ = try await manager.withWriteBehind {
            // The gate is shut: if store waited for the tier, this loop would never finish.
            for chunk in chunks { manager.store(chunk) }
            let stats = manager.statistics
            #expect(stats.writesQueued + stats.writesDropped == 100)
            #expect(stats.writesDropped >= 95, "queue of 4 (+1 in flight) while the tier is stalled")
            for chunk in chunks { #expect(cpu.contains(chunk.key), "the CPU tier stored every chunk at once") }
            gated.open()
            await manager.flush()
            #expect(gated.inner.statistics.count == stats.writesQueued)
        }
    }

    @Test("withWriteBehind drains the queue after its body, or gives up after the timeout")
    func writeBehindAround() async throws {
        let directory = try TemporaryDirectory("lmcache-manager-around")
        defer { directory.remove() }
        let gated = GatedTier(try LocalDiskTier(directory: directory.path, capacity: 1 << 22))
        let manager = StorageManager(cpu: nil, slowerTiers: [gated])
        let started = ContinuousClock.now
        let (value, flushed) = try await manager.withWriteBehind(flushTimeout: .milliseconds(300)) {
            manager.store(Fixtures.chunk(1))
            return 7
        }
        // Returning at all is the point: the gate stays shut until after this call, so a runner that
        // waited for the stuck write would never return. The bound is loose because this suite runs
        // beside the engine's synchronous suites, which can hold every cooperative thread (the timer's
        // too) for a minute and more.
        #expect(value == 7 && !flushed, "the gate is shut: the flush cannot finish")
        #expect(ContinuousClock.now - started < .seconds(600))
        #expect(gated.inner.statistics.count == 0)
        // A manager's queue closes when its write-behind stops: a new one over the same (now open) tier.
        // Its flush must drain; the bound is as loose as the one above, for the same reason (a 30-s
        // bound ran out once beside the engine suites and a sanitizer build).
        gated.open()
        let next = StorageManager(cpu: nil, slowerTiers: [gated])
        let (_, drained) = try await next.withWriteBehind(flushTimeout: .seconds(600)) {
            next.store(Fixtures.chunk(2))
        }
        #expect(drained)
        #expect(await gated.inner.contains(Fixtures.chunk(2).key))
    }

    /// Stores a chunk as its group shuts it down: a write queued after the HTTP server (listed after
    /// the manager, as `lmcache serve` lists it) has stopped.
    struct StoringAtShutdown: Service {
        let manager: StorageManager
        let chunk: KVChunk

        func run() async throws {
            try? await gracefulShutdown()
            manager.store(chunk)
        }
    }

    @Test("in a service group the manager shuts down after the services listed after it, then drains its queue")
    func asService() async throws {
        let directory = try TemporaryDirectory("lmcache-manager-service")
        defer { directory.remove() }
        let gated = GatedTier(try LocalDiskTier(directory: directory.path, capacity: 1 << 22))
        gated.open()
        let manager = StorageManager(cpu: nil, slowerTiers: [gated], flushTimeout: .seconds(600))
        let chunk = Fixtures.chunk(3)
        let group = ServiceGroup(
            services: [manager, StoringAtShutdown(manager: manager, chunk: chunk)],
            logger: Logger(label: "test.storage-service"))
        let running = Task { try await group.run() }
        manager.store(Fixtures.chunk(4))
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(await gated.inner.contains(Fixtures.chunk(4).key), "a write queued while running")
        #expect(await gated.inner.contains(chunk.key), "a write queued by a service that shut down before the manager")

        // A stalled tier: the shutdown still ends, after the flush timeout, with the write dropped. The
        // bound is loose for the reason given in writeBehindAround.
        let stalledDirectory = try TemporaryDirectory("lmcache-manager-stalled")
        defer { stalledDirectory.remove() }
        let stalled = GatedTier(try LocalDiskTier(directory: stalledDirectory.path, capacity: 1 << 22))
        let stuck = StorageManager(cpu: nil, slowerTiers: [stalled], flushTimeout: .milliseconds(300))
        let stuckGroup = ServiceGroup(services: [stuck], logger: Logger(label: "test.storage-service"))
        let started = ContinuousClock.now
        let runningStuck = Task { try await stuckGroup.run() }
        stuck.store(chunk)
        await stuckGroup.triggerGracefulShutdown()
        try await runningStuck.value
        #expect(ContinuousClock.now - started < .seconds(600))
        #expect(stalled.inner.statistics.count == 0)
        // The stuck write goes on once the tier moves again (before its directory is removed).
        stalled.open()
        await stuck.flush()
    }

    @Test("prefetch loads chunks from disk into the CPU tier ahead of use")
    func prefetch() async throws {
        let directory = try TemporaryDirectory("lmcache-manager-prefetch")
        defer { directory.remove() }
        let cpu = try LocalCPUTier(capacity: 16 * 4096, prefault: false)
        let disk = try LocalDiskTier(directory: directory.path, capacity: 1 << 20)
        let manager = StorageManager(cpu: cpu, slowerTiers: [disk])
        let chunks = (0..<3).map { Fixtures.chunk($0) }
        for chunk in chunks { disk.write(chunk) }
        _ = try await manager.withWriteBehind {
            manager.prefetch(chunks.map(\.key))
            await manager.flush()
            for chunk in chunks { #expect(cpu.get(chunk.key)?.contentEquals(chunk) == true) }
            #expect(manager.statistics.prefetched == 3)
        }
    }

    @Test("the configuration builds CPU and disk tiers; a remote URL without a remote factory is an error")
    func fromConfiguration() throws {
        let directory = try TemporaryDirectory("lmcache-manager-config")
        defer { directory.remove() }
        var config = LMCacheConfiguration()
        config.maxLocalCPUSize = 0.001
        config.localDisk = directory.path
        config.maxLocalDiskSize = 0.01
        let manager = try StorageManager(configuration: config, prefault: false)
        #expect(manager.cpu != nil)
        #expect(manager.slowerTiers.map(\.name) == ["disk"])
        config.localCPU = false
        config.maxLocalDiskSize = 0
        #expect(try StorageManager(configuration: config, prefault: false).cpu == nil)
        config.remoteURL = try RemoteURL(parsing: "lm://localhost:65432")
        #expect(throws: StorageError.self) { try StorageManager(configuration: config, prefault: false) }
    }
}
