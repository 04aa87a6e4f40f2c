import LMCacheCore

/// Chunks with known, distinct contents for tier tests.
enum Fixtures {
    static let model = ModelIdentity(name: "test-model", fingerprint: "f00d")
    /// 2 layers × {K,V} × tokens × 1 head × 8 dims of f32: 128 bytes per token.
    static let layout = KVLayout(layers: 2, kvHeads: 1, headDim: 8, dtype: .float32)

    /// The `index`-th chunk of a synthetic prompt, `tokens` tokens long, with bytes derived from `index`.
    static func chunk(_ index: Int, tokens count: Int = 16, layout: KVLayout = layout) -> KVChunk {
        let tokens = (0..<count).map { Int32(truncatingIfNeeded: index &* 1_000_003 &+ $0) }
        let keyer = ChunkKeyer(model: model, layout: layout, chunkSize: count)
        let key = keyer.keys(for: tokens)[0]
        let storage = HeapChunkStorage(count: layout.byteCount(tokens: count)) {
            (bytes: UnsafeMutableRawBufferPointer) in
            for i in 0..<bytes.count { bytes[i] = UInt8(truncatingIfNeeded: i &* 31 &+ index &* 7 &+ 1) }
        }
        return KVChunk(key: key, tokens: tokens, layout: layout, storage: storage)
    }
}
