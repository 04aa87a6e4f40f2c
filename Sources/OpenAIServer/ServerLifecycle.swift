internal import Hummingbird
internal import Inference
internal import LMCacheStorage
internal import Logging
internal import NIOCore
public import ServiceLifecycle
internal import Synchronization
public import UnixSignals
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// Starts a server's shutdown from code (a test, a program that embeds the server), exactly as SIGTERM
/// does.
public final class ShutdownTrigger: Sendable {
    let latch = Latch()

    /// A trigger that has not fired.
    public init() {}

    /// Starts the shutdown; later calls do nothing.
    public func fire() { latch.set() }
}

extension OpenAIServer {
    /// How long requests that the grace period cut short get to end (one engine step each, normally far
    /// less) before the server is stopped outright.
    public static let abortTimeout: Duration = .seconds(10)

    /// The longest a shutdown takes, from the signal (or ``ShutdownTrigger/fire()``) to
    /// ``run(services:signals:shutdown:onServerRunning:)`` returning: the grace period, the abort, the
    /// storage manager's flush (``StorageManager/flushTimeout``).
    public var shutdownBound: Duration {
        configuration.shutdownGrace + Self.abortTimeout + (storage?.flushTimeout ?? .zero)
    }

    /// Serves until `signals` (SIGTERM and SIGINT by default) or `shutdown` fires, then shuts down within
    /// ``shutdownBound``.
    ///
    /// The HTTP server, `services` (a program's other services: `lmcache serve`'s peers) and the storage
    /// manager (its write-behind) run in one `ServiceGroup`, which shuts them down in the reverse order:
    ///
    /// 1. the server stops accepting connections and closes idle ones; running requests go on for
    ///    ``Configuration/shutdownGrace`` (a second signal ends the grace period at once);
    /// 2. then every request still in the engine is cancelled (``GenerationEngine/cancelAll()``: the same
    ///    path as a client that goes away); their clients get a 503 error (an error event when streamed);
    /// 3. once the server has stopped, `services` shut down, last first;
    /// 4. then the storage manager's write-behind queue gets ``StorageManager/flushTimeout`` to drain.
    public func run(
        services: [any Service] = [],
        signals: [UnixSignal] = [.sigterm, .sigint],
        shutdown trigger: ShutdownTrigger = ShutdownTrigger(),
        onServerRunning: @escaping @Sendable (Int) async -> Void = { _ in }
    ) async throws {
        let services = ServiceGroup(
            services: (storage.map { [$0] } ?? []) + services + [makeApplication(onServerRunning: onServerRunning)],
            logger: logger
        )
        let grace = configuration.shutdownGrace
        // After the abort, the server's own stop, then the storage manager's flush.
        let stopTimeout = Self.abortTimeout + (storage?.flushTimeout ?? .zero)
        enum Event { case stopped, stopTimedOut, cancelled }
        try await withThrowingTaskGroup(of: Event.self) { group in
            group.addTask {
                try await services.run()
                return .stopped
            }
            if !signals.isEmpty {
                group.addTask {
                    var received = 0
                    for await signal in await UnixSignalsSequence(trapping: signals) {
                        received += 1
                        if received == 1 {
                            logger.notice("received \(signal): shutting down")
                            trigger.fire()
                        } else {
                            logger.notice("received \(signal) again: cancelling the running requests now")
                            abortRequests()
                        }
                    }
                    return .cancelled
                }
            }
            group.addTask {
                await trigger.latch.wait()
                guard !Task.isCancelled else { return .cancelled }
                let load = engine.load
                logger.info(
                    "shutting down: no new connections; \(load.running + load.waiting) requests have \(grace) to finish"
                )
                await services.triggerGracefulShutdown()
                do { try await Task.sleep(for: grace) } catch { return .cancelled }
                abortRequests()
                do { try await Task.sleep(for: stopTimeout) } catch { return .cancelled }
                return .stopTimedOut
            }
            // The services normally stop on their own once the server's requests are done; if cancelled
            // requests do not end in time, or the flush does not, they are stopped outright.
            while let event = try await group.next() {
                if event == .stopTimedOut {
                    logger.warning("still stopping \(stopTimeout) after the requests were cancelled: stopping outright")
                }
                if event != .cancelled { break }
            }
            group.cancelAll()
        }
    }

    /// Ends the grace period: cancels every request in the engine and refuses new ones.
    func abortRequests() {
        guard !aborting.isSet else { return }
        aborting.set()
        let load = engine.load
        if load.running + load.waiting > 0 {
            logger.notice("cancelling \(load.running) running and \(load.waiting) waiting requests")
        }
        engine.cancelAll()
    }
}

/// The request context of the server's routes: Hummingbird's, plus the connection, so that a handler can
/// tell when its client goes away.
struct ServerContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Set when the client closes the connection (or at least its sending side: with half-closure on, as
    /// Hummingbird has it, the two look the same until a write fails).
    ///
    /// A non-streaming request writes nothing until its end, so this is its only sign that nobody waits
    /// for it. The connection's own handler is watched, rather than the request body (Hummingbird's
    /// `consumeWithCancellationOnInboundClose`), because reading the body's stream to its end cancels it
    /// afterwards, which closes a keep-alive connection after the response.
    var clientGone: Latch {
        get async {
            (try? await channel.pipeline.handler(type: InboundCloseHandler.self).get())?.closed ?? Latch()
        }
    }
}

/// Sets its latch when the connection's inbound side closes (`inputClosed`, or the channel going inactive).
/// Added to every HTTP connection's pipeline; it only watches.
final class InboundCloseHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = NIOAny

    let closed = Latch()

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { closed.set() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed.set()
        context.fireChannelInactive()
    }
}

/// A flag set once, that tasks can wait for.
final class Latch: Sendable {
    private struct State {
        var isSet = false
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Void, Never>] = [:]
    }

    private let state = Mutex(State())

    var isSet: Bool { state.withLock { $0.isSet } }

    /// Sets the flag and wakes every waiter.
    func set() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.isSet else { return [] }
            state.isSet = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once the flag is set, or as soon as the task is cancelled.
    func wait() async {
        let id = state.withLock { state -> Int? in
            guard !state.isSet else { return nil }
            state.nextWaiter += 1
            return state.nextWaiter
        }
        guard let id else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    // Checked under the lock: a cancellation handler that ran before this found no waiter.
                    if state.isSet || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }
}
