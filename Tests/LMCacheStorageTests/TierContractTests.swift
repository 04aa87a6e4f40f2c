import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing

/// One contract, every tier: the same behaviour from the CPU tier, the disk tier and (as they
/// land) the remote tiers against real servers.
@Suite("Tier contract")
struct TierContractTests {
    enum Kind: String, CaseIterable, CustomTestStringConvertible {
        case cpu, disk, diskDirect
        var testDescription: String { rawValue }
    }

    /// A tier of `kind` that holds about `chunks` fixture chunks, and a cleanup.
    static func make(_ kind: Kind, chunks: Int) throws -> (any StorageTier, () -> Void) {
        switch kind {
        case .cpu:
            return (try LocalCPUTier(capacity: chunks * 4096, prefault: false), {})
        case .disk:
            let directory = try TemporaryDirectory("lmcache-disk-contract")
            // A fixture chunk's file: a 4096-byte header and 2048 bytes of KV.
            let tier = try LocalDiskTier(directory: directory.path, capacity: chunks * 6144)
            return (tier, { directory.remove() })
        case .diskDirect:
            let directory = try TemporaryDirectory("lmcache-disk-direct-contract")
            let tier = try LocalDiskTier(directory: directory.path, capacity: chunks * 6144, directIO: true)
            return (tier, { directory.remove() })
        }
    }

    @Test("put, get, contains and remove round-trip exact bytes", arguments: Kind.allCases)
    func roundTrip(kind: Kind) async throws {
        let (tier, cleanup) = try Self.make(kind, chunks: 8)
        defer { cleanup() }
        let chunks = (0..<4).map { Fixtures.chunk($0) }
        for chunk in chunks { #expect(try await tier.put(chunk)) }
        for chunk in chunks {
            #expect(await tier.contains(chunk.key))
            let hit = try #require(try await tier.get(chunk.key))
            #expect(hit.contentEquals(chunk) && hit.key == chunk.key)
        }
        #expect(try await tier.get(Fixtures.chunk(99).key) == nil)
        #expect(await tier.remove(chunks[1].key))
        #expect(await !tier.contains(chunks[1].key))
        #expect(try await tier.get(chunks[1].key) == nil)
        #expect(await !tier.remove(chunks[1].key))
        #expect(await tier.contains(chunks.map(\.key)) == [true, false, true, true])
    }

    @Test("eviction keeps the tier within its budget and keeps the newest chunks", arguments: Kind.allCases)
    func evictionUnderBudget(kind: Kind) async throws {
        let (tier, cleanup) = try Self.make(kind, chunks: 5)
        defer { cleanup() }
        let chunks = (0..<20).map { Fixtures.chunk($0) }
        for chunk in chunks { #expect(try await tier.put(chunk)) }
        let present = await tier.contains(chunks.map(\.key))
        #expect(present.filter { $0 }.count == 5)
        #expect(Array(present.suffix(5)) == [true, true, true, true, true])
        for chunk in chunks.suffix(5) {
            #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true)
        }
    }

    @Test("concurrent puts and gets from many tasks return exact bytes", arguments: Kind.allCases)
    func concurrentAccess(kind: Kind) async throws {
        let (tier, cleanup) = try Self.make(kind, chunks: 24)
        defer { cleanup() }
        let chunks = (0..<48).map { Fixtures.chunk($0) }
        let hits = try await withThrowingTaskGroup(of: Int.self) { group in
            for worker in 0..<6 {
                group.addTask {
                    var hits = 0
                    for round in 0..<60 {
                        let chunk = chunks[(worker * 11 + round * 5) % chunks.count]
                        if round % 2 == 0 {
                            try await tier.put(chunk)
                        } else if let hit = try await tier.get(chunk.key) {
                            #expect(hit.contentEquals(chunk))
                            hits += 1
                        }
                    }
                    return hits
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(hits > 0)
    }
}
