import LMCacheStorage
@_spi(CustomByteBufferAllocator) import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// Memory for the values of an ``LMValueStore``: one region mapped once (optionally
/// pre-faulted), cut into extents, handed out as `ByteBuffer`s.
///
/// Fresh pages cost a page fault each on first touch; a store that gave every value new memory
/// from `malloc` paid for them on every PUT and gave them back on every eviction. Extents of the
/// pool are reused instead. A value's `ByteBuffer` owns its extent through a custom NIO
/// allocator, so the extent returns to the pool when the last reference goes away: after the
/// value has left the store *and* every GET reply that was writing it has been sent.
///
/// The allocator's functions are C functions without context, so pools are found by address in
/// a process-wide registry (a handful of entries). A buffer of the pool that grows or is
/// copied on write moves to `malloc` memory, which the same functions free.
final class LMValuePool: Sendable {
    /// Extent granularity (and the smallest extent).
    static let alignment = 4096

    /// The mapped region (`@unchecked Sendable` inside: fixed address and size).
    private let memory: MemoryPool
    private let state: Mutex<State>

    private struct State {
        var extents: ExtentAllocator
        /// Extent length by offset, for releases by pointer.
        var lengths: [Int: Int] = [:]
        /// Set when the owning store has gone: the region is unmapped with the last extent.
        var closing = false
    }

    /// Maps `capacity` bytes (rounded up to pages).
    /// - Throws: ``StorageError`` when the region cannot be mapped.
    init(capacity: Int, prefault: Bool) throws(StorageError) {
        // Ordinary pages: with transparent huge pages every first touch zeroes (and may first
        // compact) 2 MiB, which measured slower for PUTs than 4 KiB faults (docs/benchmarks.md).
        memory = try MemoryPool(size: capacity, prefault: prefault, hugePages: false)
        state = Mutex(State(extents: ExtentAllocator(capacity: memory.size, alignment: Self.alignment)))
        Self.registry.withLock { $0.append(self) }
    }

    /// Bytes an extent for `count` bytes takes.
    static func extentSize(_ count: Int) -> Int { (max(count, 1) + alignment - 1) / alignment * alignment }

    /// A buffer from the pool holding a copy of `bytes`; `nil` when no free extent is large enough.
    func buffer(copying bytes: ByteBuffer) -> ByteBuffer? {
        let count = bytes.readableBytes
        let offset: Int? = state.withLock { state in
            guard let extent = state.extents.allocate(count) else { return nil }
            state.lengths[extent.offset] = extent.length
            return extent.offset
        }
        guard let offset else { return nil }
        let destination = UnsafeMutableRawBufferPointer(start: memory.base + offset, count: Self.extentSize(count))
        bytes.withUnsafeReadableBytes { source in
            if source.count > 0 {
                destination.baseAddress!.copyMemory(from: source.baseAddress!, byteCount: source.count)
            }
        }
        return ByteBuffer(takingOwnershipOf: destination, allocator: Self.allocator, readerIndex: 0, writerIndex: count)
    }

    /// Bytes of extents handed out and not yet returned.
    var usedBytes: Int { state.withLock { $0.extents.usedBytes } }

    /// Marks the pool as no longer used for new values; it is unmapped once every extent is back.
    func close() {
        let empty = state.withLock { state in
            state.closing = true
            return state.lengths.isEmpty
        }
        if empty { Self.unregister(self) }
    }

    private func contains(_ address: UnsafeMutableRawPointer) -> Bool {
        address >= memory.base && address < memory.base + memory.size
    }

    /// Returns the extent at `address`.
    private func release(_ address: UnsafeMutableRawPointer) {
        let offset = address - memory.base
        let unregister: Bool = state.withLock { state in
            guard let length = state.lengths.removeValue(forKey: offset) else {
                preconditionFailure("LMValuePool: release of an address it did not hand out")
            }
            state.extents.release(ExtentAllocator.Extent(offset: offset, length: length))
            state.extents._checkInvariants()
            return state.closing && state.lengths.isEmpty
        }
        if unregister { Self.unregister(self) }
    }

    // MARK: The allocator

    private static let registry = Mutex<[LMValuePool]>([])

    private static func unregister(_ pool: LMValuePool) {
        registry.withLock { pools in pools.removeAll { $0 === pool } }
    }

    private static func owner(of address: UnsafeMutableRawPointer) -> LMValuePool? {
        registry.withLock { pools in pools.first { $0.contains(address) } }
    }

    /// NIO's allocator for pool buffers: new memory comes from `malloc`; memory is returned to
    /// the pool it came from, or to `free`.
    static let allocator = ByteBufferAllocator(
        allocate: { size in malloc(size) },
        reallocate: { pointer, oldSize, newSize in
            guard let pointer, let pool = LMValuePool.owner(of: pointer) else { return realloc(pointer, newSize) }
            // Pool memory cannot grow in place: move it to malloc memory.
            guard let moved = malloc(newSize) else { return nil }
            moved.copyMemory(from: pointer, byteCount: min(oldSize, newSize))
            pool.release(pointer)
            return moved
        },
        deallocate: { pointer in
            if let pool = LMValuePool.owner(of: pointer) { pool.release(pointer) } else { free(pointer) }
        },
        copy: { destination, source, count in destination.copyMemory(from: source, byteCount: count) }
    )
}
