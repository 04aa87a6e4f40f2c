import LMCacheCommandSupport
import LMCacheCore
import LMCacheStorage
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The source and destination buffers of a storage benchmark, cut into chunk-sized pieces.
struct Buffers {
    let source: UnsafeRawBufferPointer
    let destination: UnsafeMutableRawBufferPointer
    let chunkBytes: Int

    var chunkCount: Int { source.count / chunkBytes }

    func sourceChunk(_ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: source[(index * chunkBytes)..<((index + 1) * chunkBytes)])
    }

    func destinationChunk(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: destination[(index * chunkBytes)..<((index + 1) * chunkBytes)])
    }

    func copyOut(_ bytes: UnsafeRawBufferPointer, chunk index: Int) {
        _ = memcpy(destination.baseAddress! + index * chunkBytes, bytes.baseAddress!, chunkBytes)
    }

    /// The baseline: memcpy of every chunk from source to destination.
    func copyAll() {
        for index in 0..<chunkCount { copyOut(sourceChunk(index), chunk: index) }
    }

    func clearDestination() { memset(destination.baseAddress!, 0, destination.count) }

    /// Fails unless the destination holds exactly the source's bytes.
    func verify() throws {
        guard memcmp(source.baseAddress!, destination.baseAddress!, source.count) == 0 else {
            throw CommandFailure("bytes read back differ from bytes stored")
        }
        clearDestination()
    }
}

/// Chunk bytes that live in someone else's buffer (the benchmark's source), not owned.
///
/// `@unchecked Sendable`: the benchmark keeps the buffer alive and unchanged while chunks exist.
final class BorrowedChunkStorage: KVChunkStorage, @unchecked Sendable {
    let bytes: UnsafeRawBufferPointer
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
}

/// The disk tier against plain sequential file I/O of the same bytes, cold and warm.
struct DiskBenchmark {
    let directory: String?
    let buffers: Buffers
    let chunks: [TokenChunk]
    let tokens: [Int32]
    let layout: KVLayout
    let iterations: Int
    /// `extra_config`'s `use_odirect` and `local_disk_fsync`, as the tier would be configured.
    let directIO: Bool
    let fsync: Bool
    let logger: Logger

    func run() throws -> [(String, String)] {
        var template = "/tmp/lmcache-bench-XXXXXX".utf8CString
        let base: String
        let ownsDirectory = directory == nil
        if let directory {
            base = directory
        } else {
            guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                throw CommandFailure("cannot create a temporary directory")
            }
            base = String(cString: made)
        }
        let tierDirectory = base + "/bench-tier"
        let plainFile = base + "/bench-plain.bin"
        defer {
            unlink(plainFile)
            if ownsDirectory {
                rmdir(tierDirectory)
                rmdir(base)
            }
        }
        let total = buffers.source.count
        let capacity = 2 * total + (64 << 20)
        let kvChunks = chunks.enumerated().map { index, chunk in
            KVChunk(
                key: chunk.key,
                tokens: Array(tokens[chunk.range]),
                layout: layout,
                storage: BorrowedChunkStorage(buffers.sourceChunk(index))
            )
        }

        var puts: [Double] = []
        var plainWrites: [Double] = []
        var coldGets: [Double] = []
        var coldPlain: [Double] = []
        var warmGets: [Double] = []
        var warmPlain: [Double] = []
        var coldBatches: [Double] = []
        var warmBatches: [Double] = []
        for _ in 0..<iterations {
            let tier = try LocalDiskTier(
                directory: tierDirectory, capacity: capacity, fsync: fsync, directIO: directIO, logger: logger)
            tier.removeAll()
            puts.append(
                BenchStorageCommand.seconds {
                    for chunk in kvChunks { tier.write(chunk) }
                    sync()
                }
            )
            plainWrites.append(try BenchStorageCommand.secondsThrowing { try writePlain(plainFile) })

            // Cold: drop the files' pages from the page cache first.
            try dropCache(directory: tierDirectory)
            try dropCache(file: plainFile)
            coldGets.append(BenchStorageCommand.seconds { readTier(tier) })
            try buffers.verify()
            coldPlain.append(try BenchStorageCommand.secondsThrowing { try readPlain(plainFile) })
            try buffers.verify()
            // Warm: the same reads again, now from the page cache.
            warmGets.append(BenchStorageCommand.seconds { readTier(tier) })
            try buffers.verify()
            warmPlain.append(try BenchStorageCommand.secondsThrowing { try readPlain(plainFile) })
            try buffers.verify()
            // Batched: every chunk of the "hit" asked for at once, as the storage manager does.
            try dropCache(directory: tierDirectory)
            coldBatches.append(BenchStorageCommand.seconds { readTierBatched(tier) })
            try buffers.verify()
            warmBatches.append(BenchStorageCommand.seconds { readTierBatched(tier) })
            try buffers.verify()
            tier.removeAll()
        }
        let gb = Double(total) / 1e9
        var checksums: [Double] = []
        var sink: UInt64 = 0
        for _ in 0..<iterations {
            checksums.append(BenchStorageCommand.seconds { sink &+= ChunkChecksum.payload(buffers.source) })
        }
        precondition(sink != 1)
        let median = BenchStorageCommand.median
        let format = BenchStorageCommand.format
        return [
            ("direct_io", "\(directIO)"),
            ("fsync", "\(fsync)"),
            ("put_gbps", format(gb / median(puts))),
            ("get_gbps", format(gb / median(coldGets))),
            ("warm_get_gbps", format(gb / median(warmGets))),
            ("baseline", "\"sequential read of a plain file\""),
            ("baseline_gbps", format(gb / median(coldPlain))),
            ("warm_baseline_gbps", format(gb / median(warmPlain))),
            ("put_baseline_gbps", format(gb / median(plainWrites))),
            ("get_vs_baseline", format(median(coldPlain) / median(coldGets))),
            ("batch_get_gbps", format(gb / median(coldBatches))),
            ("warm_batch_get_gbps", format(gb / median(warmBatches))),
            ("batch_reads_in_flight", "\(LocalDiskTier.readsInFlight)"),
            ("batch_get_vs_baseline", format(median(coldPlain) / median(coldBatches))),
            ("warm_batch_get_vs_baseline", format(median(warmPlain) / median(warmBatches))),
            ("warm_get_vs_baseline", format(median(warmPlain) / median(warmGets))),
            ("put_vs_baseline", format(median(plainWrites) / median(puts))),
            ("checksum_gbps", format(gb / median(checksums))),
        ]
    }

    private func readTier(_ tier: LocalDiskTier) {
        for (index, chunk) in chunks.enumerated() {
            // Straight into the destination, as an engine (or the CPU tier, on promotion) loads it.
            _ = tier.open(chunk.key)?.read(into: buffers.destinationChunk(index))
        }
    }

    private func readTierBatched(_ tier: LocalDiskTier) {
        let ok = tier.read(chunks.map(\.key), into: chunks.indices.map { buffers.destinationChunk($0) })
        precondition(ok.allSatisfy { $0 }, "a batched disk read failed")
    }

    private func writePlain(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw CommandFailure("cannot create \(path)") }
        defer { close(fd) }
        for index in 0..<buffers.chunkCount {
            let chunk = buffers.sourceChunk(index)
            guard write(fd, chunk.baseAddress!, chunk.count) == chunk.count else {
                throw CommandFailure("write failed")
            }
        }
        sync()
    }

    private func readPlain(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CommandFailure("cannot open \(path)") }
        defer { close(fd) }
        for index in 0..<buffers.chunkCount {
            let chunk = buffers.destinationChunk(index)
            var done = 0
            while done < chunk.count {
                let n = pread(
                    fd,
                    chunk.baseAddress! + done,
                    chunk.count - done,
                    off_t(index * buffers.chunkBytes + done)
                )
                guard n > 0 else { throw CommandFailure("read failed") }
                done += n
            }
        }
    }

    private func dropCache(file path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CommandFailure("cannot open \(path)") }
        defer { close(fd) }
        _ = fdatasync(fd)
        _ = posix_fadvise(fd, 0, 0, Int32(POSIX_FADV_DONTNEED))
    }

    private func dropCache(directory: String) throws {
        guard let dir = opendir(directory) else { throw CommandFailure("cannot read \(directory)") }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.bindMemory(to: CChar.self).baseAddress!)
            }
            if name.hasSuffix(".lmkv") { try dropCache(file: directory + "/" + name) }
        }
    }
}

extension BenchStorageCommand {
    static func secondsThrowing(_ body: () throws -> Void) throws -> Double {
        var failure: (any Error)?
        let elapsed = seconds {
            do { try body() } catch { failure = error }
        }
        if let failure { throw failure }
        return elapsed
    }
}
