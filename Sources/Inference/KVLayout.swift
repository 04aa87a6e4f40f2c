public import LMCacheCore

// The engine describes its KV memory with the cache's own `KVLayout` (LMCacheCore): the layout of an
// exported chunk is exactly the cache's chunk layout, `layers × {K, V} × tokens × kvHeads × headDim`.

extension KVLayout {
    /// Floats of one token's K (or V) in one layer.
    public var rowElements: Int { kvHeads * headDim }

    /// Bytes that `tokens` tokens take in this layout with elements of `dtype`.
    public func byteCount(tokens: Int, dtype: KVDType) -> Int {
        layers * 2 * tokens * rowElements * dtype.size
    }

    /// The same shape with another element type.
    public func with(dtype: KVDType) -> KVLayout {
        KVLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
    }
}
