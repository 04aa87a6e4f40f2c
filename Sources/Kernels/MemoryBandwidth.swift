internal import Foundation

/// The baseline for decode speed: how fast the machine reads memory that is not in any cache.
package enum MemoryBandwidth {
    /// Bytes per second of a plain parallel read of `bytes` (every byte loaded once, on the kernels'
    /// threads, in contiguous shares as the row loops read weights): the best of `runs` passes.
    ///
    /// Decode reads every weight once per token, so this rate over the weight bytes is what a decode
    /// step could reach if it did no arithmetic.
    package static func plainReadRate(_ bytes: UnsafeRawBufferPointer, runs: Int = 5) -> Double {
        guard let base = bytes.baseAddress, bytes.count >= 64 else { return 0 }
        let words = bytes.count / 64
        let sink = UncheckedSendable(UnsafeMutablePointer<SIMD16<UInt32>>.allocate(capacity: Parallel.threadCount))
        defer { sink.value.deallocate() }
        var best = 0.0
        for _ in 0..<max(1, runs) {
            let start = DispatchTime.now().uptimeNanoseconds
            Parallel.run(Parallel.threadCount) { part in
                let lo = words * part / Parallel.threadCount
                let hi = words * (part + 1) / Parallel.threadCount
                var a = SIMD16<UInt32>()
                var b = SIMD16<UInt32>()
                var i = lo
                // Safe: every load is one of the `words` whole 64-byte words inside `bytes`.
                while i + 1 < hi {
                    a ^= base.loadUnaligned(fromByteOffset: i * 64, as: SIMD16<UInt32>.self)
                    b ^= base.loadUnaligned(fromByteOffset: (i + 1) * 64, as: SIMD16<UInt32>.self)
                    i += 2
                }
                if i < hi { a ^= base.loadUnaligned(fromByteOffset: i * 64, as: SIMD16<UInt32>.self) }
                sink.value[part] = a ^ b
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            best = max(best, Double(words * 64) / seconds)
        }
        return best
    }
}
