package import LMCacheWire
package import Logging
package import NIOCore
import NIOPosix

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
    private let pool: ConnectionPool

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
        pool = ConnectionPool(
            connections: options.connections, minimumBackoff: options.minimumBackoff,
            maximumBackoff: options.maximumBackoff, eventLoopGroup: self.eventLoopGroup, logger: logger,
            server: "Redis server", address: "\(host):\(port)", whileDown: "unusable; answering misses until it is back",
            onConnectFailure: onConnectFailure
        )
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
        let index = routingKey.map(pool.slot(for:)) ?? pool.nextSlot()
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
    package func slotIndex(for key: String) -> Int { pool.slot(for: key) }

    /// A connected, authenticated channel of slot `index`, connecting if need be (see ``ConnectionPool``).
    private func channel(slot index: Int) async throws -> any Channel {
        do {
            return try await pool.channel(slot: index) { [self] in try await connect() }
        } catch is ConnectionPool.BackingOff {
            throw RedisClientError(.unreachable, "\(address) unreachable; backing off")
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

    /// Closes every connection. Requests after this reconnect.
    package func close() async { await pool.close() }
}
