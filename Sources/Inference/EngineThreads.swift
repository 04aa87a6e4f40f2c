internal import Kernels

/// The CPU threads the engine's kernels use, for the whole process.
///
/// The default is `LMCACHE_THREADS` when set, else the CPUs the process may use: its affinity mask
/// (`taskset`, a container's cpuset) capped by its cgroup CPU quota rounded up, so a container limited
/// to one CPU gets one thread. Results do not depend on the count: tokens, logits and KV bytes are the
/// same with 1 thread or 16, so hosts with different core counts can share KV.
public enum EngineThreads {
    /// The count in use (chosen on first use if ``set(_:)`` was not called).
    public static var count: Int { Parallel.threadCount }

    /// What the default would be here: `LMCACHE_THREADS`, else the CPUs this process may use.
    public static var defaultCount: Int { Parallel.defaultThreadCount }

    /// Sets the count. Call it before loading a model: per-thread buffers are sized when a model first runs.
    /// - Throws: ``InferenceError/invalidInput(_:)`` when `count` is below 1.
    public static func set(_ count: Int) throws(InferenceError) {
        guard count >= 1 else { throw InferenceError.invalidInput("the thread count must be at least 1, not \(count)") }
        Parallel.setThreadCount(count)
    }
}
