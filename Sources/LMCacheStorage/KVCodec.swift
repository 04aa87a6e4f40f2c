import CKVCodec
package import LMCacheCore

/// The codecs behind ``KVSerde``: a chunk's float16 KV bytes to a self-describing stream and back
/// (the C library `CKVCodec`).
///
/// Tiers record the codec of every payload they store (0 for the bytes as they are), so a reader
/// decodes whatever a writer chose. Codecs apply to float16 KV only; chunks of other dtypes are
/// stored as they are. Decoding treats the stream as hostile: a stream that is not valid for the
/// layout asked for is refused, never read or written out of bounds.
package enum KVCodec {
    /// The codec id stored for `serde` (0: none).
    package static func id(_ serde: KVSerde) -> UInt32 {
        switch serde {
        case .naive: 0
        case .lossless: UInt32(LMC_KV_LOSSLESS)
        case .q8: UInt32(LMC_KV_Q8)
        case .cachegen: UInt32(LMC_KV_CACHEGEN)
        }
    }

    /// The serde of a stored codec id, or `nil` for an unknown id.
    package static func serde(id: UInt32) -> KVSerde? { KVSerde.allCases.first { Self.id($0) == id } }

    /// Whether `codec` is one of the codecs (not 0).
    package static func isKnown(_ codec: UInt32) -> Bool { codec != 0 && serde(id: codec) != nil }

    /// The preset of the CacheGen-style codec that `cachegen` means.
    package static let cachegenLevel: Int32 = 0

    /// The codec `serde` stores chunks of `layout` with: 0 when it stores them as they are.
    package static func codec(_ serde: KVSerde, for layout: KVLayout) -> UInt32 {
        layout.dtype == .float16 ? id(serde) : 0
    }

    /// The most bytes a stream of `codec` may take for `tokens` tokens of `layout`.
    package static func bound(codec: UInt32, layout: KVLayout, tokens: Int) -> Int {
        lmc_kv_encode_bound(Int32(codec), layout.byteCount(tokens: tokens) / 2)
    }

    /// Presets of the CacheGen-style codec (benchmarks compare them; `cachegen` is ``cachegenLevel``).
    package static let cachegenLevels = 0..<Int32(LMC_KV_CACHEGEN_LEVELS)

    /// Encodes the KV bytes `kv` (`tokens` tokens of float16 `layout`) with `codec` into
    /// `destination` (at least ``bound(codec:layout:tokens:)`` bytes); `level` overrides the
    /// CacheGen-style preset.
    /// - Returns: the stream's length, or `nil` when the codec refused (the caller stores the bytes
    ///   as they are).
    package static func encode(
        _ kv: UnsafeRawBufferPointer,
        codec: UInt32,
        level: Int32? = nil,
        layout: KVLayout,
        tokens: Int,
        into destination: UnsafeMutableRawBufferPointer
    ) -> Int? {
        guard codec != 0, layout.dtype == .float16, kv.count == layout.byteCount(tokens: tokens),
            let source = kv.baseAddress, let target = destination.baseAddress
        else { return nil }
        let level: Int32 = codec == UInt32(LMC_KV_CACHEGEN) ? level ?? cachegenLevel : 0
        let written = lmc_kv_encode(
            Int32(codec), level, source.assumingMemoryBound(to: UInt16.self),
            UInt32(layout.layers), UInt32(tokens), UInt32(layout.kvHeads * layout.headDim), UInt32(layout.headDim),
            target.assumingMemoryBound(to: UInt8.self), destination.count
        )
        return written > 0 ? written : nil
    }

    /// Encodes the KV bytes `kv` with `codec` into a new array; `nil` when the codec refused.
    package static func encode(
        _ kv: UnsafeRawBufferPointer, codec: UInt32, level: Int32? = nil, layout: KVLayout, tokens: Int
    ) -> [UInt8]? {
        let bound = bound(codec: codec, layout: layout, tokens: tokens)
        guard bound > 0 else { return nil }
        var length = 0
        let stream = [UInt8](unsafeUninitializedCapacity: bound) { buffer, count in
            length =
                encode(
                    kv, codec: codec, level: level, layout: layout, tokens: tokens,
                    into: UnsafeMutableRawBufferPointer(buffer)
                ) ?? 0
            count = length
        }
        guard length > 0 else { return nil }
        return stream
    }

    /// Decodes `stream`, which must be a `codec` stream of `tokens` tokens of `layout`, into
    /// `destination` (exactly the layout's bytes). `false` when it is not. `portable` takes the
    /// decoders without SIMD (the same values; tests compare the two).
    package static func decode(
        _ stream: UnsafeRawBufferPointer,
        codec: UInt32,
        layout: KVLayout,
        tokens: Int,
        into destination: UnsafeMutableRawBufferPointer,
        portable: Bool = false
    ) -> Bool {
        guard isKnown(codec), layout.dtype == .float16, destination.count == layout.byteCount(tokens: tokens),
            let source = stream.baseAddress, let target = destination.baseAddress,
            lmc_kv_stream_codec(source.assumingMemoryBound(to: UInt8.self), stream.count) == Int32(codec)
        else { return false }
        return lmc_kv_decode_path(
            source.assumingMemoryBound(to: UInt8.self), stream.count,
            UInt32(layout.layers), UInt32(tokens), UInt32(layout.kvHeads * layout.headDim), UInt32(layout.headDim),
            target.assumingMemoryBound(to: UInt16.self), portable ? 0 : 1
        ) == 0
    }
}
