import LMCacheCore
import LMCacheStorage
import Synchronization
import Testing

/// The CPU tier's change observer: what a P2P instance reports to its controller.
struct LocalCPUTierObserverTests {
    final class Recorder: Sendable {
        let events = Mutex<[(admitted: [CacheKey], removed: [CacheKey])]>([])
        var admitted: [CacheKey] { events.withLock { $0.flatMap(\.admitted) } }
        var removed: [CacheKey] { events.withLock { $0.flatMap(\.removed) } }
    }

    @Test("stores, evictions and removals are reported after they happen; duplicates and declines are not")
    func reports() throws {
        // Room for four chunks of 16 tokens × 128 bytes (each rounded up to a 4 KiB extent).
        let tier = try LocalCPUTier(capacity: 4 * 4096, policy: .fifo, prefault: false)
        let early = Fixtures.chunk(100)
        tier.put(early)
        let recorder = Recorder()
        tier.observeChanges { admitted, removed in recorder.events.withLock { $0.append((admitted, removed)) } }
        #expect(tier.keys == [early.key])  // what was there before observing is read, not reported

        let chunks = (0..<5).map { Fixtures.chunk($0) }
        for chunk in chunks[..<3] { #expect(tier.put(chunk)) }
        #expect(!tier.put(chunks[0]))  // already present: no event
        #expect(recorder.admitted == chunks[..<3].map(\.key))
        #expect(recorder.removed.isEmpty)

        // Full: each further chunk evicts the oldest (FIFO), the early one first.
        #expect(tier.put(chunks[3]))
        #expect(recorder.removed == [early.key])
        #expect(tier.put(chunks[4]))
        #expect(recorder.removed == [early.key, chunks[0].key])
        #expect(recorder.admitted.last == chunks[4].key)

        #expect(tier.remove(chunks[1].key))
        #expect(!tier.remove(chunks[1].key))
        #expect(recorder.removed == [early.key, chunks[0].key, chunks[1].key])
        tier.removeAll()
        #expect(Set(recorder.removed) == Set([early.key] + chunks.map(\.key)))
        #expect(tier.keys.isEmpty)

        // Stopped: nothing more is reported.
        tier.observeChanges(nil)
        let count = recorder.events.withLock { $0.count }
        tier.put(chunks[0])
        #expect(recorder.events.withLock { $0.count } == count)
    }
}
