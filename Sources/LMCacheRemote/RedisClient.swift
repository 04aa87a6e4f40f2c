package import LMCacheWire
package import Logging
package import NIOCore
import NIOPosix
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// A Redis client for one server: a small pool of pipelined connections on swift-nio.
///
/// Commands for one routing key always use the same connection, so they are executed in the
/// order they were sent (a GET after a SET of the same key sees it). A batch of commands is
/// written in one go and its replies come back together. Each connection authenticates
/// (`AUTH password` or `AUTH user password`) and selects its database when it opens.
///
/// When a connection fails it is dropped and the next request reconnects; after a failed
/// connect (refused, timed out, or refused credentials) the client waits with exponential
/// backoff before trying again and fails requests at once meanwhile, so callers never hang.
package final class RedisClient: Sendable {
    /// Connection and timing settings.
    package struct Options: Sendable {
        /// Connections in the pool. Default 4.
        package var connections: Int = 4
        /// Time allowed to connect and authenticate. Default 1 s.
        package var connectTimeout: Duration = .seconds(1)
        /// Time allowed for one batch's replies. Default 10 s.
        package var requestTimeout: Duration = .seconds(10)
        /// The first wait after a failed connect. Default 100 ms.
        package var minimumBackoff: Duration = .milliseconds(100)
        /// The longest wait between connect attempts. Default 5 s.
        package var maximumBackoff: Duration = .seconds(5)
        /// The largest bulk string accepted in a reply. Default 1 GiB.
        package var maximumValueBytes: Int = 1 << 30
        /// ACL user name for `AUTH user password`.
        package var user: String?
        /// Password for `AUTH`.
        package var password: String?
        /// Database number for `SELECT`; `nil` or 0 sends none.
        package var database: Int?
        /// TLS around each connection (`rediss://`); `nil` for plain TCP.
        package var security: ConnectionSecurity?

        package init() {}
    }

    /// The server's address.
    package let host: String
    /// The server's port.
    package let port: Int
    private let options: Options
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let slots: [Slot]
    private let nextSlot = Atomic<Int>(0)
    /// Called once per connect failure (metrics).
    private let onConnectFailure: @Sendable () -> Void

    /// Creates the client; it connects on first use.
    package init(
        host: String, port: Int, options: Options = Options(), eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger, onConnectFailure: @escaping @Sendable () -> Void = {}
    ) {
        precondition(options.connections > 0, "RedisClient needs at least one connection")
        self.host = host
        self.port = port
        self.options = options
        self.eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
        self.onConnectFailure = onConnectFailure
        slots = (0..<options.connections).map { _ in Slot() }
    }

    /// `host:port`.
    package var address: String { "\(host):\(port)" }

    // MARK: Requests

    /// Sends `commands` as one pipelined batch on the connection for `routingKey` (any
    /// connection when `nil`) and returns their replies in order. Error replies are returned,
    /// not thrown.
    /// - Throws: ``RedisClientError`` when the server is unreachable, the connection fails or the
    ///   replies do not come within the request timeout.
    package func send(_ commands: [RESPCommand], routingKey: String? = nil) async throws -> [RESPValue] {
        let index = routingKey.map(slot(for:)) ?? nextSlot.add(1, ordering: .relaxed).oldValue % slots.count
        let channel = try await channel(slot: index)
        return try await send(commands, on: channel)
    }

    /// Sends one command; see ``send(_:routingKey:)``.
    package func send(_ command: RESPCommand, routingKey: String? = nil) async throws -> RESPValue {
        try await send([command], routingKey: routingKey)[0]
    }

    private func send(_ commands: [RESPCommand], on channel: any Channel) async throws -> [RESPValue] {
        let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
        let seconds = options.requestTimeout
        let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(options.requestTimeout)) {
            // A late reply would arrive out of step: drop the connection, failing what waits on it.
            promise.fail(RedisClientError(.timeout, "no reply within \(seconds)"))
            channel.close(promise: nil)
        }
        defer { timeout.cancel() }
        // A write on a closed channel never reaches the handler that would fail the batch.
        // (Completing a promise twice is a no-op in NIO, so the handler and these may race.)
        channel.writeAndFlush(RedisRequest(commands: commands, promise: promise)).whenFailure { error in
            promise.fail(RedisClientError(.connectionClosed, "write failed: \(error)"))
        }
        return try await promise.futureResult.get()
    }

    // MARK: Connections

    /// The pool connection that requests for `key` use.
    package func slotIndex(for key: String) -> Int { slot(for: key) }

    private func slot(for key: String) -> Int {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        return Int(hash % UInt64(slots.count))
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

    private enum SlotAction {
        case use(any Channel)
        case wait(EventLoopFuture<any Channel>)
        case connect(failures: Int, promise: EventLoopPromise<any Channel>)
        case failFast
    }

    /// A connected, authenticated channel, connecting if need be.
    private func channel(slot index: Int) async throws -> any Channel {
        let slot = slots[index]
        let now = NIODeadline.now()
        let eventLoop = eventLoopGroup.next()
        let action: SlotAction = slot.state.withLock { state in
            switch state {
            case .connected(let channel) where channel.isActive:
                return .use(channel)
            case .connecting(let future):
                return .wait(future)
            case .backingOff(let until, _) where now < until:
                return .failFast
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
        case .failFast:
            throw RedisClientError(.unreachable, "\(address) unreachable; backing off")
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
                    logger.info("Redis server reachable again", metadata: ["lmcache.remote": "\(address)"])
                    // The server is back: the other connections need not wait out their back-off.
                    for other in slots where other !== slot {
                        other.state.withLock { if case .backingOff = $0 { $0 = .idle(failures: 0) } }
                    }
                }
                promise.succeed(channel)
                return channel
            } catch {
                let backoff = backoff(afterFailures: failures + 1)
                slot.state.withLock { $0 = .backingOff(until: .now() + backoff, failures: failures + 1) }
                onConnectFailure()
                if failures == 0 {
                    logger.info("Redis server unusable; answering misses until it is back",
                        metadata: ["lmcache.remote": "\(address)", "lmcache.error": "\(error)"])
                }
                promise.fail(error)
                throw error
            }
        }
    }

    /// Opens a connection, then authenticates and selects the database.
    private func connect() async throws -> any Channel {
        let maximumBulk = options.maximumValueBytes
        let channel: any Channel
        do {
            channel = try await SecuredConnection(
                host: host,
                port: port,
                connectTimeout: options.connectTimeout,
                security: options.security
            ) { channel in
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(RESPValueDecoder(maximumBulkBytes: maximumBulk)))
                try channel.pipeline.syncOperations.addHandler(RedisConnectionHandler())
            }
            .connect(on: eventLoopGroup)
            .get()
        } catch {
            // With TLS, a certificate that does not verify is reported here as itself, not as the
            // failed write of AUTH that would follow it.
            let link = options.security == nil ? "" : " over TLS"
            throw RedisClientError(.unreachable, "cannot connect to \(address)\(link): \(error)")
        }
        var handshake: [RESPCommand] = []
        if let password = options.password {
            if let user = options.user {
                handshake.append(RESPCommand("AUTH", user, password))
            } else {
                handshake.append(RESPCommand("AUTH", password))
            }
        }
        if let database = options.database, database != 0 { handshake.append(RESPCommand("SELECT", "\(database)")) }
        // A PING proves the server speaks RESP and needs no credentials we lack (NOAUTH).
        handshake.append(RESPCommand("PING"))
        do {
            let replies = try await send(handshake, on: channel)
            for (command, reply) in zip(handshake, replies) {
                if let message = reply.errorMessage {
                    let name = command.arguments[0].getString(at: 0, length: command.arguments[0].readableBytes) ?? "?"
                    throw RedisClientError(.authentication, "\(name) refused by \(address): \(message)")
                }
            }
        } catch {
            try? await channel.close()
            if let error = error as? RedisClientError, error.code == .authentication { throw error }
            throw RedisClientError(.unreachable, "\(address) did not complete the handshake: \(error)")
        }
        return channel
    }

    private func backoff(afterFailures failures: Int) -> TimeAmount {
        let minimum = TimeAmount(options.minimumBackoff).nanoseconds
        let maximum = TimeAmount(options.maximumBackoff).nanoseconds
        let shift = min(failures - 1, 20)
        return .nanoseconds(min(maximum, minimum << shift))
    }

    /// Closes every connection. Requests after this reconnect.
    package func close() async {
        for slot in slots {
            let channel: (any Channel)? = slot.state.withLock { state in
                if case .connected(let channel) = state {
                    state = .idle(failures: 0)
                    return channel
                }
                return nil
            }
            try? await channel?.close()
        }
    }
}
