import LMCacheServer
import LMCacheWire
import NIOCore
import Testing

/// The store's value pool: reused extents, exact bytes, the budget kept, and extents held by
/// readers never handed out twice.
@Suite
struct LMValueStorePoolTests {
    static func value(_ seed: Int, count: Int) -> LMStoredValue {
        LMStoredValue(
            payload: ByteBuffer(bytes: randomBytes(seed: UInt64(seed), count: count)),
            format: 1,
            dtype: 2,
            shape: LMShape([2, Int32(seed % 30), 256, 64])
        )
    }

    static func sameBytes(_ a: LMStoredValue?, _ b: LMStoredValue) -> Bool {
        guard let a else { return false }
        return a.payload == b.payload && a.shape == b.shape
    }

    @Test("pooled values come back exactly; the budget holds; removed values return their extents")
    func accountingAndReuse() throws {
        let capacity = 2 << 20
        let store = LMValueStore(capacity: capacity)
        #expect(store._poolUsedBytes == 0)
        var kept: [String: LMStoredValue] = [:]
        for i in 0..<120 {
            let value = Self.value(i, count: LMValueStore.pooledMinimumBytes + (i * 7919) % (200 << 10))
            let key = "k\(i)"
            #expect(store.put(key, value) != .tooLarge)
            kept[key] = value
            let statistics = store.statistics
            #expect(statistics.usedBytes <= capacity)
            #expect(try #require(store._poolUsedBytes) <= capacity)
        }
        #expect(store.statistics.evictions > 0)
        for key in store.keys { #expect(Self.sameBytes(store.get(key), kept[key]!), "\(key)") }
        for key in store.keys { store.remove(key) }
        #expect(store.statistics.usedBytes == 0)
        #expect(store._poolUsedBytes == 0)
    }

    @Test("a value a reader still holds keeps its bytes and its extent after eviction")
    func heldValueSurvivesEviction() throws {
        // Room for three 300 KiB values.
        let store = LMValueStore(capacity: 1 << 20)
        let first = Self.value(1, count: 300 << 10)
        store.put("first", first)
        var held: LMStoredValue? = try #require(store.get("first"))
        // Fill the store many times over: "first" is evicted, its extent stays with `held`.
        for i in 0..<20 { store.put("other\(i)", Self.value(100 + i, count: 300 << 10)) }
        #expect(!store.contains("first"))
        #expect(Self.sameBytes(held, first))
        #expect(try #require(store._poolUsedBytes) == 3 * (300 << 10))
        // The held extent leaves room for two more, not three; they are the newest, intact.
        #expect(store.statistics.count == 2)
        for i in 18..<20 { #expect(Self.sameBytes(store.get("other\(i)"), Self.value(100 + i, count: 300 << 10))) }
        // Once the reader lets go, its extent is reused: three values fit again.
        held = nil
        for i in 20..<23 { store.put("other\(i)", Self.value(100 + i, count: 300 << 10)) }
        #expect(store.statistics.count == 3)
        for i in 20..<23 { #expect(Self.sameBytes(store.get("other\(i)"), Self.value(100 + i, count: 300 << 10))) }
        #expect(store.statistics.usedBytes <= 1 << 20)
    }

    @Test("concurrent writers and readers of pooled values see exact bytes")
    func concurrentUse() async throws {
        let store = LMValueStore(capacity: 4 << 20)
        let values = (0..<24).map { Self.value($0, count: 96 << 10 + $0 * 4096) }
        await withTaskGroup(of: Void.self) { group in
            for worker in 0..<6 {
                group.addTask {
                    for round in 0..<200 {
                        let index = (worker * 5 + round * 7) % values.count
                        if round % 3 == 0 {
                            store.put("v\(index)", values[index])
                        } else if let hit = store.get("v\(index)") {
                            #expect(Self.sameBytes(hit, values[index]))
                        }
                    }
                }
            }
        }
        #expect(store.statistics.usedBytes <= 4 << 20)
        for key in store.keys { store.remove(key) }
        #expect(store._poolUsedBytes == 0)
    }
}
