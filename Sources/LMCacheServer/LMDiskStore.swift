import Dispatch
import LMCacheCore
public import LMCacheStorage
import LMCacheWire
public import Logging
public import NIOCore
import Synchronization

/// The server's optional second tier: every stored value written through to a directory by the
/// storage manager's disk tier (``LocalDiskTier``), so that values outlive both eviction from
/// memory and a restart of the server.
///
/// A value is kept on disk as one chunk file. Its chunk key is the SipHash-128 of the value's
/// string key (one token, model name ``modelName``); its bytes are a record holding the string
/// key, the format, dtype and shape of the PUT, and the payload (``Record``). A read checks the
/// disk tier's checksums and then that the record's key is the key asked for, so a corrupt file
/// or a hash collision is a miss, never another value's bytes.
///
/// Writes happen in PUT order on one queue, off the event loops. They do not delay the PUT
/// unless more than ``maximumPendingBytes`` are waiting to be written; then the connection that
/// sends waits for its write (back-pressure instead of unbounded memory). ``flush()`` waits for
/// every write queued so far; the server calls it when it stops.
public final class LMDiskStore: Sendable {
    /// The model name of the chunk keys of server values (it keeps them apart in tools that list a
    /// disk directory).
    public static let modelName = "lm-server"
    /// Bytes of queued writes above which a PUT waits for its own write.
    public static let maximumPendingBytes = 256 << 20

    /// The disk tier the values live in.
    public let tier: LocalDiskTier
    private let logger: Logger
    private let writes = DispatchQueue(label: "lmcache.server.disk-writes")
    private let pendingBytes = Atomic<Int>(0)

    /// Opens (creating if needed) `directory` and indexes the values already there.
    /// - Parameters:
    ///   - directory: The directory of the chunk files.
    ///   - capacity: The byte budget of the files; least recently used values are deleted beyond it.
    ///   - fsync: Flush each file to the device before it becomes visible (`extra_config.local_disk_fsync`).
    ///   - directIO: Read and write with `O_DIRECT` (`extra_config.use_odirect`).
    ///   - logger: Where the store logs.
    /// - Throws: ``StorageError`` when the directory cannot be created or read.
    public init(
        directory: String,
        capacity: Int,
        fsync: Bool = false,
        directIO: Bool = false,
        logger: Logger = Logger(label: "lmcache.server.disk")
    )
        throws(StorageError)
    {
        self.tier = try LocalDiskTier(
            directory: directory, capacity: capacity, fsync: fsync, directIO: directIO, logger: logger)
        self.logger = logger
    }

    /// The chunk key under which the value of `key` is stored.
    static func chunkKey(for key: String) -> CacheKey {
        var hasher = SipHash128()
        hasher.combine(key)
        return CacheKey(hash: hasher.finalize(), tokenCount: 1, modelName: modelName, dtype: .float16)
    }

    /// Whether a value of `key` is on disk.
    public func contains(_ key: String) -> Bool { tier.containsNow(Self.chunkKey(for: key)) }

    /// Queues `value` to be written under `key`, replacing what the disk holds for it; waits for
    /// the write only when too many bytes are queued.
    public func persist(_ key: String, _ value: LMStoredValue) async {
        let size = value.payload.readableBytes
        let queued = pendingBytes.add(size, ordering: .relaxed).newValue
        let write: @Sendable () -> Void = {
            self.write(key, value)
            self.pendingBytes.subtract(size, ordering: .relaxed)
        }
        if queued > Self.maximumPendingBytes {
            await withCheckedContinuation { continuation in
                writes.async {
                    write()
                    continuation.resume()
                }
            }
        } else {
            writes.async(execute: write)
        }
    }

    /// Queues the removal of `key` (after the writes queued before it).
    public func remove(_ key: String) {
        writes.async { self.tier.removeNow(Self.chunkKey(for: key)) }
    }

    /// Waits until every write queued so far is on disk.
    public func flush() async {
        await withCheckedContinuation { continuation in writes.async { continuation.resume() } }
    }

    /// Reads the value of `key` from disk into a buffer from `allocator`; `nil` on a miss, a file
    /// that fails its checks (deleted, with a log line) or a record of another key.
    public func load(_ key: String, allocator: ByteBufferAllocator) async -> LMStoredValue? {
        let chunkKey = Self.chunkKey(for: key)
        guard tier.containsNow(chunkKey) else { return nil }
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: self.read(key, chunkKey: chunkKey, allocator: allocator))
            }
        }
    }

    private func read(_ key: String, chunkKey: CacheKey, allocator: ByteBufferAllocator) -> LMStoredValue? {
        guard let reader = tier.open(chunkKey) else { return nil }
        let count = reader.byteCount
        var buffer = allocator.buffer(capacity: count)
        let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { destination in
            reader.read(into: UnsafeMutableRawBufferPointer(rebasing: destination[0..<count])) ? count : 0
        }
        guard read == count else { return nil }  // The disk tier logged and deleted the file.
        switch Record.decode(&buffer) {
        case .success(let record) where record.key == key:
            return record.value
        case .success:
            return nil  // Another key with the same 128-bit hash.
        case .failure(let reason):
            logger.warning(
                "unreadable value record on disk; deleted",
                metadata: ["lmcache.key": "\(key)", "lmcache.reason": "\(reason)"]
            )
            tier.removeNow(chunkKey)
            return nil
        }
    }

    private func write(_ key: String, _ value: LMStoredValue) {
        let chunkKey = Self.chunkKey(for: key)
        tier.removeNow(chunkKey)  // A PUT replaces the value, on disk too.
        let (layout, storage) = Record.encode(key: key, value: value)
        let chunk = KVChunk(key: chunkKey, tokens: [0], layout: layout, storage: storage)
        if !tier.write(chunk) {
            logger.debug("value not written to disk", metadata: ["lmcache.key": "\(key)"])
        }
    }
}

extension LMDiskStore {
    /// The bytes of one value on disk (all integers little-endian), padded with zeros to the size
    /// of the chunk layout that holds them:
    ///
    /// | offset | size | field |
    /// |---|---|---|
    /// | 0 | 4 | magic `LMSV` |
    /// | 4 | 4 | record version (1) |
    /// | 8 | 4 | key length *k* |
    /// | 12 | 4 | format |
    /// | 16 | 4 | dtype |
    /// | 20 | 16 | shape |
    /// | 36 | 8 | payload length *p* |
    /// | 44 | *k* | key (UTF-8) |
    /// | 44+*k* | *p* | payload |
    enum Record {
        static let magic: UInt32 = 0x5653_4D4C  // "LMSV" read as a little-endian UInt32
        static let version: UInt32 = 1
        static let fixedSize = 44

        /// The chunk layout whose byte count holds `count` bytes with the least padding: one token,
        /// 4 bytes per head dimension (K and V in half precision), head size a power of two.
        static func layout(holding count: Int) -> KVLayout {
            let units = max(1, (count + 3) / 4)
            var headDim = 1
            while (units + headDim - 1) / headDim > 4096 && headDim < 65536 { headDim *= 2 }
            let rest = (units + headDim - 1) / headDim
            let kvHeads = (rest + 4095) / 4096
            let layers = (rest + kvHeads - 1) / kvHeads
            return KVLayout(layers: layers, kvHeads: kvHeads, headDim: headDim, dtype: .float16)
        }

        static func encode(key: String, value: LMStoredValue) -> (KVLayout, HeapChunkStorage) {
            let keyBytes = Array(key.utf8)
            let payloadCount = value.payload.readableBytes
            let layout = layout(holding: fixedSize + keyBytes.count + payloadCount)
            let storage = HeapChunkStorage(count: layout.byteCount(tokens: 1)) { (record) throws(Never) in
                func put<T: FixedWidthInteger>(_ integer: T, at offset: Int) {
                    record.storeBytes(of: integer.littleEndian, toByteOffset: offset, as: T.self)
                }
                put(magic, at: 0)
                put(version, at: 4)
                put(UInt32(keyBytes.count), at: 8)
                put(value.format, at: 12)
                put(value.dtype, at: 16)
                for (index, extent) in value.shape.values.enumerated() { put(extent, at: 20 + 4 * index) }
                put(UInt64(payloadCount), at: 36)
                keyBytes.withUnsafeBytes {
                    record.baseAddress!.advanced(by: fixedSize).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                }
                let payloadStart = fixedSize + keyBytes.count
                value.payload.withUnsafeReadableBytes { payload in
                    if payload.count > 0 {
                        record.baseAddress!.advanced(by: payloadStart).copyMemory(
                            from: payload.baseAddress!,
                            byteCount: payload.count
                        )
                    }
                }
                let end = payloadStart + payloadCount
                if end < record.count {
                    record.baseAddress!.advanced(by: end).initializeMemory(
                        as: UInt8.self,
                        repeating: 0,
                        count: record.count - end
                    )
                }
            }
            return (layout, storage)
        }

        /// Parses a record; the value's payload is a slice of `buffer` (no copy).
        static func decode(_ buffer: inout ByteBuffer) -> Result<(key: String, value: LMStoredValue), DecodeFailure> {
            guard buffer.readableBytes >= fixedSize else { return .failure(DecodeFailure("shorter than a record")) }
            func integer<T: FixedWidthInteger>(at offset: Int, as: T.Type) -> T {
                // Within the fixed part, whose length was checked above.
                buffer.getInteger(at: buffer.readerIndex + offset, endianness: .little, as: T.self)!
            }
            guard integer(at: 0, as: UInt32.self) == magic else { return .failure(DecodeFailure("not a value record")) }
            let recordVersion = integer(at: 4, as: UInt32.self)
            guard recordVersion == version else {
                return .failure(DecodeFailure("unknown record version \(recordVersion)"))
            }
            let keyCount = Int(integer(at: 8, as: UInt32.self))
            let format = integer(at: 12, as: Int32.self)
            let dtype = integer(at: 16, as: Int32.self)
            let shape = LMShape((0..<4).map { integer(at: 20 + 4 * $0, as: Int32.self) })
            let payloadLength = integer(at: 36, as: UInt64.self)
            guard keyCount <= min(LMRequestHeader.keyFieldSize, buffer.readableBytes - fixedSize),
                payloadLength <= UInt64(buffer.readableBytes - fixedSize - keyCount)
            else { return .failure(DecodeFailure("record lengths exceed its bytes")) }
            buffer.moveReaderIndex(forwardBy: fixedSize)
            let key = buffer.readString(length: keyCount)!
            let payload = buffer.readSlice(length: Int(payloadLength))!
            return .success((key, LMStoredValue(payload: payload, format: format, dtype: dtype, shape: shape)))
        }
    }

    struct DecodeFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }
}
