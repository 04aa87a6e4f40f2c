package import LMCacheCore

/// The one byte form of a stored record, on disk (one file per record, ``LocalDiskTier``) and on
/// the wire (the value of an `lm://`, Redis or peer tier, `KVChunkFrame`): a self-checking header,
/// then the payload.
///
/// A record is of one of two kinds:
///
/// - **a KV chunk**: its token ids, its layout, the model's name, and as payload the KV bytes
///   (codec 0) or their encoded stream (``KVCodec``: 1 lossless, 2 q8, 3 cachegen);
/// - **a value** of the `lm://` server (``LMDiskStore`` in `LMCacheServer`): the string key a client
///   stored it under, the format, dtype and shape its PUT named, and as payload its bytes.
///
/// All integers little-endian:
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `LMKV` |
/// | 4 | 2 | version, 3 |
/// | 6 | 2 | kind: 1 KV chunk, 2 value |
/// | 8 | 4 | header length *H*: the bytes before the payload |
/// | 12 | 4 | name length *m* |
/// | 16 | 16 | hash (low, then high 64 bits): the chunk's key, or the hash of the value's key |
/// | 32 | 8 | payload length |
/// | 40 | 8 | payload checksum (``ChunkChecksum/payload(_:)``, over the payload as stored) |
/// | 48 | 8 | header checksum: ``ChunkChecksum/metadata(_:)`` of bytes 0..<80+*m*+4*n* with this field zero |
/// | 56 | 24 | a KV chunk: token count *n*, layers, KV heads, head size, dtype (the `lm://` code: 2 float16, 3 bfloat16, 4 float32), codec; a value: format, dtype, shape (4), as its PUT named them (*n* = 0) |
/// | 80 | *m* | name (UTF-8): a KV chunk's model name, a value's key |
/// | 80+*m* | 4*n* | token ids (int32) |
/// | … | | zeros up to *H* |
/// | *H* | payload length | the payload |
///
/// On disk *H* is a multiple of 4096, so that the payload can be read with `O_DIRECT` into
/// page-aligned memory; on the wire it is exactly 80+*m*+4*n*. Earlier versions (disk files
/// `LMCKVDSK` 1 and 2, frames `LMKV` 1 and 2) are not read: a disk tier deletes such files when it
/// starts, and a remote tier treats such values as misses, so their chunks are computed again and
/// stored over.
package enum ChunkFormat {
    static let magic: UInt32 = 0x564B_4D4C  // "LMKV" read as a little-endian UInt32
    package static let version: UInt16 = 3
    /// Bytes before the name.
    package static let fixedSize = 80
    /// The header length's multiple on disk.
    package static let diskAlignment = 4096
    /// Longest token run and name a header may declare; anything larger is corrupt.
    package static let maxTokens = 1 << 20
    static let maxNameBytes = 4096
    /// The most payload bytes a header may declare.
    static let maxPayloadBytes = 1 << 40
    static let fileExtension = ".lmkv"
    static let temporaryPrefix = ".tmp-"
    /// The magic of disk files before version 3 (`LMCKVDSK` read as a little-endian UInt64).
    static let earlierDiskMagic: UInt64 = 0x4B53_4456_4B43_4D4C

    /// What a record holds.
    package enum Content: Equatable, Sendable {
        /// A KV chunk: its tokens, layout and model name, and the codec of its payload (0: the KV bytes as they are).
        case kv(tokens: [Int32], layout: KVLayout, modelName: String, codec: UInt32)
        /// A value of the `lm://` server.
        case value(ValueDescription)

        var kind: UInt16 {
            switch self {
            case .kv: 1
            case .value: 2
            }
        }
        var name: String {
            switch self {
            case .kv(_, _, let modelName, _): modelName
            case .value(let description): description.key
            }
        }
        var tokenCount: Int {
            if case .kv(let tokens, _, _, _) = self { tokens.count } else { 0 }
        }
    }

    /// A value's key and the description its PUT gave it.
    package struct ValueDescription: Equatable, Sendable {
        package var key: String
        package var format: Int32
        package var dtype: Int32
        package var shape: [Int32]

        package init(key: String, format: Int32, dtype: Int32, shape: [Int32]) {
            precondition(shape.count == 4, "a value's shape has four extents")
            self.key = key
            self.format = format
            self.dtype = dtype
            self.shape = shape
        }
    }

    /// The index key of a value record: its hash with zero tokens, which no chunk has.
    package static func valueKey(_ hash: ChunkHash) -> CacheKey {
        CacheKey(hash: hash, tokenCount: 0, modelName: "", dtype: .float16)
    }

    /// The file name of a record: `<hash>-<tokens>.lmkv`.
    static func fileName(for key: CacheKey) -> String { "\(key.hash)-\(key.tokenCount)\(fileExtension)" }

    /// The header's length for `content`: the bytes it uses, rounded up to `alignment`.
    package static func headerLength(of content: Content, alignment: Int) -> Int {
        let used = fixedSize + content.name.utf8.count + 4 * content.tokenCount
        return (used + alignment - 1) / alignment * alignment
    }

    /// Writes the header of a record into `buffer` (exactly its header length, from
    /// ``headerLength(of:alignment:)``; the padding is zeroed here).
    package static func writeHeader(
        hash: ChunkHash,
        content: Content,
        payloadLength: Int,
        payloadChecksum: UInt64,
        into buffer: UnsafeMutableRawBufferPointer
    ) {
        let name = Array(content.name.utf8)
        let used = fixedSize + name.count + 4 * content.tokenCount
        precondition(buffer.count >= used)
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        }
        put(magic, at: 0)
        put(version, at: 4)
        put(content.kind, at: 6)
        put(UInt32(buffer.count), at: 8)
        put(UInt32(name.count), at: 12)
        put(hash.low, at: 16)
        put(hash.high, at: 24)
        put(UInt64(payloadLength), at: 32)
        put(payloadChecksum, at: 40)
        switch content {
        case .kv(let tokens, let layout, _, let codec):
            for (i, field) in [
                UInt32(tokens.count), UInt32(layout.layers), UInt32(layout.kvHeads), UInt32(layout.headDim),
                UInt32(bitPattern: layout.dtype.wireCode), codec,
            ].enumerated() {
                put(field, at: 56 + 4 * i)
            }
            for (i, token) in tokens.enumerated() { put(token, at: fixedSize + name.count + 4 * i) }
        case .value(let description):
            for (i, field) in ([description.format, description.dtype] + description.shape).enumerated() {
                put(field, at: 56 + 4 * i)
            }
        }
        for (i, byte) in name.enumerated() { buffer[fixedSize + i] = byte }
        put(ChunkChecksum.metadata(UnsafeRawBufferPointer(rebasing: buffer[0..<used])), at: 48)
    }

    /// What a valid header says.
    package struct Header: Sendable {
        package var hash: ChunkHash
        package var content: Content
        package var headerLength: Int
        package var payloadLength: Int
        package var payloadChecksum: UInt64

        /// The key the record is indexed under: a chunk's key, or ``ChunkFormat/valueKey(_:)``.
        package var key: CacheKey {
            switch content {
            case .kv(let tokens, let layout, let modelName, _):
                CacheKey(hash: hash, tokenCount: tokens.count, modelName: modelName, dtype: layout.dtype)
            case .value:
                ChunkFormat.valueKey(hash)
            }
        }
    }

    /// The header length a header declares, for readers that read the fixed part first; `nil` when
    /// the bytes are too short or not a header of this version.
    static func declaredHeaderLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 12, bytes.loadUnaligned(as: UInt32.self).littleEndian == magic else { return nil }
        return Int(UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
    }

    /// The longest header any record may have.
    static let maxHeaderLength = fixedSize + maxNameBytes + 4 * maxTokens + diskAlignment

    /// Parses and checks a header.
    /// - Parameters:
    ///   - bytes: At least the whole header (the first *H* bytes of the record).
    ///   - recordSize: The record's size (header and payload): a file's size, a frame's length.
    ///   - alignment: The multiple the header length must be rounded to: 4096 on disk, 1 on the wire.
    /// - Returns: The header, or why it is not a valid one.
    package static func parseHeader(
        _ bytes: UnsafeRawBufferPointer,
        recordSize: Int,
        alignment: Int
    ) -> Result<Header, ChunkFormatError> {
        func read<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        guard bytes.count >= 8 else { return .failure("shorter than a header") }
        guard read(UInt32.self, at: 0) == magic else {
            return .failure(read(UInt64.self, at: 0) == earlierDiskMagic ? .earlier("a chunk file of an earlier format") : "bad magic")
        }
        let recordVersion = read(UInt16.self, at: 4)
        guard recordVersion == version else {
            return .failure(recordVersion < version ? .earlier("format version \(recordVersion)") : "unsupported format version \(recordVersion)")
        }
        guard bytes.count >= fixedSize else { return .failure("shorter than a header") }
        let kind = read(UInt16.self, at: 6)
        guard kind == 1 || kind == 2 else { return .failure("unknown record kind \(kind)") }
        let headerLength = Int(read(UInt32.self, at: 8))
        let nameBytes = Int(read(UInt32.self, at: 12))
        let tokenCount = kind == 1 ? Int(read(UInt32.self, at: 56)) : 0
        guard nameBytes <= maxNameBytes, tokenCount <= maxTokens, kind == 2 || tokenCount > 0 else {
            return .failure("absurd token count \(tokenCount) or name length \(nameBytes)")
        }
        let used = fixedSize + nameBytes + 4 * tokenCount
        guard headerLength == (used + alignment - 1) / alignment * alignment, headerLength <= bytes.count else {
            return .failure("header length \(headerLength) inconsistent")
        }
        var copy = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[0..<used]))
        for i in 48..<56 { copy[i] = 0 }
        guard copy.withUnsafeBytes({ ChunkChecksum.metadata($0) }) == read(UInt64.self, at: 48) else {
            return .failure("header checksum mismatch")
        }
        let payloadLength = read(UInt64.self, at: 32)
        guard payloadLength <= UInt64(maxPayloadBytes), UInt64(headerLength) + payloadLength == UInt64(recordSize) else {
            return .failure("payload length \(payloadLength) does not match the record's size \(recordSize)")
        }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[fixedSize..<(fixedSize + nameBytes)]), as: UTF8.self)
        let fields = (0..<6).map { read(UInt32.self, at: 56 + 4 * $0) }
        let content: Content
        if kind == 1 {
            guard let layout = layout(fields), let expected = layout.checkedByteCount(tokens: tokenCount),
                expected <= maxPayloadBytes
            else { return .failure("invalid KV layout") }
            let codec = fields[5]
            let plausible =
                codec == 0
                ? payloadLength == UInt64(expected)
                : KVCodec.isKnown(codec) && layout.dtype == .float16
                    && payloadLength <= UInt64(KVCodec.bound(codec: codec, layout: layout, tokens: tokenCount))
            guard plausible else {
                return .failure("payload length \(payloadLength) does not match the layout (codec \(codec))")
            }
            let tokens = (0..<tokenCount).map { read(Int32.self, at: fixedSize + nameBytes + 4 * $0) }
            content = .kv(tokens: tokens, layout: layout, modelName: name, codec: codec)
        } else {
            let signed = fields.map { Int32(bitPattern: $0) }
            content = .value(ValueDescription(key: name, format: signed[0], dtype: signed[1], shape: Array(signed[2...])))
        }
        return .success(
            Header(
                hash: ChunkHash(low: read(UInt64.self, at: 16), high: read(UInt64.self, at: 24)),
                content: content,
                headerLength: headerLength,
                payloadLength: Int(payloadLength),
                payloadChecksum: read(UInt64.self, at: 40)
            )
        )
    }

    /// The layout that a KV chunk's fields (count, layers, heads, head size, dtype) name, within
    /// the format's caps; `nil` when invalid.
    private static func layout(_ fields: [UInt32]) -> KVLayout? {
        let (layers, kvHeads, headDim) = (Int(fields[1]), Int(fields[2]), Int(fields[3]))
        guard (1...(1 << 12)).contains(layers), (1...(1 << 12)).contains(kvHeads), (1...(1 << 16)).contains(headDim),
            let dtype = KVDType(wireCode: Int32(bitPattern: fields[4]))
        else { return nil }
        return KVLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
    }

    /// The header of `chunk`'s file, as the disk tier writes it (a seed for `lmcache-fuzz disk-chunk`).
    package static func headerBytes(of chunk: KVChunk) -> [UInt8] {
        let content = Content.kv(tokens: chunk.tokens, layout: chunk.layout, modelName: chunk.key.modelName, codec: 0)
        var bytes = [UInt8](repeating: 0, count: headerLength(of: content, alignment: diskAlignment))
        chunk.withUnsafeBytes { payload in
            bytes.withUnsafeMutableBytes {
                writeHeader(hash: chunk.key.hash, content: content, payloadLength: payload.count,
                    payloadChecksum: ChunkChecksum.payload(payload), into: $0)
            }
        }
        return bytes
    }
}

/// Why a record's header was rejected.
package struct ChunkFormatError: Error, ExpressibleByStringInterpolation, CustomStringConvertible {
    package var description: String
    /// The record is of an earlier version of the format: not corrupt, just no longer read.
    package var isEarlierFormat = false
    package init(stringLiteral value: String) { description = value }
    init(_ value: String) { description = value }

    static func earlier(_ description: String) -> ChunkFormatError {
        var error = ChunkFormatError(description)
        error.isEarlierFormat = true
        return error
    }
}
