package import LMCacheCore

/// Deterministic chunks for benchmarks and crash tests: chunk `index` always has the same key,
/// tokens and bytes, in every process.
package enum SyntheticChunks {
    package static let model = ModelIdentity(name: "synthetic", fingerprint: "0")

    /// The `index`-th chunk of `tokens` tokens in `layout`.
    package static func chunk(_ index: Int, tokens count: Int, layout: KVLayout) -> KVChunk {
        let tokens = (0..<count).map { Int32(truncatingIfNeeded: (index &* 1_000_003 &+ $0) % 262_144) }
        let keyer = ChunkKeyer(model: model, layout: layout, chunkSize: count)
        let key = keyer.keys(for: tokens)[0]
        let storage = HeapChunkStorage(count: layout.byteCount(tokens: count)) {
            (bytes: UnsafeMutableRawBufferPointer) in
            var state = UInt64(truncatingIfNeeded: index) &* 0x9E37_79B9_7F4A_7C15 | 1
            var offset = 0
            while offset + 8 <= bytes.count {
                state ^= state << 13
                state ^= state >> 7
                state ^= state << 17
                bytes.storeBytes(of: state, toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
            while offset < bytes.count {
                bytes[offset] = UInt8(truncatingIfNeeded: state >> (8 * UInt64(offset % 8)))
                offset += 1
            }
        }
        return KVChunk(key: key, tokens: tokens, layout: layout, storage: storage)
    }
}
