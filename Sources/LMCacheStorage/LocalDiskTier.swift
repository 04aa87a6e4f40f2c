import Dispatch
public import LMCacheCore
public import Logging
import Metrics
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The local-disk tier (`local_disk`, `max_local_disk_size`): one file per chunk, crash-safe.
///
/// Each chunk is written to a temporary name, optionally fsynced, then renamed into place, so a
/// file with the final name is always complete; its header (``ChunkFormat``) carries the key,
/// the token ids, the layout and checksums of itself and of the KV bytes. The tier also keeps the
/// `lm://` server's values (records of ``ChunkFormat``'s value kind, ``writeValue(hash:_:payload:)``)
/// under the same budget. On start the index is rebuilt from the directory: complete chunks are
/// served again; temporary files left by a crash are deleted; files with a chunk name that fail
/// their checks are deleted with a log line, files of an earlier format with one notice; other
/// files are left alone. Every read checks the payload checksum, so a corrupted file is a miss
/// (and is deleted), never wrong data.
///
/// A byte budget (the files' sizes) is kept with the same policies as the CPU tier. A full disk
/// pauses new writes for ``fullDiskPause`` (one warning), after which they are tried again; a
/// read-only file system or a permission error stops writes for good (one error). Either way the
/// chunks on disk are still served and requests go on.
///
/// The synchronous methods block on I/O; the ``StorageTier`` methods run them on a dispatch queue
/// so that they never block Swift's cooperative threads.
public final class LocalDiskTier: StorageTier {
    public let name = "disk"
    /// The directory holding the chunk files.
    public let directory: String
    private let capacity: Int
    private let policy: CachePolicy
    private let fsync: Bool
    /// Whether chunk payloads are read and written with `O_DIRECT` (see ``init(directory:capacity:policy:fsync:directIO:serde:fullDiskPause:logger:)``);
    /// switched off, with one log line, when the file system refuses it.
    private let directIO: Atomic<Bool>
    /// How chunk files hold the KV (``KVSerde``): as they are, or encoded.
    public let serde: KVSerde
    private let logger: Logger
    private let state: Mutex<State>
    private let io = DispatchQueue(label: "lmcache.storage.disk", attributes: .concurrent)
    private let temporaryCounter = Atomic<Int>(0)
    private let metrics: TierMetrics
    /// How long a full disk keeps new chunks out before writes are tried again.
    public let fullDiskPause: Duration

    /// Opens (creating if needed) the tier in `directory` and rebuilds its index from the files there.
    /// - Parameters:
    ///   - directory: Where chunk files live.
    ///   - capacity: The byte budget for all chunk files.
    ///   - policy: Eviction order.
    ///   - fsync: Flush each file (and the directory) before it becomes visible: survives power
    ///     loss, not just process crashes. Off by default: rename alone is atomic for crashes.
    ///   - directIO: Read and write chunk payloads with `O_DIRECT`, past the kernel's page cache,
    ///     so that the disk tier's bytes are not held a second time as cached file pages (the CPU
    ///     tier already holds the hot ones). Reads go through an aligned buffer per reader, 1 MiB
    ///     at a time, a batch's depth being its ``readsInFlight``
    ///     readers. A file system that refuses `O_DIRECT` (tmpfs on older kernels) gets buffered
    ///     I/O, with one log line.
    ///   - serde: How new files hold the KV (`local_disk_serde`); files of any serde are read.
    ///   - fullDiskPause: How long a full disk (`ENOSPC`, `EDQUOT`) keeps new chunks out before writes
    ///     are tried again; the chunks already on disk are served meanwhile.
    ///   - logger: Where the tier logs.
    /// - Throws: ``StorageError`` when the directory cannot be created or read.
    public init(
        directory: String,
        capacity: Int,
        policy: CachePolicy = .lru,
        fsync: Bool = false,
        directIO: Bool = false,
        serde: KVSerde = .naive,
        fullDiskPause: Duration = .seconds(30),
        logger: Logger = Logger(label: "lmcache.storage.disk")
    ) throws(StorageError) {
        guard capacity > 0 else { throw StorageError(.invalidArgument, "disk tier capacity must be positive") }
        var path = directory
        while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
        self.directory = path
        self.capacity = capacity
        self.policy = policy
        self.fsync = fsync
        self.directIO = Atomic(directIO)
        self.serde = serde
        self.fullDiskPause = fullDiskPause
        self.logger = logger
        self.metrics = TierMetrics(tier: "disk")
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw StorageError(.io, "cannot create disk tier directory \(path): \(Self.describeErrno())")
        }
        self.state = Mutex(State(policy: policy))
        try rebuildIndex()
    }

    /// Opens the tier that `configuration` describes; `nil` when `local_disk` is unset or its size is 0.
    public convenience init?(
        configuration: LMCacheConfiguration,
        logger: Logger = Logger(label: "lmcache.storage.disk")
    ) throws(StorageError) {
        guard let directory = configuration.localDisk, configuration.maxLocalDiskBytes > 0 else { return nil }
        try self.init(
            directory: directory,
            capacity: configuration.maxLocalDiskBytes,
            policy: configuration.cachePolicy,
            fsync: configuration.localDiskFsync,
            directIO: configuration.localDiskDirectIO,
            serde: configuration.localDiskSerde,
            logger: logger
        )
    }

    /// Counters and gauges of the tier.
    public struct Statistics: Hashable, Sendable {
        /// Whether the tier takes new chunks now: false while a full disk pauses its writes, and for
        /// good once the file system refuses them (read-only, no permission). Its chunks are read either way.
        public var writable: Bool
        /// Bytes of chunk files indexed.
        public var usedBytes: Int
        /// Chunks indexed.
        public var count: Int
        public var hits: Int
        public var misses: Int
        public var stored: Int
        public var evicted: Int
        /// Files found corrupt (at start or on read) and deleted.
        public var corrupt: Int
        /// Writes declined (no room, already present, writes paused or refused) or failed.
        public var rejected: Int
    }

    /// The tier's current statistics.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    // MARK: StorageTier (off the cooperative pool)

    /// Runs `body` on the I/O queue and returns its result. The result comes back under a lock as
    /// well as through the continuation: the thread sanitizer sees the order a lock gives, not the
    /// concurrency runtime's resume, and would otherwise take the caller's reads of what `body` built
    /// for a race.
    private func onIO<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        let slot = HandOff<T>()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            io.async {
                slot.put(body())
                continuation.resume()
            }
        }
        return slot.take()
    }

    public func contains(_ key: CacheKey) async -> Bool { containsNow(key) }

    public func get(_ key: CacheKey) async throws -> KVChunk? {
        await onIO { self.read(key) }
    }

    /// Fetches the chunks under `keys` into the heap with the batch in flight (see
    /// ``promote(_:verifying:into:)``).
    public func get(_ keys: [CacheKey], receive: @escaping @Sendable (Int, KVChunk) -> Void) async {
        await onIO {
            self.inFlight(keys) { index, reader, threads in
                if let chunk = self.read(reader, threads: threads) { receive(index, chunk) }
            }
        }
    }

    @discardableResult
    public func put(_ chunk: KVChunk) async throws -> Bool {
        await onIO { self.write(chunk) }
    }

    @discardableResult
    public func remove(_ key: CacheKey) async -> Bool { removeNow(key) }

    /// Loads the chunks under `keys`, each if it holds its entry of `tokens`, straight into the CPU
    /// tier's pool (no intermediate copy; into the heap when the pool has no room) and returns them
    /// from there, with the batch in flight: every file is opened first, then up to
    /// ``readsInFlight`` chunks are read and checked at the same time, each by a thread of its own
    /// (the kernel reads ahead of each, `POSIX_FADV_SEQUENTIAL`). `nil` for each miss; a chunk with
    /// other tokens is removed. Runs off the cooperative pool.
    ///
    /// Announcing every payload up front (`POSIX_FADV_WILLNEED`) was measured and dropped: the
    /// advice reads the whole hit in the calling thread before the first chunk is checked, which
    /// made cold batches no faster and warm ones half as fast (7.3–7.7 against 12.8–13.2 GB/s).
    ///
    /// Without a CPU tier, each chunk is read into the heap (``promoteByCopying(_:verifying:into:)``).
    public func promote(_ keys: [CacheKey], verifying tokens: [[Int32]], into cpu: LocalCPUTier?) async -> [KVChunk?] {
        precondition(keys.count == tokens.count, "one token run per key")
        guard let cpu else { return await promoteByCopying(keys, verifying: tokens, into: nil) }
        return await onIO { self.promoteNow(keys, verifying: tokens, into: cpu) }
    }

    /// Chunks a batched read keeps in flight, each read and checked by a thread of its own
    /// (8 measured best of 4, 8 and 16 on a 2-core virtio machine, buffered and direct).
    public static let readsInFlight = 8

    private func promoteNow(_ keys: [CacheKey], verifying tokens: [[Int32]], into cpu: LocalCPUTier) -> [KVChunk?] {
        let results = Mutex([KVChunk?](repeating: nil, count: keys.count))
        inFlight(keys) { index, reader, threads in
            let chunk = self.promote(reader, verifying: tokens[index], into: cpu, readers: threads)
            results.withLock { $0[index] = chunk }
        }
        return results.withLock { $0 }
    }

    /// Reads the chunks under `keys` into `destinations` (each exactly its chunk's size) with the
    /// batch in flight, as ``promote(_:verifying:into:)`` does, checking each (blocking).
    /// - Returns: for each key, whether its bytes were read and passed their checks.
    public func read(_ keys: [CacheKey], into destinations: [UnsafeMutableRawBufferPointer]) -> [Bool] {
        precondition(keys.count == destinations.count, "one destination per key")
        let addresses = destinations.map { (UInt(bitPattern: $0.baseAddress), $0.count) }
        let results = Mutex([Bool](repeating: false, count: keys.count))
        inFlight(keys) { index, reader, threads in
            let (address, count) = addresses[index]
            guard count == reader.byteCount, let base = UnsafeMutableRawPointer(bitPattern: address) else { return }
            let ok = reader.read(into: UnsafeMutableRawBufferPointer(start: base, count: count), threads: threads)
            results.withLock { $0[index] = ok }
        }
        return results.withLock { $0 }
    }

    /// Opens the files of `keys`, then runs `body` on each file opened, with up to
    /// ``readsInFlight`` at once (blocking). `body` gets the threads its read may use: two for a
    /// batch of one (its blocks split between them, as a single read does), else one.
    private func inFlight(_ keys: [CacheKey], _ body: @escaping @Sendable (Int, DiskChunkReader, Int) -> Void) {
        let readers = keys.map { open($0) }
        let workers = max(1, min(Self.readsInFlight, keys.count))
        let threads = keys.count == 1 ? 2 : 1
        // Threads of their own (not the dispatch pool, which runs as many as there are cores):
        // a reader mostly waits for the device, and the batch's depth is the number of readers.
        ParallelFor.run(workers) { worker in
            for index in stride(from: worker, to: keys.count, by: workers) {
                if let reader = readers[index] { body(index, reader, threads) }
            }
        }
    }

    private func promote(_ reader: DiskChunkReader, verifying tokens: [Int32], into cpu: LocalCPUTier, readers: Int)
        -> KVChunk?
    {
        let key = reader.key
        guard reader.tokens == tokens else {
            removeNow(key)
            return nil
        }
        do {
            let stored = try cpu.put(key: key, tokens: reader.tokens, layout: reader.layout) {
                (destination) throws(StorageError) in
                guard reader.read(into: destination, threads: readers) else {
                    throw StorageError(.corrupt, "chunk failed its checks")
                }
            }
            if stored, let chunk = cpu.get(key) { return chunk }
        } catch {
            return nil
        }
        // No room in the CPU tier (or a racing writer got there first): read into the heap.
        let storage = try? HeapChunkStorage(count: reader.byteCount) { (destination) throws(StorageError) in
            guard reader.read(into: destination, threads: readers) else {
                throw StorageError(.corrupt, "chunk failed its checks")
            }
        }
        return storage.map { KVChunk(key: reader.key, tokens: reader.tokens, layout: reader.layout, storage: $0) }
    }


    // MARK: Synchronous operations

    /// Whether the index holds `key`.
    public func containsNow(_ key: CacheKey) -> Bool { state.withLock { $0.entries[key] != nil } }

    /// Reads and checks the chunk under `key` (blocking); `nil` on a miss or a failed check.
    public func read(_ key: CacheKey) -> KVChunk? {
        guard let reader = open(key) else { return nil }
        return read(reader, threads: 2)
    }

    private func read(_ reader: DiskChunkReader, threads: Int) -> KVChunk? {
        let storage = try? HeapChunkStorage(count: reader.byteCount) { (destination) throws(StorageError) in
            guard reader.read(into: destination, threads: threads) else {
                throw StorageError(.corrupt, "chunk failed its checks")
            }
        }
        guard let storage else { return nil }
        return KVChunk(key: reader.key, tokens: reader.tokens, layout: reader.layout, storage: storage)
    }

    /// Opens the chunk file of `key` and checks its header (blocking); `nil` on a miss or a bad
    /// header. Read the KV bytes with ``DiskChunkReader/read(into:)`` straight into memory of the
    /// caller's choosing (a CPU-tier extent, an engine's KV pages): no intermediate copy.
    public func open(_ key: CacheKey) -> DiskChunkReader? {
        guard let record = openRecord(key) else { return nil }
        guard let reader = DiskChunkReader(record) else {
            record.reject("file holds a value, not a chunk")
            return nil
        }
        return reader
    }

    /// Opens the record file indexed under `key` and checks its header (blocking).
    private func openRecord(_ key: CacheKey) -> DiskRecordReader? {
        guard let fileName = state.withLock({ $0.use(key) }) else {
            metrics.misses.increment()
            return nil
        }
        let path = directory + "/" + fileName
        switch Self.openFile(path: path, direct: directIO.load(ordering: .relaxed)) {
        case .success(let (fd, header)) where header.key == key:
            return DiskRecordReader(tier: self, path: path, fd: fd, directFD: openDirect(path, flags: O_RDONLY), header: header)
        case .success(let (fd, _)):
            close(fd)
            quarantine(key: key, path: path, reason: "file holds another record")
        case .failure(let error) where error.isMissing:
            // Evicted or removed between the index lookup and the open.
            state.withLock { $0.forget(key) }
        case .failure(let error):
            quarantine(key: key, path: path, reason: error.description)
        }
        countFailedRead()
        return nil
    }

    fileprivate func countFailedRead() {
        state.withLock {
            $0.counters.hits -= 1
            $0.counters.misses += 1
        }
        metrics.misses.increment()
    }

    fileprivate func countRead(bytes: Int) {
        metrics.hits.increment()
        metrics.readBytes.increment(by: bytes)
    }

    /// Writes `chunk` crash-safely (blocking); `false` when declined or failed.
    @discardableResult
    public func write(_ chunk: KVChunk) -> Bool {
        let codec = KVCodec.codec(serde, for: chunk.layout)
        func content(_ codec: UInt32) -> ChunkFormat.Content {
            .kv(tokens: chunk.tokens, layout: chunk.layout, modelName: chunk.key.modelName, codec: codec)
        }
        var encoded: [UInt8]?
        if codec != 0 {
            guard !containsNow(chunk.key) else { return false }
            encoded = chunk.withUnsafeBytes {
                KVCodec.encode($0, codec: codec, layout: chunk.layout, tokens: chunk.tokens.count)
            }
        }
        if let encoded {
            return encoded.withUnsafeBytes { write(chunk.key, content(codec), payload: $0) }
        }
        return chunk.withUnsafeBytes { write(chunk.key, content(0), payload: $0) }
    }

    /// Writes a value record of the `lm://` server (blocking), replacing the one under `hash`;
    /// `false` when declined or failed.
    @discardableResult
    package func writeValue(hash: ChunkHash, _ description: ChunkFormat.ValueDescription, payload: UnsafeRawBufferPointer)
        -> Bool
    {
        let key = ChunkFormat.valueKey(hash)
        removeNow(key)
        return write(key, .value(description), payload: payload)
    }

    /// Opens the value record under `hash` and checks its header (blocking); `nil` on a miss or a
    /// bad header. The reader's ``DiskRecordReader/readPayload(into:threads:counting:)`` reads and checks its bytes.
    package func openValue(hash: ChunkHash) -> DiskRecordReader? { openRecord(ChunkFormat.valueKey(hash)) }

    /// Writes the file of the record `content` under `key` with `payload` (for a chunk, its KV
    /// bytes or their encoded stream).
    private func write(_ key: CacheKey, _ content: ChunkFormat.Content, payload: UnsafeRawBufferPointer) -> Bool {
        let headerLength = ChunkFormat.headerLength(of: content, alignment: ChunkFormat.diskAlignment)
        let fileSize = headerLength + payload.count
        let now = ContinuousClock.now
        let reservation = state.withLock { $0.reserve(key, size: fileSize, capacity: capacity, now: now) }
        guard case .reserved(let victims) = reservation else {
            if case .tooLarge = reservation {
                logger.debug("chunk larger than the disk tier", metadata: ["lmcache.chunk.bytes": "\(fileSize)"])
            }
            return false
        }
        for victim in victims { unlink(directory + "/" + victim) }
        metrics.evictions.increment(by: victims.count)

        let fileName = ChunkFormat.fileName(for: key)
        let finalPath = directory + "/" + fileName
        let temporaryPath =
            directory + "/" + ChunkFormat.temporaryPrefix
            + "\(getpid())-\(temporaryCounter.add(1, ordering: .relaxed).newValue)-" + fileName
        let outcome = writeFile(
            hash: key.hash, content, payload: payload, headerLength: headerLength,
            temporaryPath: temporaryPath, finalPath: finalPath
        )
        switch outcome {
        case .success:
            state.withLock { $0.commit(key, fileName: fileName, size: fileSize) }
            metrics.stores.increment()
            metrics.writtenBytes.increment(by: fileSize)
            return true
        case .failure(let error):
            unlink(temporaryPath)
            state.withLock { $0.abandon(key, size: fileSize) }
            metrics.rejections.increment()
            if error.isFull {
                pauseWrites(reason: error.description)
            } else if error.refusesWrites {
                refuseWrites(reason: error.description)
            } else {
                logger.warning(
                    "disk tier write failed",
                    metadata: ["lmcache.error": "\(error)", "lmcache.path": "\(finalPath)"]
                )
            }
            return false
        }
    }

    /// Removes `key` and its file.
    @discardableResult
    public func removeNow(_ key: CacheKey) -> Bool {
        guard let fileName = state.withLock({ $0.remove(key) }) else { return false }
        unlink(directory + "/" + fileName)
        return true
    }

    /// Removes every chunk file the index holds.
    public func removeAll() {
        let names = state.withLock { $0.removeAll() }
        for name in names { unlink(directory + "/" + name) }
    }

    // MARK: - Files

    private struct IOError: Error, CustomStringConvertible {
        var code: Int32
        var operation: String
        var description: String { "\(operation): \(String(cString: strerror(code)))" }
        var isMissing: Bool { code == ENOENT }
        /// A full disk or quota: writes pause for ``LocalDiskTier/fullDiskPause``, then are tried again.
        var isFull: Bool { code == ENOSPC || code == EDQUOT }
        /// Refusals that will not go away by retrying: the tier stops writing for good.
        var refusesWrites: Bool { [EACCES, EPERM, EROFS].contains(code) }
    }

    private enum ReadError: Error, CustomStringConvertible {
        case io(IOError)
        case format(ChunkFormatError)
        var isMissing: Bool { if case .io(let error) = self { error.isMissing } else { false } }
        var description: String {
            switch self {
            case .io(let error): "\(error)"
            case .format(let error): "\(error)"
            }
        }
    }

    /// Opens the file at `path` and checks its header. With `direct` (the payload will be read
    /// with `O_DIRECT`), the header read asks for no read-ahead, which would cache the payload.
    private static func openFile(path: String, direct: Bool) -> Result<(Int32, ChunkFormat.Header), ReadError> {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(.io(IOError(code: errno, operation: "open"))) }
        if direct { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_RANDOM)) }
        var keepOpen = false
        defer { if !keepOpen { close(fd) } }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure(.io(IOError(code: errno, operation: "fstat"))) }
        switch readHeader(fd, fileSize: Int(info.st_size)) {
        case .success(let parsed):
            if !direct {
                _ = posix_fadvise(fd, off_t(parsed.headerLength), off_t(parsed.payloadLength), Int32(POSIX_FADV_SEQUENTIAL))
            }
            keepOpen = true
            return .success((fd, parsed))
        case .failure(let error):
            return .failure(.format(error))
        }
    }

    /// Reads and checks the header of the open file `fd`: the first page (where a header usually
    /// ends), then as much as it declares, within the format's caps.
    private static func readHeader(_ fd: Int32, fileSize: Int) -> Result<ChunkFormat.Header, ChunkFormatError> {
        var header = [UInt8](repeating: 0, count: min(fileSize, ChunkFormat.diskAlignment))
        guard fileSize >= ChunkFormat.fixedSize, readFully(fd, into: &header, at: 0) else {
            return .failure("file shorter than a header")
        }
        if let declared = header.withUnsafeBytes({ ChunkFormat.declaredHeaderLength($0) }), declared > header.count {
            guard declared <= min(fileSize, ChunkFormat.maxHeaderLength) else {
                return .failure("header length \(declared) impossible for a file of \(fileSize) bytes")
            }
            header = [UInt8](repeating: 0, count: declared)
            guard readFully(fd, into: &header, at: 0) else { return .failure("file shorter than its header") }
        }
        return header.withUnsafeBytes {
            ChunkFormat.parseHeader($0, recordSize: fileSize, alignment: ChunkFormat.diskAlignment)
        }
    }

    fileprivate static func readFully(_ fd: Int32, into buffer: inout [UInt8], at offset: Int) -> Bool {
        buffer.withUnsafeMutableBytes { readFully(fd, into: $0, at: offset) }
    }

    fileprivate static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    private func writeFile(
        hash: ChunkHash,
        _ content: ChunkFormat.Content,
        payload: UnsafeRawBufferPointer,
        headerLength: Int,
        temporaryPath: String,
        finalPath: String
    ) -> Result<Void, IOError> {
        let header = UnsafeMutableRawBufferPointer.allocate(byteCount: headerLength, alignment: ChunkFormat.diskAlignment)
        defer { header.deallocate() }
        ChunkFormat.writeHeader(
            hash: hash,
            content: content,
            payloadLength: payload.count,
            payloadChecksum: ChunkChecksum.payload(payload),
            into: header
        )
        var fd: Int32 = -1
        if directIO.load(ordering: .relaxed) {
            fd = openDirect(temporaryPath, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
            if fd < 0 { unlink(temporaryPath) }  // A refused O_DIRECT open may have created it.
        }
        let direct = fd >= 0
        if !direct { fd = Glibc.open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
        guard fd >= 0 else { return .failure(IOError(code: errno, operation: "create")) }
        var closed = false
        defer { if !closed { close(fd) } }
        let written = UnsafeRawBufferPointer(header)
        let wrote =
            direct
            ? Self.writeDirect(fd, header: written, payload: payload)
            : Self.writeBuffered(fd, header: written, payload: payload)
        if case .failure = wrote { return wrote }
        if fsync && Glibc.fsync(fd) != 0 { return .failure(IOError(code: errno, operation: "fsync")) }
        closed = true
        guard close(fd) == 0 else { return .failure(IOError(code: errno, operation: "close")) }
        guard rename(temporaryPath, finalPath) == 0 else { return .failure(IOError(code: errno, operation: "rename")) }
        if fsync {
            let dirfd = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dirfd >= 0 {
                _ = Glibc.fsync(dirfd)
                close(dirfd)
            }
        }
        return .success(())
    }

    /// Writes `header` then `payload` to `fd` with as few `writev` calls as the kernel allows.
    private static func writeBuffered(_ fd: Int32, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer)
        -> Result<Void, IOError>
    {
        var vectors = [
            iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count),
            iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count),
        ]
        var remaining = header.count + payload.count
        var first = 0
        while remaining > 0 {
            let n = vectors[first...].withUnsafeBufferPointer { writev(fd, $0.baseAddress, Int32($0.count)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return .failure(IOError(code: n == 0 ? EIO : errno, operation: "write")) }
            remaining -= n
            var advanced = n
            while advanced > 0 && first < vectors.count {
                if advanced >= vectors[first].iov_len {
                    advanced -= vectors[first].iov_len
                    first += 1
                } else {
                    vectors[first].iov_base = vectors[first].iov_base! + advanced
                    vectors[first].iov_len -= advanced
                    advanced = 0
                }
            }
        }
        return .success(())
    }

    /// Writes `header` (a whole number of pages, page-aligned) then `payload` to `fd`, opened with
    /// `O_DIRECT`: the payload goes through an aligned buffer a piece at a time, the last piece
    /// padded to a whole page, and the file is then cut to its true length.
    private static func writeDirect(_ fd: Int32, header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer)
        -> Result<Void, IOError>
    {
        func writeAll(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> IOError? {
            var done = 0
            while done < bytes.count {
                let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return IOError(code: n == 0 ? EIO : errno, operation: "write") }
                done += n
            }
            return nil
        }
        if let error = writeAll(header, at: 0) { return .failure(error) }
        let page = ChunkFormat.diskAlignment
        let piece = DiskRecordReader.directPiece
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: page)
        defer { scratch.deallocate() }
        var start = 0
        while start < payload.count {
            let length = min(piece, payload.count - start)
            let aligned = (length + page - 1) / page * page
            scratch.baseAddress!.copyMemory(from: payload.baseAddress! + start, byteCount: length)
            if aligned > length { (scratch.baseAddress! + length).initializeMemory(as: UInt8.self, repeating: 0, count: aligned - length) }
            if let error = writeAll(UnsafeRawBufferPointer(rebasing: scratch[..<aligned]), at: header.count + start) {
                return .failure(error)
            }
            start += length
        }
        guard ftruncate(fd, off_t(header.count + payload.count)) == 0 else {
            return .failure(IOError(code: errno, operation: "ftruncate"))
        }
        return .success(())
    }

    /// Deletes a file that failed its checks and forgets its key.
    fileprivate func quarantine(key: CacheKey, path: String, reason: String) {
        logger.warning(
            "corrupt chunk file deleted",
            metadata: ["lmcache.path": "\(path)", "lmcache.reason": "\(reason)"]
        )
        state.withLock {
            $0.forget(key)
            $0.counters.corrupt += 1
        }
        unlink(path)
    }

    /// Keeps new chunks out for ``fullDiskPause`` after the disk filled up (by this tier or by anyone
    /// else); the chunks on disk are still served, and writes are tried again after the pause.
    private func pauseWrites(reason: String) {
        let until = ContinuousClock.now + fullDiskPause
        let wasWriting = state.withLock { state -> Bool in
            defer { state.writesPausedUntil = until }
            return state.writesPausedUntil == nil
        }
        if wasWriting {
            logger.warning(
                "disk full: the disk tier stops writing for \(fullDiskPause); its chunks are still served",
                metadata: ["lmcache.path": "\(directory)", "lmcache.reason": "\(reason)"]
            )
        }
    }

    /// Stops writing for good after a refusal that retrying will not cure; reads go on.
    private func refuseWrites(reason: String) {
        let wasWritable = state.withLock { state -> Bool in
            defer { state.writable = false }
            return state.writable
        }
        if wasWritable {
            logger.error(
                "the disk tier stops writing; its chunks are still served",
                metadata: ["lmcache.path": "\(directory)", "lmcache.reason": "\(reason)"]
            )
        }
    }

    /// Scans the directory: indexes complete chunk files, deletes temporary and corrupt ones.
    private func rebuildIndex() throws(StorageError) {
        guard let dir = opendir(directory) else {
            throw StorageError(.io, "cannot read disk tier directory \(directory): \(Self.describeErrno())")
        }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        closedir(dir)

        var found: [(key: CacheKey, name: String, size: Int, modified: Int)] = []
        var removedTemporary = 0
        var corrupt = 0
        var earlier = 0
        var foreign = 0
        for name in names {
            let path = directory + "/" + name
            if name.hasPrefix(ChunkFormat.temporaryPrefix) {
                unlink(path)
                removedTemporary += 1
                continue
            }
            guard name.hasSuffix(ChunkFormat.fileExtension) else {
                foreign += 1
                continue
            }
            switch Self.readHeader(path: path, direct: directIO.load(ordering: .relaxed)) {
            case .success(let (header, size, modified)) where ChunkFormat.fileName(for: header.key) == name:
                found.append((header.key, name, size, modified))
            case .success:
                logger.warning("chunk file under a wrong name deleted", metadata: ["lmcache.path": "\(path)"])
                unlink(path)
                corrupt += 1
            case .failure(let reason) where reason.isEarlierFormat:
                unlink(path)
                earlier += 1
            case .failure(let reason):
                logger.warning(
                    "corrupt chunk file deleted",
                    metadata: ["lmcache.path": "\(path)", "lmcache.reason": "\(reason)"]
                )
                unlink(path)
                corrupt += 1
            }
        }
        // Oldest first, so that recency order survives a restart approximately.
        found.sort { $0.modified < $1.modified }
        let overflow = state.withLock { state -> [String] in
            for file in found { state.commit(file.key, fileName: file.name, size: file.size, fresh: false) }
            state.counters.corrupt = corrupt
            return state.shrink(to: capacity)
        }
        for name in overflow { unlink(directory + "/" + name) }
        if earlier > 0 {
            logger.notice(
                "chunk files of an earlier format deleted; their chunks are computed again when next used",
                metadata: ["lmcache.path": "\(directory)", "lmcache.removed.earlier_format": "\(earlier)"]
            )
        }
        logger.info(
            "disk tier ready",
            metadata: [
                "lmcache.path": "\(directory)", "lmcache.chunks": "\(found.count - overflow.count)",
                "lmcache.removed.temporary": "\(removedTemporary)", "lmcache.removed.corrupt": "\(corrupt)",
                "lmcache.evicted.over_budget": "\(overflow.count)", "lmcache.ignored.foreign": "\(foreign)",
            ]
        )
    }

    private static func readHeader(path: String, direct: Bool) -> Result<(ChunkFormat.Header, Int, Int), ChunkFormatError> {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure("cannot open: \(describeErrno())") }
        if direct { _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_RANDOM)) }  // No read-ahead into the payload.
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return .failure("cannot stat: \(describeErrno())") }
        let size = Int(info.st_size)
        return readHeader(fd, fileSize: size).map {
            ($0, size, Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec))
        }
    }

    private static func describeErrno() -> String { String(cString: strerror(errno)) }

    /// Linux's `O_DIRECT`, which Glibc's module does not export (it sits behind `_GNU_SOURCE`).
    #if arch(arm64) || arch(arm)
    private static let oDirect: Int32 = 0o200000
    #else
    private static let oDirect: Int32 = 0o40000  // x86, and the generic Linux value
    #endif

    /// `path` opened with `flags | O_DIRECT` when the tier uses direct I/O; -1 when it does not,
    /// or when the file system refuses `O_DIRECT` (direct I/O is then switched off, logged once).
    fileprivate func openDirect(_ path: String, flags: Int32, mode: mode_t = 0) -> Int32 {
        guard directIO.load(ordering: .relaxed) else { return -1 }
        let fd = Glibc.open(path, flags | Self.oDirect | O_CLOEXEC, mode)
        if fd < 0 && errno == EINVAL && directIO.exchange(false, ordering: .relaxed) {
            logger.warning(
                "the file system refuses O_DIRECT; the disk tier goes on with buffered I/O",
                metadata: ["lmcache.path": "\(directory)"]
            )
        }
        return fd
    }
}

/// An open chunk file whose header passed its checks; reads the KV bytes into caller memory.
///
/// Closes the file when released. `@unchecked Sendable`: its properties never change after
/// creation and its reads use `pread` (no shared file offset), so it may be handed to another
/// thread; call ``read(into:threads:)`` from one thread at a time.
public final class DiskChunkReader: @unchecked Sendable {
    /// The chunk's key, tokens and layout, from the checked header.
    public let key: CacheKey
    public let tokens: [Int32]
    public let layout: KVLayout
    /// The payload's codec (``KVCodec``); 0 when it is the KV bytes as they are.
    private let codec: UInt32
    private let record: DiskRecordReader

    /// `nil` when `record` is not a KV chunk.
    fileprivate init?(_ record: DiskRecordReader) {
        guard case .kv(let tokens, let layout, _, let codec) = record.header.content else { return nil }
        self.key = record.header.key
        self.tokens = tokens
        self.layout = layout
        self.codec = codec
        self.record = record
    }

    /// Whether the payload is read with `O_DIRECT`, past the page cache.
    public var isDirect: Bool { record.isDirect }

    /// Bytes of KV the chunk holds.
    public var byteCount: Int { layout.byteCount(tokens: tokens.count) }

    /// Reads the KV bytes into `destination` (exactly ``byteCount`` bytes) and checks them; an
    /// encoded payload is read into scratch memory, checked, and decoded into `destination`.
    /// - Parameter threads: Threads that read and check blocks of this chunk (1 or 2): 2 for a
    ///   single read, 1 when the caller already reads several chunks at once.
    /// - Returns: `false` when the read fails, the bytes fail their checksum or do not decode; the
    ///   chunk is then removed from the tier (and `destination` holds garbage).
    public func read(into destination: UnsafeMutableRawBufferPointer, threads: Int = 2) -> Bool {
        precondition(destination.count == byteCount, "read(into:) needs exactly \(byteCount) bytes")
        guard codec != 0 else { return record.readPayload(into: destination, threads: threads) }
        let payloadLength = record.header.payloadLength
        let stream = UnsafeMutableRawBufferPointer.allocate(byteCount: max(1, payloadLength), alignment: 64)
        defer { stream.deallocate() }
        let payload = UnsafeMutableRawBufferPointer(rebasing: stream[0..<payloadLength])
        guard record.readPayload(into: payload, threads: threads, counting: false) else { return false }
        guard KVCodec.decode(UnsafeRawBufferPointer(payload), codec: codec, layout: layout, tokens: tokens.count, into: destination)
        else {
            record.reject("payload does not decode")
            return false
        }
        record.tier.countRead(bytes: payloadLength)
        return true
    }
}

/// An open record file (``ChunkFormat``) whose header passed its checks: a KV chunk's (read
/// through ``DiskChunkReader``) or a value's. Reads and checks the payload into caller memory.
///
/// Closes the file when released. `@unchecked Sendable` for the reasons ``DiskChunkReader`` gives.
package final class DiskRecordReader: @unchecked Sendable {
    /// The checked header.
    package let header: ChunkFormat.Header
    fileprivate let tier: LocalDiskTier
    private let path: String
    private let fd: Int32
    /// The same file opened with `O_DIRECT` for the payload; -1 for buffered reads.
    private let directFD: Int32
    private var payloadOffset: Int { header.headerLength }
    private var checksum: UInt64 { header.payloadChecksum }

    fileprivate init(tier: LocalDiskTier, path: String, fd: Int32, directFD: Int32, header: ChunkFormat.Header) {
        self.tier = tier
        self.path = path
        self.fd = fd
        self.directFD = directFD
        self.header = header
    }

    deinit {
        close(fd)
        if directFD >= 0 { close(directFD) }
    }

    /// Whether the payload is read with `O_DIRECT`, past the page cache.
    var isDirect: Bool { directFD >= 0 }

    /// Removes the record from the tier as corrupt (`reason` logged) and counts a failed read.
    fileprivate func reject(_ reason: String) {
        tier.quarantine(key: header.key, path: path, reason: reason)
        tier.countFailedRead()
    }

    /// Reads the stored payload (exactly its length) into `destination` and checks its checksum;
    /// `false` (the record removed from the tier) when the read fails or the bytes do not match.
    /// - Parameters:
    ///   - threads: Threads that read and check blocks (1 or 2).
    ///   - counting: Count the read in the tier's metrics (a caller that decodes the payload counts it itself).
    package func readPayload(into destination: UnsafeMutableRawBufferPointer, threads: Int = 2, counting: Bool = true) -> Bool {
        precondition(destination.count == header.payloadLength)
        guard readAndCheck(into: destination, threads: threads) else { return false }
        if counting { tier.countRead(bytes: destination.count) }
        return true
    }

    private func readAndCheck(into destination: UnsafeMutableRawBufferPointer, threads: Int) -> Bool {
        // Each block is hashed right after it is read, while it is still in cache; by default the
        // blocks are split between two threads, each reading and hashing its own, so that the
        // kernel's copy and the checksum run on both cores.
        let blocks = ChunkChecksum.blocks(destination.count)
        let hashes = UnsafeMutableBufferPointer<UInt64>.allocate(capacity: blocks)
        defer { hashes.deallocate() }
        let failed = Atomic<Bool>(false)
        if directFD >= 0 {
            return checkPayload(hashes, read: readDirect(into: destination, hashes: hashes))
        }
        let workers = blocks >= 4 ? max(1, min(threads, 2)) : 1
        let base = UInt(bitPattern: destination.baseAddress)
        let count = destination.count
        let fd = self.fd
        let payloadOffset = self.payloadOffset
        let hashBase = UInt(bitPattern: hashes.baseAddress)
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            // Worker w takes blocks w, w + workers, …: disjoint parts of `destination` and `hashes`.
            for index in stride(from: worker, to: blocks, by: workers) {
                let start = index * ChunkChecksum.block
                let end = min(start + ChunkChecksum.block, count)
                let block = UnsafeMutableRawBufferPointer(
                    start: UnsafeMutableRawPointer(bitPattern: base)! + start,
                    count: end - start
                )
                guard LocalDiskTier.readFully(fd, into: block, at: payloadOffset + start) else {
                    failed.store(true, ordering: .relaxed)
                    return
                }
                UnsafeMutablePointer<UInt64>(bitPattern: hashBase)![index] =
                    ChunkChecksum.blockHash(UnsafeRawBufferPointer(block), index: index)
            }
        }
        return checkPayload(hashes, read: !failed.load(ordering: .relaxed))
    }

    /// Direct reads need an aligned buffer, length and offset (the payload starts on a page):
    /// the payload is read a piece at a time into an aligned scratch buffer, each piece copied
    /// into `destination` and its checksum blocks hashed while they are still in cache.
    private func readDirect(
        into destination: UnsafeMutableRawBufferPointer,
        hashes: UnsafeMutableBufferPointer<UInt64>
    ) -> Bool {
        let block = ChunkChecksum.block
        if destination.isEmpty {
            hashes[0] = ChunkChecksum.blockHash(UnsafeRawBufferPointer(destination), index: 0)
            return true
        }
        let piece = Self.directPiece
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: ChunkFormat.diskAlignment)
        defer { scratch.deallocate() }
        var start = 0
        while start < destination.count {
            let length = min(piece, destination.count - start)
            let aligned = (length + ChunkFormat.diskAlignment - 1) / ChunkFormat.diskAlignment * ChunkFormat.diskAlignment
            // The last piece asks for whole pages; the read stops at the end of the file.
            var done = 0
            while done < length {
                let n = pread(directFD, scratch.baseAddress! + done, aligned - done, off_t(payloadOffset + start + done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                done += n
            }
            (destination.baseAddress! + start).copyMemory(from: scratch.baseAddress!, byteCount: length)
            var offset = 0
            while offset < length {
                let end = min(offset + block, length)
                hashes[(start + offset) / block] = ChunkChecksum.blockHash(
                    UnsafeRawBufferPointer(rebasing: destination[(start + offset)..<(start + end)]),
                    index: (start + offset) / block
                )
                offset = end
            }
            start += length
        }
        return true
    }

    /// Bytes one direct read asks for (a whole number of checksum blocks).
    static let directPiece = 4 * ChunkChecksum.block

    /// Whether a payload whose read succeeded (`read`) has `hashes` that combine to its checksum;
    /// the chunk is removed from the tier when not.
    private func checkPayload(_ hashes: UnsafeMutableBufferPointer<UInt64>, read: Bool) -> Bool {
        guard read else {
            reject("payload shorter than its header says")
            return false
        }
        guard ChunkChecksum.combine(Array(hashes)) == checksum else {
            reject("payload checksum mismatch")
            return false
        }
        return true
    }
}

/// The swift-metrics instruments of one tier, created once.
struct TierMetrics: Sendable {
    let hits: Counter
    let misses: Counter
    let stores: Counter
    let evictions: Counter
    let rejections: Counter
    let readBytes: Counter
    let writtenBytes: Counter

    init(tier: String) {
        let dimensions = [("tier", tier)]
        hits = Counter(label: "lmcache.storage.hits", dimensions: dimensions)
        misses = Counter(label: "lmcache.storage.misses", dimensions: dimensions)
        stores = Counter(label: "lmcache.storage.stores", dimensions: dimensions)
        evictions = Counter(label: "lmcache.storage.evictions", dimensions: dimensions)
        rejections = Counter(label: "lmcache.storage.rejections", dimensions: dimensions)
        readBytes = Counter(label: "lmcache.storage.read_bytes", dimensions: dimensions)
        writtenBytes = Counter(label: "lmcache.storage.written_bytes", dimensions: dimensions)
    }
}

/// One value passed from one thread to another under a lock (see `LocalDiskTier.onIO`).
private final class HandOff<Value: Sendable>: Sendable {
    private let value = Mutex<Value?>(nil)

    func put(_ newValue: Value) { value.withLock { $0 = newValue } }

    func take() -> Value {
        guard let taken = value.withLock({ $0.take() }) else { preconditionFailure("taken before it was put") }
        return taken
    }
}
