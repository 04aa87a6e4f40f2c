import CChecksum
package import LMCacheCore

/// The on-disk form of one chunk: a self-checking header, then the KV bytes (version 1) or their
/// encoded stream (version 2, written when the tier's serde is not `naive`).
///
/// All integers little-endian. The payload starts at `headerLength`, a multiple of 4096, so that
/// it can be read with O_DIRECT into page-aligned memory.
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 8 | magic `LMCKVDSK` |
/// | 8 | 4 | format version (1 or 2) |
/// | 12 | 4 | header length *H* (multiple of 4096) |
/// | 16 | 16 | chunk hash (low, high) |
/// | 32 | 4 | token count *n* |
/// | 36 | 4 | layers |
/// | 40 | 4 | KV heads |
/// | 44 | 4 | head size |
/// | 48 | 4 | dtype (the `lm://` dtype code) |
/// | 52 | 4 | model-name length *m* |
/// | 56 | 8 | payload length (version 1: the layout's KV bytes; version 2: the stream's bytes) |
/// | 64 | 8 | payload checksum (``ChunkChecksum/payload(_:)``, over the payload as stored) |
/// | 72 | 8 | header checksum (``ChunkChecksum/metadata(_:)``: XXH64 of bytes 0..<*F*+m+4n with this field zero) |
/// | 80 | 4 | version 2 only: the serde's codec (``KVCodec``: 1 lossless, 2 q8, 3 cachegen) |
/// | 84 | 4 | version 2 only: reserved, 0 |
/// | *F* | *m* | model name (UTF-8); *F* is 80 in version 1, 88 in version 2 |
/// | *F*+*m* | 4*n* | token ids (int32) |
/// | … | | zero padding up to *H* |
/// | *H* | payload length | KV bytes, laid out as ``KVLayout`` says, or their encoded stream |
package enum DiskChunkFormat {
    static let magic: UInt64 = 0x4B53_4456_4B43_4D4C  // "LMCKVDSK" read as a little-endian UInt64
    /// The version of files whose payload is the KV bytes as they are.
    static let version: UInt32 = 1
    /// The version of files whose payload is an encoded stream.
    static let encodedVersion: UInt32 = 2
    static let fixedHeaderSize = 80
    static let encodedFixedHeaderSize = 88

    static func fixedSize(codec: UInt32) -> Int { codec == 0 ? fixedHeaderSize : encodedFixedHeaderSize }
    static let alignment = 4096
    /// Longest token run and name a header may declare; anything larger is corrupt.
    static let maxTokens = 1 << 20
    static let maxNameBytes = 4096
    static let fileExtension = ".lmkv"
    static let temporaryPrefix = ".tmp-"

    /// The file name of a chunk: `<hash>-<tokens>.lmkv`.
    static func fileName(for key: CacheKey) -> String { "\(key.hash)-\(key.tokenCount)\(fileExtension)" }

    static func headerLength(tokens: Int, nameBytes: Int, codec: UInt32 = 0) -> Int {
        let used = fixedSize(codec: codec) + nameBytes + 4 * tokens
        return (used + alignment - 1) / alignment * alignment
    }

    /// The header of `chunk`'s file, stored as it is (a seed for `lmcache-fuzz disk-chunk`).
    package static func headerBytes(of chunk: KVChunk) -> [UInt8] {
        let length = headerLength(tokens: chunk.tokens.count, nameBytes: chunk.key.modelName.utf8.count)
        var bytes = [UInt8](repeating: 0, count: length)
        chunk.withUnsafeBytes { payload in
            bytes.withUnsafeMutableBytes {
                writeHeader(key: chunk.key, tokens: chunk.tokens, layout: chunk.layout, payloadLength: payload.count,
                    payloadChecksum: ChunkChecksum.payload(payload), into: $0)
            }
        }
        return bytes
    }

    /// Writes the header of `chunk` into `buffer` (which has `headerLength` bytes, zeroed).
    package static func writeHeader(
        key: CacheKey,
        tokens: [Int32],
        layout: KVLayout,
        codec: UInt32 = 0,
        payloadLength: Int,
        payloadChecksum: UInt64,
        into buffer: UnsafeMutableRawBufferPointer
    ) {
        let name = Array(key.modelName.utf8)
        let fixed = fixedSize(codec: codec)
        let used = fixed + name.count + 4 * tokens.count
        precondition(buffer.count >= used)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            buffer.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        }
        put(magic, at: 0)
        put(codec == 0 ? version : encodedVersion, at: 8)
        put(UInt32(buffer.count), at: 12)
        put(key.hash.low, at: 16)
        put(key.hash.high, at: 24)
        put(UInt32(tokens.count), at: 32)
        put(UInt32(layout.layers), at: 36)
        put(UInt32(layout.kvHeads), at: 40)
        put(UInt32(layout.headDim), at: 44)
        put(UInt32(bitPattern: layout.dtype.wireCode), at: 48)
        put(UInt32(name.count), at: 52)
        put(UInt64(payloadLength), at: 56)
        put(payloadChecksum, at: 64)
        if codec != 0 { put(codec, at: 80) }
        for (i, byte) in name.enumerated() { buffer[fixed + i] = byte }
        for (i, token) in tokens.enumerated() { put(token, at: fixed + name.count + 4 * i) }
        let checksum = ChunkChecksum.metadata(UnsafeRawBufferPointer(rebasing: buffer[0..<used]))
        put(checksum, at: 72)
    }

    /// What a valid header says.
    package struct Header {
        var key: CacheKey
        var tokens: [Int32]
        var layout: KVLayout
        var headerLength: Int
        var payloadLength: Int
        var payloadChecksum: UInt64
        /// The codec of the payload (``KVCodec``); 0 when it is the KV bytes as they are.
        var codec: UInt32
    }

    /// Parses and checks a header; `nil` with a reason when it is not a valid version-1 header.
    /// `bytes` must hold at least the whole header (the first `headerLength` bytes of the file).
    package static func parseHeader(_ bytes: UnsafeRawBufferPointer, fileSize: Int) -> Result<Header, DiskFormatError> {
        func read<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        guard bytes.count >= fixedHeaderSize else { return .failure("file shorter than a header") }
        guard read(UInt64.self, at: 0) == magic else { return .failure("not a chunk file (bad magic)") }
        let fileVersion = read(UInt32.self, at: 8)
        guard fileVersion == version || fileVersion == encodedVersion else {
            return .failure("unsupported format version \(fileVersion)")
        }
        let fixed = fileVersion == version ? fixedHeaderSize : encodedFixedHeaderSize
        guard bytes.count >= fixed else { return .failure("file shorter than a header") }
        let codec = fileVersion == version ? 0 : read(UInt32.self, at: 80)
        guard fileVersion == version || (KVCodec.isKnown(codec) && read(UInt32.self, at: 84) == 0) else {
            return .failure("unknown payload codec \(codec)")
        }
        let headerLength = Int(read(UInt32.self, at: 12))
        let tokenCount = Int(read(UInt32.self, at: 32))
        let nameBytes = Int(read(UInt32.self, at: 52))
        guard tokenCount > 0, tokenCount <= maxTokens, nameBytes <= maxNameBytes else {
            return .failure("absurd token count \(tokenCount) or name length \(nameBytes)")
        }
        guard headerLength == Self.headerLength(tokens: tokenCount, nameBytes: nameBytes, codec: codec),
            headerLength <= bytes.count
        else { return .failure("header length \(headerLength) inconsistent") }
        let used = fixed + nameBytes + 4 * tokenCount
        var copy = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[0..<used]))
        for i in 72..<80 { copy[i] = 0 }
        let checksum = copy.withUnsafeBytes { ChunkChecksum.metadata($0) }
        guard checksum == read(UInt64.self, at: 72) else { return .failure("header checksum mismatch") }
        let layers = Int(read(UInt32.self, at: 36))
        let kvHeads = Int(read(UInt32.self, at: 40))
        let headDim = Int(read(UInt32.self, at: 44))
        guard layers > 0, kvHeads > 0, headDim > 0, layers <= 1 << 12, kvHeads <= 1 << 12, headDim <= 1 << 16,
            let dtype = KVDType(wireCode: Int32(bitPattern: read(UInt32.self, at: 48)))
        else { return .failure("invalid KV layout") }
        let layout = KVLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
        let payloadLength = read(UInt64.self, at: 56)
        // The caps allow a product of exactly 2^63 bytes (a header with a valid checksum, made by hand).
        guard let byteCount = layout.checkedByteCount(tokens: tokenCount), byteCount <= 1 << 40 else {
            return .failure("KV layout too large")
        }
        let expected = UInt64(byteCount)
        let plausible =
            codec == 0
            ? payloadLength == expected
            : layout.dtype == .float16 && payloadLength <= UInt64(KVCodec.bound(codec: codec, layout: layout, tokens: tokenCount))
        guard plausible, UInt64(headerLength) + payloadLength == UInt64(fileSize) else {
            return .failure("payload length \(payloadLength) does not match the layout or the file size")
        }
        let name = String(
            decoding: UnsafeRawBufferPointer(rebasing: bytes[fixed..<(fixed + nameBytes)]),
            as: UTF8.self
        )
        let tokens = (0..<tokenCount).map { read(Int32.self, at: fixed + nameBytes + 4 * $0) }
        let hash = ChunkHash(low: read(UInt64.self, at: 16), high: read(UInt64.self, at: 24))
        return .success(
            Header(
                key: CacheKey(hash: hash, tokenCount: tokenCount, modelName: name, dtype: dtype),
                tokens: tokens,
                layout: layout,
                headerLength: headerLength,
                payloadLength: Int(payloadLength),
                payloadChecksum: read(UInt64.self, at: 64),
                codec: codec
            )
        )
    }
}

/// Why a chunk file was rejected.
package struct DiskFormatError: Error, ExpressibleByStringInterpolation, CustomStringConvertible {
    package var description: String
    package init(stringLiteral value: String) { description = value }
    init(_ value: String) { description = value }
}
