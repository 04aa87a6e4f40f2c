/// The shape of a model's KV memory: what the cache layer needs to store and load chunks.
///
/// Exported KV bytes are laid out as `layers × {K, V} × tokens × kvHeads × headDim` little-endian
/// values of ``dtype``.
public struct KVLayout: Sendable, Hashable, CustomStringConvertible {
    /// Element type of stored keys and values.
    public enum DType: String, Sendable, Hashable {
        /// IEEE 754 single precision.
        case float32
    }

    /// Number of transformer layers.
    public var layers: Int
    /// Key/value heads per layer.
    public var kvHeads: Int
    /// Values per head.
    public var headDim: Int
    /// Element type.
    public var dtype: DType

    /// A layout.
    public init(layers: Int, kvHeads: Int, headDim: Int, dtype: DType = .float32) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
    }

    /// Bytes of one element.
    public var elementSize: Int { 4 }

    /// Floats of one token's K (or V) in one layer.
    public var rowElements: Int { kvHeads * headDim }

    /// Bytes that `tokens` tokens take in the exported layout.
    public func byteCount(tokens: Int) -> Int { layers * 2 * tokens * rowElements * elementSize }

    public var description: String { "\(layers) layers × {K,V} × kv_heads \(kvHeads) × head_dim \(headDim) \(dtype.rawValue)" }
}
