internal import COpenBLAS
internal import Dispatch
internal import Foundation
internal import Synchronization

/// Runs work on all cores: the kernels split rows, heads or tiles into one share per thread.
package enum Parallel {
    /// Number of threads the kernels use: `LMCACHE_THREADS` if set, else the number of active cores.
    package static let threadCount: Int = {
        if let text = ProcessInfo.processInfo.environment["LMCACHE_THREADS"], let n = Int(text), n > 0 {
            return n
        }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Makes OpenBLAS single-threaded, once, before the first BLAS call: the kernels split work over
    /// their own threads and call sgemm from each, so OpenBLAS's own pool would only compete (its idle
    /// workers spin).
    package static let configureBLAS: Void = {
        openblas_set_num_threads(1)
    }()

    /// Calls `body(part)` for `part` in `0..<parts`, spread over the threads; returns when all finished.
    @inline(__always)
    package static func run(_ parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 {
            if parts == 1 { body(0) }
            return
        }
        withoutActuallyEscaping(body) { body in
            let work = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: parts) { work.value($0) }
        }
    }

    /// Calls `body(job, worker)` for every job in `0..<jobs`; workers (`0..<threadCount`) take jobs in
    /// order from a shared counter, so uneven jobs balance out. `worker` indexes per-thread scratch.
    package static func forEachJob(_ jobs: Int, _ body: (_ job: Int, _ worker: Int) -> Void) {
        let workers = min(threadCount, jobs)
        if workers <= 1 {
            for j in 0..<jobs { body(j, 0) }
            return
        }
        let next = JobCounter()
        run(workers) { worker in
            while true {
                let j = next.value.add(1, ordering: .relaxed).oldValue
                if j >= jobs { break }
                body(j, worker)
            }
        }
    }

    /// Splits `0..<count` into `threadCount` contiguous ranges (fewer when `count` is small) and
    /// calls `body` with each range, in parallel.
    @inline(__always)
    package static func forRanges(_ count: Int, minimumPerPart: Int = 1, _ body: (Range<Int>) -> Void) {
        let parts = max(1, min(threadCount, count / max(1, minimumPerPart)))
        if parts == 1 {
            body(0..<count)
            return
        }
        run(parts) { p in
            body((count * p / parts)..<(count * (p + 1) / parts))
        }
    }
}

/// Carries a value across threads when the caller guarantees that sharing it is safe.
struct UncheckedSendable<Value>: @unchecked Sendable {
    // @unchecked: used only for closures over kernel memory that each thread touches in disjoint
    // ranges, and only for the duration of one `Parallel.run` call.
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The shared job counter of `Parallel.forEachJob`.
final class JobCounter: Sendable {
    let value = Atomic<Int>(0)
}
