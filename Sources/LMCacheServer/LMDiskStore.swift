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
/// A value is kept on disk as one record of the stored form's value kind (`ChunkFormat`, as the
/// tier's KV chunks are): under the SipHash-128 of the value's string key, holding the key, the
/// format, dtype and shape of the PUT, and the payload. A read checks the record's checksums and
/// then that its key is the key asked for, so a corrupt file or a hash collision is a miss, never
/// another value's bytes.
///
/// Writes happen in PUT order on one queue, off the event loops. They do not delay the PUT
/// unless more than ``maximumPendingBytes`` are waiting to be written; then the connection that
/// sends waits for its write (back-pressure instead of unbounded memory). ``flush()`` waits for
/// every write queued so far; the server calls it when it stops.
public final class LMDiskStore: Sendable {
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

    /// The hash under which the value of `key` is stored.
    static func hash(of key: String) -> ChunkHash {
        var hasher = SipHash128()
        hasher.combine(key)
        return hasher.finalize()
    }

    /// Whether a value of `key` is on disk.
    public func contains(_ key: String) -> Bool { tier.containsNow(ChunkFormat.valueKey(Self.hash(of: key))) }

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
        writes.async { self.tier.removeNow(ChunkFormat.valueKey(Self.hash(of: key))) }
    }

    /// Waits until every write queued so far is on disk.
    public func flush() async {
        await withCheckedContinuation { continuation in writes.async { continuation.resume() } }
    }

    /// Reads the value of `key` from disk into a buffer from `allocator`; `nil` on a miss, a file
    /// that fails its checks (deleted, with a log line) or a record of another key.
    public func load(_ key: String, allocator: ByteBufferAllocator) async -> LMStoredValue? {
        let hash = Self.hash(of: key)
        guard tier.containsNow(ChunkFormat.valueKey(hash)) else { return nil }
        return await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(returning: self.read(key, hash: hash, allocator: allocator))
            }
        }
    }

    private func read(_ key: String, hash: ChunkHash, allocator: ByteBufferAllocator) -> LMStoredValue? {
        guard let reader = tier.openValue(hash: hash),
            case .value(let description) = reader.header.content, description.key == key  // Else another key with the same hash.
        else { return nil }
        let count = reader.header.payloadLength
        var buffer = allocator.buffer(capacity: count)
        let read = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { destination in
            reader.readPayload(into: UnsafeMutableRawBufferPointer(rebasing: destination[0..<count])) ? count : 0
        }
        guard read == count else { return nil }  // The disk tier logged and deleted the file.
        return LMStoredValue(payload: buffer, format: description.format, dtype: description.dtype, shape: LMShape(description.shape))
    }

    private func write(_ key: String, _ value: LMStoredValue) {
        let shape = value.shape
        let description = ChunkFormat.ValueDescription(
            key: key, format: value.format, dtype: value.dtype, shape: [shape.d0, shape.d1, shape.d2, shape.d3])
        let written = value.payload.withUnsafeReadableBytes { tier.writeValue(hash: Self.hash(of: key), description, payload: $0) }
        if !written {
            logger.debug("value not written to disk", metadata: ["lmcache.key": "\(key)"])
        }
    }
}
