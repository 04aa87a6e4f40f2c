package import LMCacheCore
package import LMCacheStorage
internal import Synchronization

/// The behaviour every ``StorageTier`` that stores chunks owes its callers, as checks that each test
/// target runs against its own tiers (CPU, disk, `lm://`, Redis, Redis Cluster): one contract, not a
/// copy per tier. A check throws ``Violation`` naming what broke.
package enum TierContract {
    /// A broken promise of the contract.
    package struct Violation: Error, CustomStringConvertible {
        package let description: String
    }

    /// `put` then `get`, `contains` and `remove` round-trip exact bytes, tokens and keys; a key never
    /// stored reads as a miss; the batched `contains` and `get` agree with the single ones. `chunks`
    /// (at least 2) must fit in the tier at once; `missing` is never stored. A tier whose protocol has
    /// no delete (`lm://`) passes `removable: false`: its `remove` must then report `false` and keep
    /// the chunk.
    package static func roundTrip(
        _ tier: any StorageTier,
        chunks: [KVChunk],
        missing: KVChunk,
        removable: Bool = true
    ) async throws {
        precondition(chunks.count >= 2, "the round trip needs two chunks or more")
        for (index, chunk) in chunks.enumerated() {
            try check(try await tier.put(chunk), "put of chunk \(index) was declined")
        }
        for (index, chunk) in chunks.enumerated() {
            try check(await tier.contains(chunk.key), "chunk \(index) is not contained after its put")
            let hit = try await tier.get(chunk.key)
            try check(hit != nil, "chunk \(index) is a miss after its put")
            try check(hit!.key == chunk.key && hit!.tokens == chunk.tokens, "chunk \(index) came back with another key or tokens")
            try check(hit!.contentEquals(chunk), "chunk \(index) came back with other bytes")
        }
        try check(try await tier.get(missing.key) == nil, "a key never stored is a hit")
        try check(await !tier.contains(missing.key), "a key never stored is contained")

        if removable {
            try check(await tier.remove(chunks[1].key), "remove of a stored chunk reported it absent")
            try check(await !tier.contains(chunks[1].key), "a removed chunk is still contained")
            try check(try await tier.get(chunks[1].key) == nil, "a removed chunk is still a hit")
            try check(await !tier.remove(chunks[1].key), "a second remove reported the chunk present")
        } else {
            try check(await !tier.remove(chunks[1].key), "a tier without delete reported a remove")
            try check(await tier.contains(chunks[1].key), "a tier without delete lost a chunk on remove")
        }

        // Batches: the same answers as one key at a time, every hit once, at its index.
        let keys = chunks.map(\.key) + [missing.key]
        var expected = keys.map { _ in true }
        expected[1] = !removable
        expected[keys.count - 1] = false
        try check(await tier.contains(keys) == expected, "batched contains differs from the single answers")
        let received = Mutex<[Int: KVChunk]>([:])
        let repeated = Mutex(false)
        await tier.get(keys) { index, chunk in
            received.withLock { if $0.updateValue(chunk, forKey: index) != nil { repeated.withLock { $0 = true } } }
        }
        let hits = received.withLock { $0 }
        try check(!repeated.withLock { $0 }, "a batched get handed over a chunk twice")
        try check(Set(hits.keys) == Set(expected.indices.filter { expected[$0] }), "a batched get found other chunks")
        for (index, hit) in hits {
            try check(hit.key == keys[index] && hit.contentEquals(chunks[index]), "batched get: chunk \(index) differs")
        }

        // Promotion into a CPU tier: the same hits, in order, now held by the CPU tier; a chunk asked
        // for with other tokens is never served (and is removed where the tier can remove).
        let bytes = chunks.reduce(0) { $0 + $1.byteCount }
        let cpu = try LocalCPUTier(capacity: 2 * bytes + (1 << 20), prefault: false)
        let tokens = chunks.map(\.tokens) + [missing.tokens]
        let promoted = await tier.promote(keys, verifying: tokens, into: cpu)
        try check(promoted.count == keys.count, "promote returned \(promoted.count) answers for \(keys.count) keys")
        for index in keys.indices {
            guard let hit = promoted[index] else {
                try check(!expected[index], "promote missed chunk \(index)")
                continue
            }
            try check(expected[index], "promote found chunk \(index), which is not stored")
            try check(hit.key == keys[index] && hit.contentEquals(chunks[index]), "promote: chunk \(index) differs")
            try check(cpu.contains(keys[index]), "promote did not put chunk \(index) into the CPU tier")
        }
        let other = chunks[0].tokens.map { $0 &+ 1 }
        let refused = await tier.promote([chunks[0].key], verifying: [other], into: cpu)
        try check(refused.count == 1 && refused[0] == nil, "promote served a chunk asked for with other tokens")
        if removable {
            try check(await !tier.contains(chunks[0].key), "a chunk found with other tokens was not removed")
        }
    }

    /// Puts and gets of overlapping chunks from `workers` tasks at once never return wrong bytes, and
    /// some gets hit. `chunks` should fit in the tier at once.
    package static func concurrent(
        _ tier: any StorageTier,
        chunks: [KVChunk],
        workers: Int = 6,
        rounds: Int = 60
    ) async throws {
        let hits = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var hits = 0
                    for round in 0..<rounds {
                        let chunk = chunks[(worker * 11 + round * 5) % chunks.count]
                        if round % 2 == 0 {
                            try await tier.put(chunk)
                        } else if let hit = try await tier.get(chunk.key) {
                            try check(hit.contentEquals(chunk), "a concurrent get returned other bytes")
                            hits += 1
                        }
                    }
                    return hits
                }
            }
            return try await group.reduce(0, +)
        }
        try check(hits > 0, "no concurrent get hit")
    }

    private static func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
        guard condition else { throw Violation(description: message()) }
    }
}
