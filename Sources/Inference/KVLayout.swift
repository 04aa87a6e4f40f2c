/// The shape of a model's KV memory: what the cache layer needs to store and load chunks.
///
/// Exported KV bytes are laid out as `layers × {K, V} × tokens × kvHeads × headDim` little-endian
/// values of ``dtype``.
public struct KVLayout: Sendable, Hashable, CustomStringConvertible {
    /// Element type of stored keys and values.
    public enum DType: String, Sendable, Hashable, CaseIterable {
        /// IEEE 754 single precision.
        case float32
        /// IEEE 754 half precision. The engine rounds K and V to half precision by default (as llama.cpp
        /// does), so exporting them as float16 loses nothing.
        case float16

        /// Bytes per element.
        public var size: Int {
            switch self {
            case .float32: 4
            case .float16: 2
            }
        }
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
    public var elementSize: Int { dtype.size }

    /// Floats of one token's K (or V) in one layer.
    public var rowElements: Int { kvHeads * headDim }

    /// Bytes that `tokens` tokens take in the exported layout, in `dtype` (default: the layout's).
    public func byteCount(tokens: Int, dtype: DType? = nil) -> Int {
        layers * 2 * tokens * rowElements * (dtype ?? self.dtype).size
    }

    public var description: String { "\(layers) layers × {K,V} × kv_heads \(kvHeads) × head_dim \(headDim) \(dtype.rawValue)" }
}
