/// Where and how one tensor is stored in a GGUF file.
///
/// The reader has checked the description: the shape has at most four dimensions, each row
/// (`shape[0]` elements) is a whole number of blocks of ``type``, and the data
/// (``offset`` ..< ``offset`` + ``byteCount``) lies inside the file.
public struct GGUFTensorInfo: Sendable, Hashable, CustomStringConvertible {
    /// The tensor's name, such as `blk.0.attn_q.weight`.
    public let name: String
    /// The number of elements along each dimension, innermost (contiguous) first, as ggml's `ne`.
    /// A matrix with `rows` rows of `cols` elements has shape `[cols, rows]`.
    public let shape: [Int]
    /// The element type.
    public let type: GGMLType
    /// The absolute byte offset of the tensor's data in the file (the data section start plus the
    /// tensor's relative offset).
    public let offset: Int
    /// The number of bytes of the tensor's data.
    public let byteCount: Int

    /// Creates a tensor description; ``GGUFFile`` makes these, tests and tools may too.
    public init(name: String, shape: [Int], type: GGMLType, offset: Int, byteCount: Int) {
        self.name = name
        self.shape = shape
        self.type = type
        self.offset = offset
        self.byteCount = byteCount
    }

    /// The total number of elements (the product of ``shape``; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }

    /// The number of elements in one row (`shape[0]`, or 1 for a scalar).
    public var rowLength: Int { shape.first ?? 1 }

    /// The number of rows (the product of all dimensions but the first).
    public var rowCount: Int { shape.dropFirst().reduce(1, *) }

    /// The number of bytes of one row.
    public var rowByteCount: Int { rowLength / type.blockSize * type.typeSize }

    /// `name type[shape] @offset`.
    public var description: String {
        "\(name) \(type)\(shape) @\(offset)+\(byteCount)"
    }
}
