/// A GGUF model file (format versions 2 and 3), read through a read-only memory map.
///
/// The initializer parses and checks the whole header: metadata, tensor descriptions and the
/// layout of the data section. Every count, length, offset and shape is treated as hostile input;
/// a file that is truncated or inconsistent throws a ``GGUFError`` naming the problem.
/// Tensor data is not copied: ``withBytes(of:_:)`` hands out the mapped bytes.
///
/// The object is immutable and `Sendable`. The mapping stays at one address for the life of the
/// object and is unmapped in `deinit`, so a pointer obtained from ``withBytes(of:_:)`` stays valid
/// while the `GGUFFile` is alive (keep it alive with `withExtendedLifetime` or a stored reference).
///
/// ```swift
/// let file = try GGUFFile(contentsOf: path)
/// let layers = file.int("gemma3.block_count")            // 18
/// if let embedding = file.tensor(named: "token_embd.weight") {
///     file.withBytes(of: embedding) { bytes in print(bytes.count) }
/// }
/// ```
public final class GGUFFile: Sendable {
    /// The largest number of dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
    public static let maxDimensions = 4
    /// The longest tensor name accepted, in bytes (ggml's `GGML_MAX_NAME` less its terminator).
    public static let maxTensorNameLength = 63
    /// The deepest nesting of arrays inside arrays that the reader accepts.
    public static let maxArrayNestingDepth = 4
    /// The alignment of tensor data when the file has no `general.alignment` key.
    public static let defaultAlignment = 32

    /// The format version (2 or 3).
    public let version: UInt32
    /// All metadata, by key.
    public let metadata: [String: GGUFValue]
    /// The metadata keys in the order they appear in the file.
    public let metadataKeys: [String]
    /// Tensor descriptions, in file order.
    public let tensors: [GGUFTensorInfo]
    /// The alignment of tensor data, from `general.alignment` or ``defaultAlignment``.
    public let alignment: Int
    /// The absolute file offset where the data section (the first tensor's data) starts.
    public let dataOffset: Int

    private let tensorIndex: [String: Int]
    private let mapping: MappedFile

    /// Opens, maps and checks the GGUF file at `path`.
    /// - Parameter path: A file system path.
    /// - Throws: ``GGUFError`` when the file cannot be read or is not a valid GGUF v2/v3 file.
    /// - Complexity: O(size of the header), plus the kernel's cost of mapping the file. Tensor
    ///   data is not read.
    public init(contentsOf path: String) throws(GGUFError) {
        let mapping = try MappedFile(path: path)
        let header = unsafe try Header(parsing: mapping.bytes)
        self.version = header.version
        self.metadata = header.metadata
        self.metadataKeys = header.metadataKeys
        self.tensors = header.tensors
        self.alignment = header.alignment
        self.dataOffset = header.dataOffset
        self.tensorIndex = header.tensorIndex
        self.mapping = mapping
    }

    /// The size of the file in bytes.
    public var fileSize: Int { unsafe mapping.bytes.count }

    /// The description of the tensor called `name`, or `nil` when the file has none.
    /// - Complexity: O(1) on average.
    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// Calls `body` with the mapped bytes of a tensor's data.
    ///
    /// The buffer has exactly `tensor.byteCount` bytes and is read-only. Its address is stable
    /// for the life of this object.
    /// - Parameters:
    ///   - tensor: A tensor description from this file's ``tensors``.
    ///   - body: A closure that reads the bytes.
    /// - Returns: What `body` returns.
    /// - Precondition: `tensor` lies inside this file (it is one of this file's tensors).
    public func withBytes<R, E: Error>(
        of tensor: GGUFTensorInfo,
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        let bytes = unsafe mapping.bytes
        precondition(
            tensor.offset >= 0 && tensor.byteCount >= 0 && tensor.byteCount <= bytes.count
                && tensor.offset <= bytes.count - tensor.byteCount,
            "tensor '\(tensor.name)' does not lie inside this GGUF file"
        )
        // Safe: the range was checked above to lie inside the mapping, which outlives this call.
        return unsafe try body(
            UnsafeRawBufferPointer(rebasing: bytes[tensor.offset..<(tensor.offset + tensor.byteCount)])
        )
    }

    /// Calls `body` with a tensor's data as a `RawSpan`: the safe, bounds-checked view of
    /// ``withBytes(of:_:)``.
    ///
    /// ```swift
    /// let first = file.withSpan(of: norm) { $0.unsafeLoad(as: Float.self) }
    /// ```
    /// - Precondition: `tensor` lies inside this file (it is one of this file's tensors).
    public func withSpan<R, E: Error>(of tensor: GGUFTensorInfo, _ body: (RawSpan) throws(E) -> R) throws(E) -> R {
        // Safe: the span borrows the mapping only for the duration of `body`.
        try unsafe withBytes(of: tensor) { (bytes) throws(E) -> R in try body(unsafe bytes.bytes) }
    }

    /// Asks the operating system to start reading the whole file into memory in the background,
    /// so that the first pass over the weights does not wait on page faults. Only a hint.
    public func prefetch() {
        mapping.adviseWillNeed()
    }

    /// Calls `body` with all bytes of the file (read-only, stable address for the life of the object).
    public func withFileBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        unsafe try body(mapping.bytes)
    }
}

// MARK: - Parsing

extension GGUFFile {
    /// Parses and checks a GGUF header held in memory (`lmcache-fuzz gguf`), with the checks a
    /// file gets; tensor data is not read.
    /// - Throws: ``GGUFError`` when the bytes are not a valid GGUF v2/v3 header.
    package static func checkHeader(_ bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        _ = unsafe try Header(parsing: bytes)
    }
}

/// The parsed header of a GGUF file; all checks happen here.
private struct Header {
    var version: UInt32 = 0
    var metadata: [String: GGUFValue] = [:]
    var metadataKeys: [String] = []
    var tensors: [GGUFTensorInfo] = []
    var tensorIndex: [String: Int] = [:]
    var alignment = GGUFFile.defaultAlignment
    var dataOffset = 0

    init(parsing bytes: UnsafeRawBufferPointer) throws(GGUFError) {
        var cursor = unsafe ByteCursor(bytes)

        // Magic and version.
        try cursor.require(4, "the magic number")
        let magic = try cursor.read(UInt32.self, "the magic number")
        guard magic == 0x4655_4747 else {  // "GGUF" read as a little-endian UInt32
            throw GGUFError(
                .badMagic,
                "file does not start with 'GGUF' (found 0x\(String(magic, radix: 16)))",
                offset: 0
            )
        }
        let version = try cursor.read(UInt32.self, "the format version")
        guard version == 2 || version == 3 else {
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                throw GGUFError(
                    .unsupportedVersion,
                    "file is big-endian (version \(version.byteSwapped)); only little-endian files are supported",
                    offset: 4
                )
            }
            throw GGUFError(.unsupportedVersion, "format version \(version) is not supported (2 or 3 are)", offset: 4)
        }
        self.version = version

        // Counts, each capped by what the rest of the file could possibly hold.
        let tensorCountOffset = cursor.offset
        let rawTensorCount = try cursor.read(UInt64.self, "the tensor count")
        let kvCountOffset = cursor.offset
        let rawKVCount = try cursor.read(UInt64.self, "the metadata count")
        // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
        let minTensorInfoSize = 24
        // A metadata entry takes at least 8 (key length) + 4 (type) + 1 (smallest value) bytes.
        let minKVSize = 13
        guard let tensorCount = Int(exactly: rawTensorCount), tensorCount <= cursor.remaining / minTensorInfoSize else {
            throw GGUFError(
                .limitExceeded,
                "tensor count \(rawTensorCount) is more than the \(cursor.remaining) remaining bytes can describe",
                offset: tensorCountOffset
            )
        }
        guard let kvCount = Int(exactly: rawKVCount), kvCount <= cursor.remaining / minKVSize else {
            throw GGUFError(
                .limitExceeded,
                "metadata count \(rawKVCount) is more than the \(cursor.remaining) remaining bytes can hold",
                offset: kvCountOffset
            )
        }

        // Metadata.
        metadata.reserveCapacity(kvCount)
        metadataKeys.reserveCapacity(kvCount)
        for index in 0..<kvCount {
            let keyOffset = cursor.offset
            let key = try cursor.readString("the key of metadata entry \(index)")
            let typeOffset = cursor.offset
            let rawType = try cursor.read(UInt32.self, "the value type of '\(key)'")
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw GGUFError(
                    .invalidValueType,
                    "metadata '\(key)' has unknown value type \(rawType)",
                    offset: typeOffset
                )
            }
            let value = try Self.readValue(of: type, key: key, depth: 0, cursor: &cursor)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw GGUFError(.duplicateKey, "metadata key '\(key)' appears more than once", offset: keyOffset)
            }
            metadataKeys.append(key)
        }

        // Alignment.
        if let value = metadata["general.alignment"] {
            guard case .uint32(let raw) = value, raw > 0, raw & (raw - 1) == 0 else {
                throw GGUFError(
                    .invalidAlignment,
                    "'general.alignment' must be a uint32 power of two, found \(value)"
                )
            }
            alignment = Int(raw)
        }

        // Tensor descriptions (offsets still relative to the data section).
        var relative: [(offset: Int, byteCount: Int, infoOffset: Int)] = []
        relative.reserveCapacity(tensorCount)
        tensors.reserveCapacity(tensorCount)
        tensorIndex.reserveCapacity(tensorCount)
        for index in 0..<tensorCount {
            let infoOffset = cursor.offset
            let name = try cursor.readString("the name of tensor \(index)", maxLength: GGUFFile.maxTensorNameLength)
            let dimsOffset = cursor.offset
            let dimensionCount = try cursor.read(UInt32.self, "the dimension count of tensor '\(name)'")
            guard dimensionCount <= GGUFFile.maxDimensions else {
                throw GGUFError(
                    .invalidTensorInfo,
                    "tensor '\(name)' has \(dimensionCount) dimensions; at most \(GGUFFile.maxDimensions) are allowed",
                    offset: dimsOffset
                )
            }
            var shape: [Int] = []
            shape.reserveCapacity(Int(dimensionCount))
            var elementCount = 1
            for axis in 0..<Int(dimensionCount) {
                let dimOffset = cursor.offset
                let raw = try cursor.read(Int64.self, "dimension \(axis) of tensor '\(name)'")
                guard raw >= 0, let dim = Int(exactly: raw) else {
                    throw GGUFError(
                        .invalidTensorInfo,
                        "tensor '\(name)' has negative size \(raw) in dimension \(axis)",
                        offset: dimOffset
                    )
                }
                let (product, overflow) = elementCount.multipliedReportingOverflow(by: dim)
                guard !overflow else {
                    throw GGUFError(
                        .invalidTensorInfo,
                        "the element count of tensor '\(name)' overflows (shape so far \(shape + [dim]))",
                        offset: dimOffset
                    )
                }
                elementCount = product
                shape.append(dim)
            }
            let typeOffset = cursor.offset
            let rawType = try cursor.read(UInt32.self, "the type of tensor '\(name)'")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError(
                    .unknownTensorType,
                    "tensor '\(name)' has unknown type id \(rawType)",
                    offset: typeOffset
                )
            }
            let rowLength = shape.first ?? 1
            guard rowLength % type.blockSize == 0, let byteCount = type.byteCount(elements: elementCount) else {
                throw GGUFError(
                    .invalidTensorInfo,
                    "tensor '\(name)' of type \(type) has rows of \(rowLength) elements, "
                        + "not a whole number of \(type.blockSize)-element blocks (or its size overflows)",
                    offset: typeOffset
                )
            }
            let offsetOffset = cursor.offset
            let rawOffset = try cursor.read(UInt64.self, "the data offset of tensor '\(name)'")
            guard let offset = Int(exactly: rawOffset) else {
                throw GGUFError(
                    .tensorOutOfBounds,
                    "tensor '\(name)' has data offset \(rawOffset) beyond any file",
                    offset: offsetOffset
                )
            }
            guard offset % alignment == 0 else {
                throw GGUFError(
                    .tensorOutOfBounds,
                    "tensor '\(name)' has data offset \(offset), not a multiple of the alignment \(alignment)",
                    offset: offsetOffset
                )
            }
            guard tensorIndex.updateValue(index, forKey: name) == nil else {
                throw GGUFError(.duplicateTensor, "tensor name '\(name)' appears more than once", offset: infoOffset)
            }
            relative.append((offset, byteCount, infoOffset))
            // Placeholder with the relative offset; fixed up once the data section start is known.
            tensors.append(GGUFTensorInfo(name: name, shape: shape, type: type, offset: offset, byteCount: byteCount))
        }

        // The data section starts at the next multiple of the alignment.
        let headerEnd = cursor.offset
        let (padded, padOverflow) = headerEnd.addingReportingOverflow(alignment - 1)
        guard !padOverflow else {
            throw GGUFError(.limitExceeded, "data section offset overflows", offset: headerEnd)
        }
        dataOffset = padded - padded % alignment
        if tensorCount > 0, dataOffset > bytes.count {
            throw GGUFError(
                .truncated,
                "file ends before the data section, which starts at \(dataOffset) (file has \(bytes.count) bytes)",
                offset: bytes.count
            )
        }

        // Every tensor's data lies inside the file, and no two overlap.
        let dataSize = bytes.count - min(dataOffset, bytes.count)
        for (index, entry) in relative.enumerated() {
            let name = tensors[index].name
            guard entry.byteCount <= dataSize, entry.offset <= dataSize - entry.byteCount else {
                throw GGUFError(
                    .tensorOutOfBounds,
                    "data of tensor '\(name)' (\(entry.byteCount) bytes at data offset \(entry.offset)) extends past "
                        + "the end of the file (data section has \(dataSize) bytes; is the file truncated?)",
                    offset: entry.infoOffset
                )
            }
            let t = tensors[index]
            // Cannot overflow: entry.offset + dataOffset <= bytes.count (checked above).
            tensors[index] = GGUFTensorInfo(
                name: t.name,
                shape: t.shape,
                type: t.type,
                offset: dataOffset + entry.offset,
                byteCount: t.byteCount
            )
        }
        let byStart = tensors.indices.sorted { tensors[$0].offset < tensors[$1].offset }
        for (previous, next) in zip(byStart, byStart.dropFirst()) {
            let a = tensors[previous]
            let b = tensors[next]
            // Cannot overflow: both ranges lie inside the file.
            if a.byteCount > 0, b.byteCount > 0, a.offset + a.byteCount > b.offset {
                throw GGUFError(
                    .tensorOverlap,
                    "data of tensor '\(a.name)' overlaps data of tensor '\(b.name)'",
                    offset: b.offset
                )
            }
        }
    }

    /// Reads one metadata value of type `type`, checking every length against the file.
    static func readValue(
        of type: GGUFValueType,
        key: String,
        depth: Int,
        cursor: inout ByteCursor
    )
        throws(GGUFError) -> GGUFValue
    {
        switch type {
        case .uint8: return .uint8(try cursor.read(UInt8.self, "the value of '\(key)'"))
        case .int8: return .int8(try cursor.read(Int8.self, "the value of '\(key)'"))
        case .uint16: return .uint16(try cursor.read(UInt16.self, "the value of '\(key)'"))
        case .int16: return .int16(try cursor.read(Int16.self, "the value of '\(key)'"))
        case .uint32: return .uint32(try cursor.read(UInt32.self, "the value of '\(key)'"))
        case .int32: return .int32(try cursor.read(Int32.self, "the value of '\(key)'"))
        case .uint64: return .uint64(try cursor.read(UInt64.self, "the value of '\(key)'"))
        case .int64: return .int64(try cursor.read(Int64.self, "the value of '\(key)'"))
        case .float32: return .float32(try cursor.readFloat("the value of '\(key)'"))
        case .float64: return .float64(try cursor.readDouble("the value of '\(key)'"))
        case .bool:
            let offset = cursor.offset
            let raw = try cursor.read(UInt8.self, "the value of '\(key)'")
            guard raw <= 1 else {
                throw GGUFError(
                    .invalidValue,
                    "boolean '\(key)' has byte value \(raw) (0 or 1 expected)",
                    offset: offset
                )
            }
            return .bool(raw == 1)
        case .string:
            return .string(try cursor.readString("the string value of '\(key)'"))
        case .array:
            return .array(try readArray(key: key, depth: depth + 1, cursor: &cursor))
        }
    }

    /// Reads an array (element type, count, elements), capping the count by the bytes left.
    static func readArray(key: String, depth: Int, cursor: inout ByteCursor) throws(GGUFError) -> GGUFArray {
        let start = cursor.offset
        guard depth <= GGUFFile.maxArrayNestingDepth else {
            throw GGUFError(
                .limitExceeded,
                "arrays in '\(key)' are nested deeper than \(GGUFFile.maxArrayNestingDepth) levels",
                offset: start
            )
        }
        let rawType = try cursor.read(UInt32.self, "the element type of array '\(key)'")
        guard let elementType = GGUFValueType(rawValue: rawType) else {
            throw GGUFError(
                .invalidValueType,
                "array '\(key)' has unknown element type \(rawType)",
                offset: start
            )
        }
        let countOffset = cursor.offset
        let rawCount = try cursor.read(UInt64.self, "the element count of array '\(key)'")
        guard let count = Int(exactly: rawCount), count <= cursor.remaining / elementType.minimumEncodedSize else {
            throw GGUFError(
                .limitExceeded,
                "array '\(key)' claims \(rawCount) \(elementType) elements; the \(cursor.remaining) bytes left "
                    + "cannot hold them",
                offset: countOffset
            )
        }
        let what = "the elements of array '\(key)'"
        switch elementType {
        case .uint8: return .uint8(try cursor.readArray(of: UInt8.self, count: count, what))
        case .int8: return .int8(try cursor.readArray(of: Int8.self, count: count, what))
        case .uint16: return .uint16(try cursor.readArray(of: UInt16.self, count: count, what))
        case .int16: return .int16(try cursor.readArray(of: Int16.self, count: count, what))
        case .uint32: return .uint32(try cursor.readArray(of: UInt32.self, count: count, what))
        case .int32: return .int32(try cursor.readArray(of: Int32.self, count: count, what))
        case .uint64: return .uint64(try cursor.readArray(of: UInt64.self, count: count, what))
        case .int64: return .int64(try cursor.readArray(of: Int64.self, count: count, what))
        case .float32: return .float32(try cursor.readArray(of: Float.self, count: count, what))
        case .float64: return .float64(try cursor.readArray(of: Double.self, count: count, what))
        case .bool:
            let elementsOffset = cursor.offset
            let raw = try cursor.readArray(of: UInt8.self, count: count, what)
            if let bad = raw.firstIndex(where: { $0 > 1 }) {
                throw GGUFError(
                    .invalidValue,
                    "element \(bad) of boolean array '\(key)' has byte value \(raw[bad]) (0 or 1 expected)",
                    offset: elementsOffset + bad
                )
            }
            return .bool(raw.map { $0 == 1 })
        case .string:
            var strings: [String] = []
            strings.reserveCapacity(count)
            for index in 0..<count {
                strings.append(try cursor.readString("element \(index) of array '\(key)'"))
            }
            return .string(strings)
        case .array:
            var arrays: [GGUFArray] = []
            arrays.reserveCapacity(count)
            for _ in 0..<count {
                arrays.append(try readArray(key: key, depth: depth + 1, cursor: &cursor))
            }
            return .array(arrays)
        }
    }
}
