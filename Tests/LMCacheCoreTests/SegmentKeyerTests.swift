import LMCacheCore
import Testing

@Suite("Segment keys (blending)")
struct SegmentKeyerTests {
    static let model = ModelIdentity(name: "gemma-3-270m", fingerprint: "0123abcd")
    static let layout = KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float16)
    static let separator: [Int32] = [-1, -2]

    static func tokens(_ count: Int, seed: Int32) -> [Int32] {
        (0..<Int32(count)).map { ($0 &* 7919 &+ seed) % 262_144 }
    }

    @Test(
        "segments lie between separators; empty ones are dropped",
        arguments: [
            ([1, 2, -1, -2, 3], [0..<2, 4..<5]),
            ([-1, -2, 1, -1, -2, -1, -2, 2, 3, -1], [2..<3, 7..<10]),
            ([1, -1, 2], [0..<3]),
            ([-1, -2], []),
            ([], []),
        ] as [([Int32], [Range<Int>])]
    )
    func segments(tokens: [Int32], expected: [Range<Int>]) {
        #expect(SegmentKeyer.segments(of: tokens, separator: Self.separator) == expected)
        #expect(SegmentKeyer.segments(of: [4, 5], separator: []) == [0..<2])
    }

    @Test("a segment's keys do not depend on the text before it, and differ from prefix keys")
    func independentOfPrecedingText() {
        let keyer = SegmentKeyer(model: Self.model, layout: Self.layout, chunkSize: 64, saveUnfullChunk: true)
        let document = Self.tokens(150, seed: 3)
        let a = Self.tokens(10, seed: 1) + Self.separator + document
        let b = Self.tokens(77, seed: 2) + Self.separator + Self.tokens(5, seed: 9) + Self.separator + document
        let inA = keyer.chunks(for: a, segment: 12..<162)
        let inB = keyer.chunks(for: b, segment: 86..<236)
        #expect(inA.map(\.key) == inB.map(\.key))
        #expect(inA.map(\.range) == [12..<76, 76..<140, 140..<162])
        #expect(inB.map(\.range) == [86..<150, 150..<214, 214..<236])
        // The same tokens as a prompt's prefix have other keys: the two kinds never collide.
        let prefix = ChunkKeyer(model: Self.model, layout: Self.layout, chunkSize: 64, saveUnfullChunk: true)
        #expect(Set(prefix.keys(for: document)).isDisjoint(with: inA.map(\.key)))
        // A different document, or the same one under another model or layout, gets other keys.
        #expect(keyer.chunks(for: Self.tokens(150, seed: 4), segment: 0..<150).map(\.key) != inA.map(\.key))
        let other = SegmentKeyer(
            model: ModelIdentity(name: "gemma-3-270m", fingerprint: "ffff"),
            layout: Self.layout,
            chunkSize: 64,
            saveUnfullChunk: true
        )
        #expect(other.chunks(for: document, segment: 0..<150).first?.key != inA.first?.key)
    }

    @Test("tenant salts separate segment keys, position records and stored KV")
    func salts() {
        let document = Self.tokens(128, seed: 5)
        let plain = SegmentKeyer(model: Self.model, layout: Self.layout, chunkSize: 64)
        let alice = SegmentKeyer(model: Self.model, layout: Self.layout, chunkSize: 64, salt: "alice")
        let bob = SegmentKeyer(model: Self.model, layout: Self.layout, chunkSize: 64, salt: "bob")
        let keys = [plain, alice, bob].map { $0.chunks(for: document, segment: 0..<128).map(\.key) }
        #expect(Set(keys.flatMap { $0 }).count == 6)
        let records = zip([plain, alice, bob], keys).map { $0.positionKey(for: $1[0]) }
        #expect(Set(records).count == 3)
    }

    @Test("the KV key names the stored position; a position record round-trips and rejects other bytes")
    func positions() {
        let keyer = SegmentKeyer(model: Self.model, layout: Self.layout, chunkSize: 64)
        let chunk = keyer.chunks(for: Self.tokens(64, seed: 6), segment: 0..<64)[0]
        #expect(keyer.kvKey(for: chunk.key, position: 10) != keyer.kvKey(for: chunk.key, position: 11))
        #expect(keyer.kvKey(for: chunk.key, position: 10).tokenCount == 64)
        #expect(keyer.positionKey(for: chunk.key) != chunk.key)
        for position in [0, 1, 4097, Int(Int32.max)] {
            let bytes = SegmentPositionRecord.encode(position)
            #expect(bytes.count == SegmentPositionRecord.layout.byteCount(tokens: 1))
            #expect(bytes.withUnsafeBytes { SegmentPositionRecord.decode($0) } == position)
        }
        var corrupt = SegmentPositionRecord.encode(5)
        corrupt[6] ^= 0xFF
        #expect(corrupt.withUnsafeBytes { SegmentPositionRecord.decode($0) } == nil)
        #expect([UInt8](repeating: 0, count: 4).withUnsafeBytes { SegmentPositionRecord.decode($0) } == nil)
    }
}
