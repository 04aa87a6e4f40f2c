public import LMCacheWire
public import Logging
public import NIOCore
import LMCacheRemote
import NIOPosix
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// A connection to the P2P controller: one request at a time in flight per call, replies
/// matched in order, every request bounded by a timeout.
///
/// The client connects on first use and again after the connection breaks; after a failed
/// connect it answers ``ControllerClientError`` at once for ``Options/retryDelay`` instead of
/// waiting on an unreachable controller each time. A timed-out request closes the connection
/// (a late reply would be out of step).
///
/// ```swift
/// let client = ControllerClient(host: "10.0.0.1", port: 9000)
/// _ = try await client.send(.register(instanceID: "a", host: "10.0.0.2", port: 8200))
/// ```
public final class ControllerClient: Sendable {
    /// Timing settings.
    public struct Options: Sendable {
        /// Time allowed to connect. Default 1 s.
        public var connectTimeout: Duration = .seconds(1)
        /// Time allowed for one reply. Default 2 s.
        public var requestTimeout: Duration = .seconds(2)
        /// After a failed connect, requests fail at once for this long. Default 500 ms.
        public var retryDelay: Duration = .milliseconds(500)
        /// The shared token sent first on each connection (``LMAccessToken``; `p2p_token`), for a
        /// controller started with one; `nil` sends none.
        public var token: String?
        /// TLS handlers for each connection (`p2p_tls`; `LMCacheTLS` makes them), for a controller that
        /// speaks TLS; a certificate that does not verify is a failed connect.
        public var security: ConnectionSecurity?

        /// The defaults.
        public init() {}
    }

    /// The controller's address.
    public let host: String
    public let port: Int
    private let options: Options
    private let eventLoopGroup: any EventLoopGroup
    private let state = Mutex(State.idle)
    private let logger: Logger

    private enum State {
        case idle
        case connecting(EventLoopFuture<any Channel>)
        case connected(any Channel)
        case failed(until: NIODeadline)
    }

    /// Creates a client; it connects on first use.
    public init(
        host: String,
        port: Int,
        options: Options = Options(),
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "lmcache.p2p.controller")
    ) {
        self.host = host
        self.port = port
        self.options = options
        self.eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
    }

    /// Sends `request` and waits for its reply.
    /// - Throws: ``ControllerClientError`` when the controller cannot be reached, does not answer
    ///   within ``Options/requestTimeout``, or answers nonsense.
    public func send(_ request: ControllerMessage) async throws(ControllerClientError) -> ControllerMessage {
        let channel = try await channel()
        let promise = channel.eventLoop.makePromise(of: ControllerMessage.self)
        let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(options.requestTimeout)) {
            promise.fail(ControllerClientError.timedOut)
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        channel.writeAndFlush(PendingRequest(message: request, reply: promise)).whenFailure { promise.fail($0) }
        do {
            return try await promise.futureResult.get()
        } catch let error as ControllerClientError {
            throw error
        } catch {
            throw .connectionFailed("\(error)")
        }
    }

    /// Closes the connection; the next request reconnects.
    public func close() async {
        let channel: (any Channel)? = state.withLock { state in
            defer { state = .idle }
            if case .connected(let channel) = state { return channel }
            return nil
        }
        try? await channel?.close()
    }

    private enum Action {
        case use(any Channel)
        case wait(EventLoopFuture<any Channel>)
        case connect
        case fail
    }

    private func channel() async throws(ControllerClientError) -> any Channel {
        let now = NIODeadline.now()
        let action: Action = state.withLock { state in
            switch state {
            case .connected(let channel) where channel.isActive: return .use(channel)
            case .connecting(let future): return .wait(future)
            case .failed(let until) where now < until: return .fail
            case .connected, .failed, .idle: return .connect
            }
        }
        let future: EventLoopFuture<any Channel>
        switch action {
        case .use(let channel): return channel
        case .fail: throw .unreachable
        case .wait(let pending): future = pending
        case .connect:
            future = makeConnection()
            state.withLock { $0 = .connecting(future) }
        }
        do {
            let channel = try await future.get()
            state.withLock { state in
                if case .connecting(let current) = state, current === future { state = .connected(channel) }
            }
            return channel
        } catch {
            let retry = NIODeadline.now() + TimeAmount(options.retryDelay)
            state.withLock { state in
                if case .connecting(let current) = state, current === future { state = .failed(until: retry) }
            }
            logger.debug(
                "controller unreachable",
                metadata: ["lmcache.controller": "\(host):\(port)", "lmcache.error": "\(error)"]
            )
            throw .unreachable
        }
    }

    private func makeConnection() -> EventLoopFuture<any Channel> {
        SecuredConnection(
            host: host,
            port: port,
            connectTimeout: options.connectTimeout,
            security: options.security,
            token: options.token
        ) { channel in
            let operations = channel.pipeline.syncOperations
            try operations.addHandler(ByteToMessageHandler(ControllerMessageDecoder()))
            try operations.addHandler(ControllerClientHandler())
        }
        .connect(on: eventLoopGroup)
    }
}

/// Why a controller request failed. Every failure leaves the cache working: lookups miss.
public enum ControllerClientError: Error, Hashable, Sendable {
    /// No connection could be made (or one failed moments ago).
    case unreachable
    /// No reply within the request timeout.
    case timedOut
    /// The connection broke, or the controller sent something that is not a reply.
    case connectionFailed(String)
}

/// A request and the promise its reply completes.
struct PendingRequest {
    var message: ControllerMessage
    var reply: EventLoopPromise<ControllerMessage>
}

/// Writes requests and completes their promises with the replies, in order; fails every
/// outstanding promise when the connection ends.
final class ControllerClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ControllerMessage
    typealias OutboundIn = PendingRequest
    typealias OutboundOut = ByteBuffer

    private var waiting: [EventLoopPromise<ControllerMessage>] = []

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        request.message.write(to: &buffer)
        waiting.append(request.reply)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let reply = unwrapInboundIn(data)
        guard !waiting.isEmpty, !reply.isRequest else {
            failAll(ControllerClientError.connectionFailed("an unexpected message from the controller"))
            context.close(promise: nil)
            return
        }
        waiting.removeFirst().succeed(reply)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(ControllerClientError.connectionFailed("\(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(ControllerClientError.connectionFailed("the controller closed the connection"))
        context.fireChannelInactive()
    }

    private func failAll(_ error: ControllerClientError) {
        let promises = waiting
        waiting = []
        for promise in promises { promise.fail(error) }
    }
}
