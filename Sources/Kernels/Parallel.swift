internal import COpenBLAS
internal import Dispatch
internal import Foundation

/// Runs work on all cores: the kernels split rows, heads or tiles into one share per thread.
package enum Parallel {
    /// Number of threads the kernels use: `LMCACHE_THREADS` if set, else the number of active cores.
    package static let threadCount: Int = {
        if let text = ProcessInfo.processInfo.environment["LMCACHE_THREADS"], let n = Int(text), n > 0 {
            return n
        }
        return max(1, ProcessInfo.processInfo.activeProcessorCount)
    }()

    /// Sets OpenBLAS to the same thread count once, before the first BLAS call.
    package static let configureBLAS: Void = {
        openblas_set_num_threads(Int32(threadCount))
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
