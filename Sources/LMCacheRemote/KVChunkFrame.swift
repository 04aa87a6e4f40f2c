public import LMCacheCore
public import NIOCore
import LMCacheStorage

/// The value our remote tiers (`lm://`, Redis, peers) store for a ``KVChunk``: the chunk's record
/// in the one stored form (`ChunkFormat` in `LMCacheStorage`, as the disk tier's files are), its
/// header exactly as long as its fields, name and token ids (no padding), then the KV bytes or their
/// encoded stream.
///
/// LMCache's protocol carries opaque bytes plus a format, a dtype and a shape; our chunks also
/// need their token ids (checked on every hit) and their exact layout, which the record carries.
/// The `lm://` header of such a PUT describes the value as LMCache describes opaque bytes:
/// format ``wireFormat`` (LMCache's `BINARY`), dtype ``wireDType`` (`uint8`) and shape
/// `[value length, 0, 0, 0]`, so LMCache's own server stores it like any other value. Decoding
/// checks every field against the key asked for and the checksums against the bytes; a value that
/// fails any check (another client's value, a truncated or corrupted one, a value of an earlier
/// version of the format) decodes to `nil`, which the tier reports as a miss: such chunks are
/// computed again and stored over.
public enum KVChunkFrame {
    /// The `lm://` format code our frames are stored with: LMCache's `MemoryFormat.BINARY`.
    /// (LMCache's server rejects format codes it does not know.)
    public static let wireFormat: Int32 = 4
    /// The `lm://` dtype code our frames are stored with: `uint8`.
    public static let wireDType: Int32 = 6
    /// The most tokens a frame may declare.
    public static let maximumTokens = ChunkFormat.maxTokens
    /// The most KV bytes a frame may describe (an `lm://` value is at most 2^31 - 1 bytes).
    public static let maximumKVBytes = 1 << 34

    private static func content(of chunk: KVChunk, codec: UInt32) -> ChunkFormat.Content {
        .kv(tokens: chunk.tokens, layout: chunk.layout, modelName: chunk.key.modelName, codec: codec)
    }

    /// Bytes before the payload in `chunk`'s frame.
    public static func headerLength(of chunk: KVChunk) -> Int {
        ChunkFormat.headerLength(of: content(of: chunk, codec: 0), alignment: 1)
    }

    /// The frame's header (its fields, the model name and the tokens) for `payload` (the chunk's KV
    /// bytes, or their `codec` stream), which follows it on the wire.
    public static func prefix(
        of chunk: KVChunk,
        codec: UInt32 = 0,
        payload: UnsafeRawBufferPointer,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        let content = content(of: chunk, codec: codec)
        let length = ChunkFormat.headerLength(of: content, alignment: 1)
        var buffer = allocator.buffer(capacity: length)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { header in
            ChunkFormat.writeHeader(
                hash: chunk.key.hash,
                content: content,
                payloadLength: payload.count,
                payloadChecksum: ChunkChecksum.payload(payload),
                into: UnsafeMutableRawBufferPointer(rebasing: header[0..<length])
            )
            return length
        }
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
        guard case .success(let header) = ChunkFormat.parseHeader(bytes, recordSize: bytes.count, alignment: 1),
            case .kv(let tokens, let layout, _, let codec) = header.content,
            header.key == key,
            let kvCount = layout.checkedByteCount(tokens: tokens.count), kvCount <= maximumKVBytes
        else { return nil }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[header.headerLength...])
        guard ChunkChecksum.payload(payload) == header.payloadChecksum else { return nil }
        guard codec != 0 else {
            return KVChunk(key: key, tokens: tokens, layout: layout, storage: FramedChunkStorage(owner: owner, bytes: payload))
        }
        let decoded = try? HeapChunkStorage(count: kvCount) { (destination) throws(StorageError) in
            guard KVCodec.decode(payload, codec: codec, layout: layout, tokens: tokens.count, into: destination) else {
                throw StorageError(.corrupt, "the frame's payload does not decode")
            }
        }
        return decoded.map { KVChunk(key: key, tokens: tokens, layout: layout, storage: $0) }
    }
}

extension KVChunkFrame {
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
