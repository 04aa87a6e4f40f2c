/// The element type of cached keys and values.
public enum KVDType: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case float16
    case bfloat16
    case float32

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float16, .bfloat16: 2
        case .float32: 4
        }
    }

    /// The dtype code of LMCache's `lm://` protocol (2 float16, 3 bfloat16, 4 float32).
    public var wireCode: Int32 {
        switch self {
        case .float16: 2
        case .bfloat16: 3
        case .float32: 4
        }
    }

    /// The name LMCache gives the dtype in key strings: `half`, `bfloat16`, `float`.
    public var lmcacheName: String {
        switch self {
        case .float16: "half"
        case .bfloat16: "bfloat16"
        case .float32: "float"
        }
    }

    /// Looks a dtype up by its LMCache key name (`half`, `bfloat16`, `float`) or by this type's own
    /// names (`float16`, `bfloat16`, `float32`).
    public init?(keyName: some StringProtocol) {
        switch keyName {
        case "half", "float16": self = .float16
        case "bfloat16": self = .bfloat16
        case "float", "float32": self = .float32
        default: return nil
        }
    }

    /// Looks a dtype up by its `lm://` code; `nil` for codes this project does not store.
    public init?(wireCode: Int32) {
        switch wireCode {
        case 1, 2: self = .float16
        case 3: self = .bfloat16
        case 4: self = .float32
        default: return nil
        }
    }

    public var description: String { rawValue }
}

/// The shape of one chunk's KV in memory, for all layers of a model.
///
/// A chunk of `tokens` tokens is one contiguous object laid out as
/// `layers × 2 (K then V) × tokens × kvHeads × headDim` elements of ``dtype``, row-major:
/// the last index varies fastest. The byte offset of element `(l, kv, t, h, d)` is
/// `((((l * 2 + kv) * tokens + t) * kvHeads + h) * headDim + d) * dtype.size`.
/// All layers share `kvHeads` and `headDim`; a model whose layers differ describes its largest.
public struct KVLayout: Hashable, Sendable, CustomStringConvertible {
    /// Number of transformer layers whose KV is cached.
    public var layers: Int
    /// Number of key/value heads per layer.
    public var kvHeads: Int
    /// Elements per head.
    public var headDim: Int
    /// Element type.
    public var dtype: KVDType

    /// Creates a layout; every count must be positive.
    public init(layers: Int, kvHeads: Int, headDim: Int, dtype: KVDType) {
        precondition(layers > 0 && kvHeads > 0 && headDim > 0, "KVLayout counts must be positive")
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
    }

    /// Bytes of KV one token takes across all layers (K and V).
    public var bytesPerToken: Int { layers * 2 * kvHeads * headDim * dtype.size }

    /// Bytes of a chunk of `tokens` tokens.
    public func byteCount(tokens: Int) -> Int { tokens * bytesPerToken }

    /// ``byteCount(tokens:)`` for a layout and token count read from outside bytes: `nil` when
    /// the product overflows `Int` (each factor may be within its own cap and the product not).
    public func checkedByteCount(tokens: Int) -> Int? {
        var count = tokens
        for factor in [layers, 2, kvHeads, headDim, dtype.size] {
            let (product, overflow) = count.multipliedReportingOverflow(by: factor)
            guard !overflow else { return nil }
            count = product
        }
        return count
    }

    /// A stable text form, part of every chunk key: `"kv1:L18:H1:D256:float16"`.
    public var description: String { "kv1:L\(layers):H\(kvHeads):D\(headDim):\(dtype)" }
}
