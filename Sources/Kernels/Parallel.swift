internal import COpenBLAS
internal import Dispatch
internal import Foundation
internal import Synchronization

/// Runs work on several threads: the kernels split rows, heads or tiles into one share per thread.
///
/// Results never depend on the thread count: every split hands whole outputs (rows, tokens, heads) to
/// one thread, which computes each exactly as a single thread would. KV made on a host with 2 threads
/// is therefore the same as KV made with 16, and can be shared between them.
package enum Parallel {
    /// The count set by ``setThreadCount(_:)``, or 0 until the first use chooses the default.
    private static let configured = Atomic<Int>(0)

    /// Number of threads the kernels use: what ``setThreadCount(_:)`` set, else `LMCACHE_THREADS`, else
    /// the CPUs this process may use (``availableCPUs()``).
    package static var threadCount: Int {
        let n = configured.load(ordering: .relaxed)
        if n > 0 { return n }
        _ = configured.compareExchange(expected: 0, desired: defaultThreadCount, ordering: .relaxed)
        return configured.load(ordering: .relaxed)
    }

    /// Sets the thread count; call it before the first model loads (buffers are sized per thread).
    /// - Precondition: `count` ≥ 1.
    package static func setThreadCount(_ count: Int) {
        precondition(count >= 1, "the thread count must be at least 1")
        configured.store(count, ordering: .relaxed)
    }

    /// `LMCACHE_THREADS` when set to a positive number, else ``availableCPUs()``.
    package static var defaultThreadCount: Int {
        if let text = ProcessInfo.processInfo.environment["LMCACHE_THREADS"], let n = Int(text), n > 0 {
            return n
        }
        return availableCPUs()
    }

    /// The CPUs this process can keep busy: the CPUs its affinity mask allows (`taskset`, a container's
    /// cpuset), capped by its cgroup's CPU quota rounded up (`docker --cpus 1.5` gives 2), at least 1.
    /// Not the host's core count, which a container limited to one CPU would over-subscribe.
    package static func availableCPUs() -> Int {
        let affinity =
            (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)).flatMap(Self.allowedCPUs(status:))
            ?? ProcessInfo.processInfo.activeProcessorCount
        let quota = cgroupQuota()
        return Self.threads(affinity: affinity, quota: quota)
    }

    /// `min(affinity, ⌈quota⌉)`, at least 1; `quota` `nil` means unlimited.
    package static func threads(affinity: Int, quota: Double?) -> Int {
        var n = max(1, affinity)
        if let quota, quota > 0 { n = min(n, max(1, Int(quota.rounded(.up)))) }
        return n
    }

    /// The number of CPUs in the `Cpus_allowed_list:` line of `/proc/self/status` text ("0-3,8,10-11").
    package static func allowedCPUs(status: String) -> Int? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else {
            return nil
        }
        let list = line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
        var count = 0
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch bounds.count {
            case 1:
                guard bounds[0] != nil else { return nil }
                count += 1
            case 2:
                guard let lo = bounds[0], let hi = bounds[1], hi >= lo else { return nil }
                count += hi - lo + 1
            default:
                return nil
            }
        }
        return count > 0 ? count : nil
    }

    /// The tightest CPU quota (in CPUs) of this process's cgroup and its ancestors, cgroup v2 or v1;
    /// `nil` when there is none.
    static func cgroupQuota() -> Double? {
        guard let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        var limits: [Double] = []
        for line in membership.split(separator: "\n") {
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            var path = String(fields[2])
            if fields[0] == "0" {
                // v2: cpu.max in the group and every ancestor ("max 100000" or "150000 100000").
                while true {
                    let text = try? String(contentsOfFile: "/sys/fs/cgroup\(path)/cpu.max", encoding: .utf8)
                    if let text, let quota = Self.cpuMaxQuota(text) { limits.append(quota) }
                    if path == "/" || path.isEmpty { break }
                    path = (path as NSString).deletingLastPathComponent
                }
            } else if fields[1].split(separator: ",").contains("cpu") {
                // v1: the group's CFS quota and period, mounted at /sys/fs/cgroup/cpu (inside a container,
                // the group's own directory is usually mounted there).
                for dir in ["/sys/fs/cgroup/cpu\(path)", "/sys/fs/cgroup/cpu"] {
                    let quota = (try? String(contentsOfFile: dir + "/cpu.cfs_quota_us", encoding: .utf8))
                        .flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
                    let period = (try? String(contentsOfFile: dir + "/cpu.cfs_period_us", encoding: .utf8))
                        .flatMap { Double($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
                    if let quota, let period, quota > 0, period > 0 {
                        limits.append(quota / period)
                        break
                    }
                }
            }
        }
        return limits.min()
    }

    /// The quota of a cgroup v2 `cpu.max` file in CPUs; `nil` for "max" (unlimited) or unreadable text.
    package static func cpuMaxQuota(_ text: String) -> Double? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count >= 2, let quota = Double(fields[0]), let period = Double(fields[1]), quota > 0, period > 0
        else { return nil }
        return quota / period
    }

    /// Makes OpenBLAS single-threaded, once, before the first BLAS call: the kernels split work over
    /// their own threads and call sgemm from each, so OpenBLAS's own pool would only compete (its idle
    /// workers spin).
    package static let configureBLAS: Void = {
        openblas_set_num_threads(1)
    }()

    /// Calls `body(part)` for `part` in `0..<parts`, spread over the threads; returns when all finished.
    @inline(__always)
    package static func run(_ parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 || threadCount == 1 {
            // One thread: no other thread is started (Dispatch would spread parts over every core).
            for part in 0..<max(0, parts) { body(part) }
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
