#if LMCACHE_TSAN
#if canImport(Glibc)
import Glibc
#endif

/// What `Mutex` is in a thread-sanitizer build (`scripts/sanitize thread`): the same `withLock`
/// on a `pthread_mutex_t`, which the sanitizer sees.
///
/// Synchronization's `Mutex` locks with futexes inside the Swift runtime, which is not
/// instrumented, so the sanitizer cannot see that it orders the accesses it protects and reports
/// every one of them as a race. Each module that uses `Mutex` names this type instead in such a
/// build (its `SanitizedMutex+Alias.swift`); other builds never compile it.
public final class SanitizedMutex<Value: ~Copyable>: @unchecked Sendable {
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: consuming sending Value) {
        self.value = value
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    public func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return try body(&value)
    }
}
#endif
