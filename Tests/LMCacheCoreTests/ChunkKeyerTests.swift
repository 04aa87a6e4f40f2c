import LMCacheCore
import Testing

@Suite("Chunk keys")
struct ChunkKeyerTests {
    static let model = ModelIdentity(name: "gemma-3-270m", fingerprint: "0123abcd")
    static let layout = KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float16)

    static func tokens(_ count: Int, seed: Int32 = 7) -> [Int32] {
        (0..<Int32(count)).map { ($0 &* 7919 &+ seed) % 262_144 }
    }

    @Test("full chunks get keys; a trailing partial chunk only with save_unfull_chunk")
    func partialChunkRule() {
        let keyer = ChunkKeyer(model: Self.model, layout: Self.layout, chunkSize: 256)
        let chunks = keyer.chunks(for: Self.tokens(600))
        #expect(chunks.map(\.range) == [0..<256, 256..<512])
        #expect(keyer.chunks(for: Self.tokens(255)).isEmpty)
        #expect(keyer.chunks(for: []).isEmpty)

        let unfull = ChunkKeyer(model: Self.model, layout: Self.layout, chunkSize: 256, saveUnfullChunk: true)
        let withTail = unfull.chunks(for: Self.tokens(600))
        #expect(withTail.map(\.range) == [0..<256, 256..<512, 512..<600])
        #expect(withTail.last?.key.tokenCount == 88)
        // The full chunks' keys do not depend on the partial-chunk setting.
        #expect(Array(withTail.prefix(2)) == chunks)
        // A partial chunk and the full chunk that extends it are different keys.
        let longer = unfull.chunks(for: Self.tokens(700))
        #expect(longer[2].key != withTail[2].key)
        #expect(unfull.chunks(for: Self.tokens(512)).count == 2)
    }

    @Test("changing one token in chunk 3 changes the keys of chunks 3… only")
    func chaining() {
        let keyer = ChunkKeyer(model: Self.model, layout: Self.layout, chunkSize: 16)
        var tokens = Self.tokens(16 * 8)
        let before = keyer.keys(for: tokens)
        tokens[3 * 16 + 5] &+= 1
        let after = keyer.keys(for: tokens)
        #expect(before.count == 8 && after.count == 8)
        for index in 0..<3 { #expect(before[index] == after[index]) }
        for index in 3..<8 { #expect(before[index] != after[index]) }
    }

    @Test("the same text after a different prefix gets different keys")
    func prefixMatters() {
        let keyer = ChunkKeyer(model: Self.model, layout: Self.layout, chunkSize: 16)
        let a = Self.tokens(16, seed: 1) + Self.tokens(16, seed: 3)
        let b = Self.tokens(16, seed: 2) + Self.tokens(16, seed: 3)
        #expect(keyer.keys(for: a)[1] != keyer.keys(for: b)[1])
    }

    @Test("salts, models and KV formats separate keys")
    func separation() {
        let tokens = Self.tokens(512)
        let base = ChunkKeyer(model: Self.model, layout: Self.layout).keys(for: tokens)
        let variants: [ChunkKeyer] = [
            ChunkKeyer(model: Self.model, layout: Self.layout, salt: "tenant-a"),
            ChunkKeyer(model: Self.model, layout: Self.layout, salt: "tenant-b"),
            ChunkKeyer(model: Self.model, layout: Self.layout, salt: ""),
            ChunkKeyer(model: ModelIdentity(name: "gemma-3-270m", fingerprint: "ffff"), layout: Self.layout),
            ChunkKeyer(model: ModelIdentity(name: "other", fingerprint: "0123abcd"), layout: Self.layout),
            ChunkKeyer(model: Self.model, layout: KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float32)),
            ChunkKeyer(model: Self.model, layout: KVLayout(layers: 17, kvHeads: 1, headDim: 256, dtype: .float16)),
        ]
        var seen: Set<ChunkHash> = Set(base.map(\.hash))
        for keyer in variants {
            let keys = keyer.keys(for: tokens)
            #expect(keys.count == base.count)
            for key in keys {
                #expect(seen.insert(key.hash).inserted, "hash reused across \(keyer.model) \(keyer.salt ?? "-")")
            }
        }
        // Same inputs, same keys.
        #expect(
            ChunkKeyer(model: Self.model, layout: Self.layout, salt: "tenant-a").keys(for: tokens)
                == variants[0].keys(for: tokens)
        )
    }

    @Test("keys print in LMCache's model@world@worker@hash@dtype form and parse back")
    func textForm() throws {
        let keyer = ChunkKeyer(model: ModelIdentity(name: "google/gemma 3@x", fingerprint: "1"), layout: Self.layout)
        let key = try #require(keyer.keys(for: Self.tokens(256)).first)
        let text = key.description
        #expect(text.hasPrefix("google/gemma_3_x@1@0@"))
        #expect(text.hasSuffix("@half"), "LMCache spells float16 as half in keys")
        #expect(CacheKey(parsing: String(text.dropLast("half".count)) + "float16", tokenCount: 256) == key)
        #expect(text.utf8.count <= 150)
        #expect(CacheKey(parsing: text, tokenCount: 256) == key)
        #expect(CacheKey(parsing: "a@b@0@00@float16", tokenCount: 256) == nil)
        let long = ChunkKeyer(
            model: ModelIdentity(name: String(repeating: "m", count: 500), fingerprint: "1"),
            layout: Self.layout
        )
        #expect(try #require(long.keys(for: Self.tokens(256)).first).description.utf8.count <= 150)
    }

    @Test("keys are pinned: a change of hashing is a change of format")
    func pinnedValue() throws {
        // Stored chunks outlive processes and releases. If this fails, every chunk that every
        // user stored becomes unreachable: change hashing only on purpose, with a new root
        // version string, and say so in the release notes.
        let keyer = ChunkKeyer(model: Self.model, layout: Self.layout, chunkSize: 4)
        let keys = keyer.keys(for: [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(
            keys.map(\.hash.description) == ["799b504e7af227910622642296c1447e", "9377b8cdeb4037e9c9b09c913cb0d642"]
        )
        let first = [Int32](arrayLiteral: 1, 2, 3, 4).withUnsafeBufferPointer {
            ChunkKeyer.chainedHash(parent: keyer.root, tokens: $0)
        }
        #expect(keys[0].hash == first)
    }
}
