#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed region of anonymous memory, mapped once and optionally pre-faulted.
///
/// Fresh pages cost a page fault on first touch (about 2 GB/s here, far below memory bandwidth),
/// so the CPU tier touches the whole pool up front, on all cores, asking for transparent huge
/// pages first. The region is unmapped when the pool is released.
///
/// `@unchecked Sendable`: the base address and size never change; the bytes are written only
/// through extents that the owning tier hands to one writer at a time under its lock.
package final class MemoryPool: @unchecked Sendable {
    package let base: UnsafeMutableRawPointer
    package let size: Int

    /// Maps `size` bytes (rounded up to pages); `prefault` touches every page before returning;
    /// `hugePages` asks for transparent huge pages.
    package init(size: Int, prefault: Bool, hugePages: Bool = true) throws(StorageError) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let rounded = max(page, (size + page - 1) / page * page)
        #if os(Linux)
        let flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
        #else
        let flags = MAP_PRIVATE | MAP_ANON
        #endif
        let address = mmap(nil, rounded, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let address, address != MAP_FAILED else {
            throw StorageError(.outOfMemory, "cannot map \(rounded) bytes for the CPU tier: errno \(errno)")
        }
        base = address
        self.size = rounded
        #if os(Linux)
        if hugePages { _ = madvise(address, rounded, 14) }  // MADV_HUGEPAGE: fewer faults and TLB misses; advisory only.
        #endif
        if prefault { Self.touch(base: address, size: rounded, page: page) }
    }

    deinit { munmap(base, size) }

    /// Writes one byte per page, splitting the region across the machine's cores.
    private static func touch(base: UnsafeMutableRawPointer, size: Int, page: Int) {
        let workers = max(1, min(ProcessInfoLite.activeProcessorCount, 8))
        let pages = size / page
        let perWorker = (pages + workers - 1) / workers
        let address = UInt(bitPattern: base)
        ParallelFor.run(workers) { worker in
            let first = worker * perWorker
            let last = min(pages, first + perWorker)
            guard first < last else { return }
            // Each worker touches its own pages of the mapping, inside `size`.
            let start = UnsafeMutablePointer<UInt8>(bitPattern: address)!
            for p in first..<last { start[p * page] = 0 }
        }
    }
}

/// The number of online cores, without Foundation.
enum ProcessInfoLite {
    static var activeProcessorCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }
}

/// Runs `body(0..<count)` on `count` threads and waits for all.
enum ParallelFor {
    static func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard count > 1 else {
            body(0)
            return
        }
        final class Box: @unchecked Sendable {  // Read-only after creation.
            let body: @Sendable (Int) -> Void
            let index: Int
            init(_ body: @escaping @Sendable (Int) -> Void, _ index: Int) {
                self.body = body
                self.index = index
            }
        }
        var threads: [pthread_t] = []
        for index in 1..<count {
            var thread = pthread_t()
            let box = Unmanaged.passRetained(Box(body, index)).toOpaque()
            let started = pthread_create(
                &thread,
                nil,
                { raw in
                    let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
                    box.body(box.index)
                    return nil
                },
                box
            )
            if started == 0 {
                threads.append(thread)
            } else {
                Unmanaged<Box>.fromOpaque(box).release()
                body(index)
            }
        }
        body(0)
        for thread in threads { pthread_join(thread, nil) }
    }
}
