public import LMCacheCore

// The engine keeps keys and values in the cache's own layout description (`LMCacheCore.KVLayout`),
// always as float32, so that chunks move between `SequenceKV` and the tiers without conversion.

extension KVLayout {
    /// The layout of an engine sequence: `layers × {K, V} × tokens × kvHeads × headDim` float32 values.
    public static func engine(layers: Int, kvHeads: Int, headDim: Int) -> KVLayout {
        KVLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: .float32)
    }
}
