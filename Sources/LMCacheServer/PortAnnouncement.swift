import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// The port a listener bound, announced to those who wait for it: a server's `listeningPort()`.
///
/// Waiters before the bind are resumed by ``finish(_:)``; later ones get the outcome at once. A
/// failure after success (the listener stopped) answers later waiters with that failure.
final class PortAnnouncement: Sendable {
    private enum State {
        case starting([CheckedContinuation<Int, any Error>])
        case listening(Int)
        case stopped(any Error)
    }

    private let state = Mutex(State.starting([]))

    /// The bound port, once there is one.
    /// - Throws: The failure to bind, or that the listener has stopped.
    func wait() async throws -> Int {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Int, any Error>) in
            let result: Result<Int, any Error>? = state.withLock { state in
                switch state {
                case .starting(let waiters):
                    state = .starting(waiters + [continuation])
                    return nil
                case .listening(let port): return .success(port)
                case .stopped(let error): return .failure(error)
                }
            }
            if let result { continuation.resume(with: result) }
        }
    }

    /// Records the outcome: the bound port, or why there is none (any more).
    func finish(_ result: Result<Int, LMServerError>) {
        let waiters: [CheckedContinuation<Int, any Error>] = state.withLock { state in
            switch state {
            case .starting(let waiters):
                switch result {
                case .success(let port): state = .listening(port)
                case .failure(let error): state = .stopped(error)
                }
                return waiters
            case .listening:
                if case .failure(let error) = result { state = .stopped(error) }
                return []
            case .stopped:
                return []
            }
        }
        for waiter in waiters { waiter.resume(with: result.mapError { $0 as any Error }) }
    }
}
