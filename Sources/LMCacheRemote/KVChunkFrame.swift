public import LMCacheCore
public import NIOCore
import LMCacheStorage

/// The payload framing our remote tier puts around a ``KVChunk`` in an `lm://` value.
///
/// LMCache's protocol carries opaque bytes plus a format, a dtype and a shape; our chunks also
/// need their token ids (checked on every hit) and their exact layout. So the value is a
/// self-describing frame, 64 header bytes, then the tokens, then the KV bytes
/// (all integers little-endian):
///
/// | offset | size | field |
/// |---|---|---|
/// | 0 | 4 | magic `LMKV` |
/// | 4 | 2 | version, 2 |
/// | 6 | 2 | header size, 64 |
/// | 8 | 4 | token count |
/// | 12 | 4 | layers |
/// | 16 | 4 | KV heads |
/// | 20 | 4 | head size |
/// | 24 | 4 | dtype, as its `lm://` code (2 float16, 3 bfloat16, 4 float32) |
/// | 28 | 4 | payload codec: 0 the KV bytes as they are, else the ``KVSerde``'s codec (1 lossless, 2 q8, 3 cachegen) |
/// | 32 | 8 | payload byte count (the KV bytes, or their encoded stream) |
/// | 40 | 16 | the chunk hash (low, then high 64 bits) |
/// | 56 | 8 | checksum (``ChunkChecksum``, as the disk tier's): XXH64 of bytes 0..<56, the tokens and the payload's checksum |
/// | 64 | 4 × tokens | token ids, `int32` |
/// | … | payload byte count | the KV bytes, laid out as ``KVLayout`` says, or their encoded stream |
///
/// The `lm://` header of such a PUT describes the value as LMCache describes opaque bytes:
/// format ``wireFormat`` (LMCache's `BINARY`), dtype ``wireDType`` (`uint8`) and shape
/// `[value length, 0, 0, 0]`, so LMCache's own server stores it like any other value. Decoding
/// checks every field against the key asked for and the checksum against the bytes; a value that fails any check (another client's
/// value, a truncated or corrupted one) decodes to `nil`, which the tier reports as a miss. So is a
/// frame of version 1 (written before 2026-12-05, with a checksum of its own): such values are
/// computed again and stored over.
public enum KVChunkFrame {
    /// Bytes before the tokens.
    public static let headerSize = 64
    /// The frame's version (1 had a checksum of its own; its frames are misses).
    public static let version: UInt16 = 2
    /// The `lm://` format code our frames are stored with: LMCache's `MemoryFormat.BINARY`.
    /// (LMCache's server rejects format codes it does not know.)
    public static let wireFormat: Int32 = 4
    /// The `lm://` dtype code our frames are stored with: `uint8`.
    public static let wireDType: Int32 = 6
    /// The most tokens a frame may declare.
    public static let maximumTokens = 1 << 20
    /// The most KV bytes a frame may describe (an `lm://` value is at most 2^31 - 1 bytes).
    public static let maximumKVBytes = 1 << 34
    private static let magic: UInt32 = 0x564B_4D4C  // "LMKV" read as a little-endian UInt32.

    /// The frame header and the tokens of `chunk`, for `payload` (the chunk's KV bytes, or their
    /// `codec` stream), which follows them on the wire.
    public static func prefix(
        of chunk: KVChunk,
        codec: UInt32 = 0,
        payload: UnsafeRawBufferPointer,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: headerSize + 4 * chunk.tokens.count)
        let layout = chunk.layout
        buffer.writeInteger(magic, endianness: .little)
        buffer.writeInteger(version, endianness: .little)
        buffer.writeInteger(UInt16(headerSize), endianness: .little)
        buffer.writeInteger(UInt32(chunk.tokens.count), endianness: .little)
        buffer.writeInteger(UInt32(layout.layers), endianness: .little)
        buffer.writeInteger(UInt32(layout.kvHeads), endianness: .little)
        buffer.writeInteger(UInt32(layout.headDim), endianness: .little)
        buffer.writeInteger(layout.dtype.wireCode, endianness: .little)
        buffer.writeInteger(codec, endianness: .little)
        buffer.writeInteger(UInt64(payload.count), endianness: .little)
        buffer.writeInteger(chunk.key.hash.low, endianness: .little)
        buffer.writeInteger(chunk.key.hash.high, endianness: .little)
        var tokens = allocator.buffer(capacity: 4 * chunk.tokens.count)
        for token in chunk.tokens { tokens.writeInteger(token, endianness: .little) }
        let checksum = buffer.withUnsafeReadableBytes { head in
            tokens.withUnsafeReadableBytes { tokenBytes in Self.checksum(head: head, tokens: tokenBytes, payload: payload) }
        }
        buffer.writeInteger(checksum, endianness: .little)
        buffer.writeBuffer(&tokens)
        return buffer
    }

    /// The whole frame of `chunk` in one buffer, its KV encoded with `serde` (float16 KV only;
    /// other dtypes, and KV the codec refuses, travel as they are).
    public static func encode(
        _ chunk: KVChunk,
        serde: KVSerde = .naive,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        let codec = KVCodec.codec(serde, for: chunk.layout)
        if codec != 0,
            let stream = chunk.withUnsafeBytes({
                KVCodec.encode($0, codec: codec, layout: chunk.layout, tokens: chunk.tokens.count)
            })
        {
            return stream.withUnsafeBytes { payload in
                var buffer = prefix(of: chunk, codec: codec, payload: payload, allocator: allocator)
                buffer.writeBytes(payload)
                return buffer
            }
        }
        return chunk.withUnsafeBytes { payload in
            var buffer = prefix(of: chunk, payload: payload, allocator: allocator)
            buffer.reserveCapacity(minimumWritableBytes: payload.count)
            buffer.writeBytes(payload)
            return buffer
        }
    }

    /// Decodes the frame in `bytes` as the chunk stored under `key`.
    /// - Parameters:
    ///   - bytes: The value, valid while `owner` lives.
    ///   - key: The key that was asked for; the frame must name the same hash and token count.
    ///   - owner: Keeps `bytes` alive; the returned chunk holds it and points into it.
    /// - Returns: The chunk, or `nil` when the bytes are not a valid frame for `key`.
    package static func decode(
        _ bytes: UnsafeRawBufferPointer,
        key: CacheKey,
        owner: any AnyObject & Sendable
    ) -> KVChunk? {
        guard bytes.count >= headerSize,
            bytes.loadUnaligned(fromByteOffset: 0, as: UInt32.self).littleEndian == magic,
            bytes.loadUnaligned(fromByteOffset: 4, as: UInt16.self).littleEndian == version,
            Int(bytes.loadUnaligned(fromByteOffset: 6, as: UInt16.self).littleEndian) == headerSize
        else { return nil }
        func u32(_ offset: Int) -> Int {
            Int(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self).littleEndian)
        }
        let tokenCount = u32(8)
        let layers = u32(12)
        let kvHeads = u32(16)
        let headDim = u32(20)
        let limit = 1 << 16
        guard tokenCount == key.tokenCount, tokenCount <= maximumTokens,
            (1...limit).contains(layers), (1...limit).contains(kvHeads), (1...limit).contains(headDim),
            let dtype = KVDType(wireCode: Int32(truncatingIfNeeded: u32(24))), dtype.wireCode == Int32(u32(24))
        else { return nil }
        let codec = UInt32(u32(28))
        let layout = KVLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: dtype)
        // Each factor is capped, but their product can still pass 2^63 (2^16 layers, heads and
        // head size, 2^20 tokens): refuse that, and more KV than any frame can carry.
        guard let kvCount = layout.checkedByteCount(tokens: tokenCount), kvCount <= maximumKVBytes else { return nil }
        let payloadCount = bytes.loadUnaligned(fromByteOffset: 32, as: UInt64.self).littleEndian
        let plausible =
            codec == 0
            ? payloadCount == UInt64(kvCount)
            : KVCodec.isKnown(codec) && dtype == .float16
                && payloadCount <= UInt64(KVCodec.bound(codec: codec, layout: layout, tokens: tokenCount))
        guard plausible, UInt64(bytes.count) == UInt64(headerSize + 4 * tokenCount) + payloadCount,
            bytes.loadUnaligned(fromByteOffset: 40, as: UInt64.self).littleEndian == key.hash.low,
            bytes.loadUnaligned(fromByteOffset: 48, as: UInt64.self).littleEndian == key.hash.high
        else { return nil }
        let tokenBytes = UnsafeRawBufferPointer(rebasing: bytes[headerSize..<(headerSize + 4 * tokenCount)])
        let kvBytes = UnsafeRawBufferPointer(rebasing: bytes[(headerSize + 4 * tokenCount)...])
        let stored = bytes.loadUnaligned(fromByteOffset: 56, as: UInt64.self).littleEndian
        guard Self.checksum(head: UnsafeRawBufferPointer(rebasing: bytes[0..<56]), tokens: tokenBytes, payload: kvBytes) == stored
        else { return nil }
        var tokens: [Int32] = []
        tokens.reserveCapacity(tokenCount)
        for i in 0..<tokenCount {
            tokens.append(Int32(littleEndian: tokenBytes.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
        }
        guard codec != 0 else {
            return KVChunk(key: key, tokens: tokens, layout: layout, storage: FramedChunkStorage(owner: owner, bytes: kvBytes))
        }
        let decoded = try? HeapChunkStorage(count: kvCount) { (destination) throws(StorageError) in
            guard KVCodec.decode(kvBytes, codec: codec, layout: layout, tokens: tokenCount, into: destination) else {
                throw StorageError(.corrupt, "the frame's payload does not decode")
            }
        }
        return decoded.map { KVChunk(key: key, tokens: tokens, layout: layout, storage: $0) }
    }
}

extension KVChunkFrame {
    /// The frame's checksum: its first 56 bytes, the tokens, and the payload's checksum.
    package static func checksum(head: UnsafeRawBufferPointer, tokens: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> UInt64 {
        withUnsafeBytes(of: ChunkChecksum.payload(payload).littleEndian) {
            ChunkChecksum.metadata(head, tokens, $0)
        }
    }

    /// Decodes a frame held in `buffer` (a copy), for tests and tools.
    package static func decodeForTesting(_ buffer: ByteBuffer, key: CacheKey) -> KVChunk? {
        let storage = buffer.withUnsafeReadableBytes { HeapChunkStorage(copying: $0) }
        return decode(storage.bytes, key: key, owner: storage)
    }
}

/// The KV bytes of a decoded frame, inside the reply memory that `owner` keeps alive.
///
/// `@unchecked Sendable`: `owner` is immutable once the reply is complete, and it lives as long
/// as this object, so `bytes` stays valid and unchanged.
final class FramedChunkStorage: KVChunkStorage, @unchecked Sendable {
    let owner: any AnyObject & Sendable
    let bytes: UnsafeRawBufferPointer

    init(owner: any AnyObject & Sendable, bytes: UnsafeRawBufferPointer) {
        self.owner = owner
        self.bytes = bytes
    }
}
