package import Logging
package import NIOCore
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// The connections of one client to one server (the `lm://` tier's, a Redis client's): a fixed
/// number of slots, each connecting on first use and again after its channel closes.
///
/// After a failed connect a slot backs off (``minimumBackoff`` doubling up to ``maximumBackoff``):
/// until then asking it for a channel fails at once with ``BackingOff``, so callers answer misses
/// instead of waiting on a dead server. The first slot to reach the server again ends the other
/// slots' back-off. Callers that ask a slot while it connects wait for that one attempt. The pool
/// logs the first failure of a run (`<server> unreachable…`) and the recovery (`<server> reachable
/// again`) once each, with the address.
package final class ConnectionPool: Sendable {
    /// A slot is waiting out its back-off after a failed connect.
    package struct BackingOff: Error {}

    /// The first wait after a failed connect.
    package let minimumBackoff: Duration
    /// The longest wait between connect attempts.
    package let maximumBackoff: Duration
    private let slots: [Slot]
    private let next = Atomic<Int>(0)
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let server: String
    private let address: String
    private let whileDown: String
    private let onConnectFailure: @Sendable () -> Void

    /// Creates the pool; nothing connects until a slot is asked for a channel.
    /// - Parameters:
    ///   - connections: Slots in the pool (at least one).
    ///   - server: What the server is, for log lines (`lm:// server`, `Redis server`).
    ///   - address: `host:port`, for log lines.
    ///   - whileDown: What the client does while the server is down, for the first failure's log line.
    ///   - onConnectFailure: Called on every failed connect (metrics).
    package init(
        connections: Int,
        minimumBackoff: Duration,
        maximumBackoff: Duration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        server: String,
        address: String,
        whileDown: String,
        onConnectFailure: @escaping @Sendable () -> Void = {}
    ) {
        precondition(connections > 0, "a connection pool needs at least one connection")
        self.minimumBackoff = minimumBackoff
        self.maximumBackoff = maximumBackoff
        self.slots = (0..<connections).map { _ in Slot() }
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.server = server
        self.address = address
        self.whileDown = whileDown
        self.onConnectFailure = onConnectFailure
    }

    /// Number of slots.
    package var count: Int { slots.count }

    /// The slot that requests about `key` use (FNV-1a of its UTF-8): requests for one key always
    /// share a connection, so they are answered in the order they were sent.
    package func slot(for key: String) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return Int(hash % UInt64(slots.count))
    }

    /// The next slot in turn, for requests about no key in particular.
    package func nextSlot() -> Int { next.add(1, ordering: .relaxed).oldValue % slots.count }

    /// The connected channel of slot `index`, connecting with `connect` if it has none.
    /// - Throws: ``BackingOff`` while the slot waits out a back-off; the connect attempt's error
    ///   when the attempt made or waited for fails.
    package func channel(slot index: Int, connect: @escaping @Sendable () async throws -> any Channel) async throws
        -> any Channel
    {
        let slot = slots[index]
        let now = NIODeadline.now()
        let eventLoop = eventLoopGroup.next()
        let action: Action = slot.state.withLock { state in
            switch state {
            case .connected(let channel) where channel.isActive:
                return .use(channel)
            case .connecting(let future):
                return .wait(future)
            case .backingOff(let until, _) where now < until:
                return .backingOff
            case .backingOff(_, let failures), .idle(let failures):
                let promise = eventLoop.makePromise(of: (any Channel).self)
                state = .connecting(promise.futureResult)
                return .connect(failures: failures, promise: promise)
            case .connected:
                let promise = eventLoop.makePromise(of: (any Channel).self)
                state = .connecting(promise.futureResult)
                return .connect(failures: 0, promise: promise)
            }
        }
        switch action {
        case .use(let channel):
            return channel
        case .backingOff:
            throw BackingOff()
        case .wait(let future):
            return try await future.get()
        case .connect(let failures, let promise):
            do {
                let channel = try await connect()
                slot.state.withLock { $0 = .connected(channel) }
                channel.closeFuture.whenComplete { _ in
                    slot.state.withLock { state in
                        if case .connected(let current) = state, current === channel { state = .idle(failures: 0) }
                    }
                }
                if failures > 0 {
                    logger.info("\(server) reachable again", metadata: ["lmcache.remote": "\(address)"])
                    // The server is back: the other slots need not wait out their back-off (each
                    // would fail at once until then).
                    for other in slots where other !== slot {
                        other.state.withLock { if case .backingOff = $0 { $0 = .idle(failures: 0) } }
                    }
                }
                promise.succeed(channel)
                return channel
            } catch {
                let wait = backoff(afterFailures: failures + 1)
                slot.state.withLock { $0 = .backingOff(until: .now() + wait, failures: failures + 1) }
                onConnectFailure()
                if failures == 0 {
                    logger.info(
                        "\(server) \(whileDown)",
                        metadata: ["lmcache.remote": "\(address)", "lmcache.error": "\(error)"]
                    )
                }
                promise.fail(error)
                throw error
            }
        }
    }

    /// Closes every connection and ends every back-off; requests after this connect again.
    package func close() async {
        for slot in slots {
            let channel: (any Channel)? = slot.state.withLock { state in
                defer { state = .idle(failures: 0) }
                guard case .connected(let channel) = state else { return nil }
                return channel
            }
            try? await channel?.close()
        }
    }

    private func backoff(afterFailures failures: Int) -> TimeAmount {
        let minimum = TimeAmount(minimumBackoff).nanoseconds
        let maximum = TimeAmount(maximumBackoff).nanoseconds
        return .nanoseconds(min(maximum, minimum << min(failures - 1, 20)))
    }

    private final class Slot: Sendable {
        let state = Mutex(SlotState.idle(failures: 0))
    }

    private enum SlotState {
        case idle(failures: Int)
        case connecting(EventLoopFuture<any Channel>)
        case connected(any Channel)
        case backingOff(until: NIODeadline, failures: Int)
    }

    private enum Action {
        case use(any Channel)
        case wait(EventLoopFuture<any Channel>)
        case connect(failures: Int, promise: EventLoopPromise<any Channel>)
        case backingOff
    }
}
