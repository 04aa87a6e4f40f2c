import LMCacheStorage
public import LMCacheWire
public import Logging
import Metrics
public import NIOCore
import NIOPosix
public import ServiceLifecycle
import Synchronization

/// A cache server that speaks LMCache's `lm://` protocol, as a `Service`.
///
/// Clients PUT opaque values under string keys and GET them back, byte for byte, with the
/// format, dtype and shape they were stored with. Unlike LMCache's reference server this one
/// keeps a byte budget with least-recently-used eviction (``LMValueStore``), caps lengths,
/// closes only the connection that sent malformed input, times out stalled and idle
/// connections, and stops gracefully: on shutdown it stops accepting, finishes the request each
/// connection is in, and closes them.
///
/// Requests on one connection are answered in order. PUT has no reply. A GET hit is answered
/// with the 200 header and the payload in one write; a miss with LMCache's 400 header. LIST,
/// which LMCache's server never answers, closes the connection with a log line (a client
/// waiting for an answer would otherwise wait forever).
///
/// ```swift
/// let server = LMServer(configuration: .init(host: "localhost", port: 65432), logger: logger)
/// let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
/// try await group.run()
/// ```
public final class LMServer: Service {
    /// The store the server serves from.
    public let store: LMValueStore
    /// Where GET and EXIST look for keys the store lacks (a P2P peer's own chunks), if anywhere.
    public let fallback: (any LMValueSource)?
    /// The server's settings.
    public let configuration: LMServerConfiguration
    /// The second tier on disk, if any: written through on PUT, read on a memory miss.
    public let disk: LMDiskStore?
    /// TLS around each connection, if any.
    public let security: ConnectionSecurity?
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let listening = PortAnnouncement()
    private let activeConnections = Atomic<Int>(0)
    private let connectionsGauge = Gauge(label: "lmcache.server.connections")
    private let acceptedCounter = Counter(label: "lmcache.server.connections.accepted")
    private let protocolErrors = Counter(label: "lmcache.server.protocol_errors")
    private let refusedConnections = Counter(label: "lmcache.server.connections.refused")

    /// Creates a server; it listens when ``run()`` is called.
    /// - Parameters:
    ///   - configuration: Address, budget, caps and timeouts.
    ///   - store: The store to serve (a new one of `configuration.capacityBytes` by default).
    ///   - fallback: Values served for keys the store lacks (read only: PUTs go to the store).
    ///   - disk: A disk directory as second tier (see ``LMDiskStore``); none by default.
    ///   - security: TLS for every connection (from `LMCacheTLS`); none by default.
    ///   - eventLoopGroup: The NIO event loops (the shared singleton by default).
    ///   - logger: Where the server logs.
    public init(
        configuration: LMServerConfiguration,
        store: LMValueStore? = nil,
        fallback: (any LMValueSource)? = nil,
        disk: LMDiskStore? = nil,
        security: ConnectionSecurity? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "lmcache.server")
    ) {
        precondition(
            configuration.accessToken.map { (1...LMAccessToken.maximumLength).contains($0.utf8.count) } ?? true,
            "an access token is 1...\(LMAccessToken.maximumLength) bytes"
        )
        self.security = security
        self.configuration = configuration
        self.store =
            store ?? LMValueStore(capacity: configuration.capacityBytes, prefault: configuration.prefaultMemory)
        self.fallback = fallback
        self.disk = disk
        self.eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
    }

    /// Connections open now.
    public var connectionCount: Int { activeConnections.load(ordering: .relaxed) }

    /// The port the server listens on, once it does (useful with port 0).
    /// - Throws: ``LMServerError`` when the server failed to bind or has stopped.
    public func listeningPort() async throws -> Int { try await listening.wait() }

    /// Listens and serves until the task is cancelled or a graceful shutdown is triggered.
    public func run() async throws {
        let maximumValue = configuration.effectiveMaximumValueBytes
        let configuration = self.configuration
        let logger = self.logger
        let security = self.security
        let refused = refusedConnections
        let server: NIOAsyncChannel<NIOAsyncChannel<LMRequest, ByteBuffer>, Never>
        do {
            server = try await ServerBootstrap(group: eventLoopGroup)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 4 << 20)
                )
                .bind(host: configuration.host, port: configuration.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let progress = FrameProgress()
                        let operations = channel.pipeline.syncOperations
                        try addServerGuards(
                            to: channel,
                            security: security,
                            token: configuration.accessToken,
                            timeout: TimeAmount(configuration.stallTimeout),
                            logger: logger,
                            onRefusal: { refused.increment() }
                        )
                        try operations.addHandler(
                            ConnectionTimeoutHandler(
                                progress: progress,
                                idleTimeout: configuration.idleTimeout,
                                stallTimeout: configuration.stallTimeout,
                                logger: logger
                            )
                        )
                        try operations.addHandler(
                            ByteToMessageHandler(LMRequestDecoder(maximumPayloadBytes: maximumValue))
                        )
                        try operations.addHandler(RequestProgressHandler(progress: progress))
                        return try NIOAsyncChannel<LMRequest, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            listening.finish(
                .failure(LMServerError("cannot listen on \(configuration.host):\(configuration.port)", cause: error))
            )
            throw LMServerError("cannot listen on \(configuration.host):\(configuration.port)", cause: error)
        }
        let port = server.channel.localAddress?.port ?? configuration.port
        logger.info(
            "lm:// server listening",
            metadata: [
                "lmcache.address": "\(configuration.host):\(port)",
                "lmcache.capacity_bytes": "\(configuration.capacityBytes)",
                "lmcache.security": "\(security?.summary ?? "plain TCP")",
                "lmcache.access_token": "\(configuration.accessToken == nil ? "none" : "required")",
            ]
        )
        listening.finish(.success(port))
        defer { listening.finish(.failure(LMServerError("the server has stopped"))) }

        do {
            try await serve(server)
        } catch is CancellationError {
            // Cancellation stops the server too, but prefer a graceful shutdown: a connection
            // accepted and not yet handed to its task when the accept loop is cancelled is
            // dropped unclosed, which swift-nio treats as a programming error.
        }
        if let disk {
            await disk.flush()
            logger.info(
                "disk tier flushed",
                metadata: [
                    "lmcache.directory": "\(disk.tier.directory)", "lmcache.values": "\(disk.tier.statistics.count)",
                ]
            )
        }
        logger.info("lm:// server stopped")
    }

    /// Accepts connections until the listening channel closes, serving each in its own child task.
    private func serve(_ server: NIOAsyncChannel<NIOAsyncChannel<LMRequest, ByteBuffer>, Never>) async throws {
        let configuration = self.configuration
        let logger = self.logger
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        self.acceptedCounter.increment()
                        let count = self.activeConnections.add(1, ordering: .relaxed).newValue
                        guard count <= configuration.maximumConnections else {
                            self.activeConnections.subtract(1, ordering: .relaxed)
                            logger.info(
                                "too many connections; closing a new one",
                                metadata: ["lmcache.connections": "\(count - 1)"]
                            )
                            try? await connection.executeThenClose { _, _ in }
                            continue
                        }
                        self.connectionsGauge.record(count)
                        group.addTask {
                            await self.serve(connection)
                            let left = self.activeConnections.subtract(1, ordering: .relaxed).newValue
                            self.connectionsGauge.record(left)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            logger.info("lm:// server shutting down")
            server.channel.close(promise: nil)
        }
    }

    /// Answers the requests of one connection in order until it closes, breaks the protocol,
    /// or the server shuts down.
    private func serve(_ connection: NIOAsyncChannel<LMRequest, ByteBuffer>) async {
        let peer = connection.channel.remoteAddress.map { "\($0)" } ?? "?"
        let allocator = connection.channel.allocator
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await request in inbound.cancelOnGracefulShutdown() {
                    let header = request.header
                    switch header.command {
                    case .put:
                        let value = LMStoredValue(
                            payload: request.payload,
                            format: header.format,
                            dtype: header.dtype,
                            shape: header.shape
                        )
                        let (outcome, stored) = store.store(header.key, value)
                        await disk?.persist(header.key, stored)
                        if outcome == .tooLarge {
                            logger.debug(
                                "declined a value larger than the budget",
                                metadata: ["lmcache.key": "\(header.key)", "lmcache.bytes": "\(header.length)"]
                            )
                        }
                    case .get:
                        if let value = await lookUp(header.key, allocator: allocator) {
                            var buffer = allocator.buffer(capacity: LMReplyHeader.size)
                            value.replyHeader.write(to: &buffer)
                            if value.payload.readableBytes > 0 {
                                try await outbound.write(contentsOf: [buffer, value.payload])
                            } else {
                                try await outbound.write(buffer)
                            }
                        } else {
                            try await outbound.write(Self.replyBuffer(.miss, allocator: allocator))
                        }
                    case .exist:
                        var found = store.contains(header.key) || disk?.contains(header.key) == true
                        if !found, let fallback { found = await fallback.contains(header.key) }
                        try await outbound.write(Self.replyBuffer(found ? .ok : .notFound, allocator: allocator))
                    case .health:
                        try await outbound.write(Self.replyBuffer(.ok, allocator: allocator))
                    case .list:
                        logger.info(
                            "LIST is not supported (LMCache's server never answers it); closing the connection",
                            metadata: ["lmcache.peer": "\(peer)"]
                        )
                        return
                    }
                }
            }
        } catch let error as LMProtocolError {
            protocolErrors.increment()
            logger.info(
                "closing a connection that broke the lm:// protocol",
                metadata: ["lmcache.peer": "\(peer)", "lmcache.error": "\(error)"]
            )
        } catch {
            logger.debug("connection ended", metadata: ["lmcache.peer": "\(peer)", "lmcache.error": "\(error)"])
        }
    }

    /// The value of `key` from memory, or else from disk (then kept in memory again).
    /// The value under `key`: from memory, else from the disk tier (then kept in memory again), else
    /// from the read-only fallback.
    private func lookUp(_ key: String, allocator: ByteBufferAllocator) async -> LMStoredValue? {
        if let value = store.get(key) { return value }
        if let disk, let value = await disk.load(key, allocator: allocator) {
            store.put(key, value)
            return value
        }
        guard let fallback else { return nil }
        return await fallback.value(forKey: key, allocator: allocator)
    }

    private static func replyBuffer(_ header: LMReplyHeader, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: LMReplyHeader.size)
        header.write(to: &buffer)
        return buffer
    }
}

/// Values an ``LMServer`` serves beyond its own store: a P2P instance's cached chunks.
///
/// The server asks it on GET and EXIST for keys its store lacks; it never receives PUTs.
public protocol LMValueSource: Sendable {
    /// The value under `key`, or `nil` when there is none.
    func value(forKey key: String, allocator: ByteBufferAllocator) async -> LMStoredValue?
    /// Whether there is a value under `key`.
    func contains(_ key: String) async -> Bool
}

/// A failure of the server itself (not of one connection).
public struct LMServerError: Error, CustomStringConvertible, Sendable {
    /// What happened.
    public let message: String
    /// The underlying error, if any.
    public let cause: (any Error)?

    /// Creates an error.
    public init(_ message: String, cause: (any Error)? = nil) {
        self.message = message
        self.cause = cause
    }

    public var description: String { cause.map { "\(message): \($0)" } ?? message }
}
