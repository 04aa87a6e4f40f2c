import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing

/// The tier contract (`TierContract`, shared with the remote tiers' tests) on the CPU and disk
/// tiers, plus what only a tier with its own budget promises.
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

    @Test("put, get, contains, remove and batches round-trip exact bytes", arguments: Kind.allCases)
    func roundTrip(kind: Kind) async throws {
        let (tier, cleanup) = try Self.make(kind, chunks: 8)
        defer { cleanup() }
        try await TierContract.roundTrip(tier, chunks: (0..<4).map { Fixtures.chunk($0) }, missing: Fixtures.chunk(99))
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
        try await TierContract.concurrent(tier, chunks: (0..<48).map { Fixtures.chunk($0) })
    }
}
