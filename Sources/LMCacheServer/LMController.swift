public import LMCacheWire
public import Logging
import Metrics
public import NIOCore
import NIOPosix
public import ServiceLifecycle
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// The P2P controller (`lmcache controller`), as a `Service`: it knows which instance holds which
/// chunk, and answers lookups with the peer to fetch from.
///
/// Instances keep one connection open, register, report the chunks they admit and evict in
/// batches, send heartbeats, and ask lookups; every request gets one reply, in order (see
/// ``ControllerMessage``). The map lives in memory only (``ControllerRegistry``): an instance
/// not heard from within ``Configuration/heartbeatTimeout`` is dropped, and a restarted
/// controller answers the first heartbeat of each instance with `unknownInstance`, upon which the
/// instance registers again and re-reports what it holds. A connection that breaks the protocol
/// is closed; the others keep being served.
///
/// ```swift
/// let controller = LMController(configuration: .init(host: "0.0.0.0", port: 9000))
/// let group = ServiceGroup(services: [controller], gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
public final class LMController: Service {
    /// Settings of the controller.
    public struct Configuration: Hashable, Sendable {
        /// Address to listen on.
        public var host: String
        /// TCP port; 0 picks a free one (see ``LMController/listeningPort()``).
        public var port: Int
        /// An instance not heard from for this long is dropped. Default 10 s.
        public var heartbeatTimeout: Duration
        /// The largest message accepted. Default ``ControllerMessage/defaultMaximumLength``.
        public var maximumMessageBytes: Int
        /// Connections beyond this many are closed as soon as they are accepted. Default 1024.
        public var maximumConnections: Int
        /// The shared token every connection must present first (``LMAccessToken``; `p2p_token`);
        /// `nil` (the default) requires none. A connection without it is closed before any message
        /// is read, so nobody without it can register an instance, report chunks or make the
        /// controller forget them.
        public var accessToken: String?

        /// Creates a configuration.
        public init(
            host: String = "localhost",
            port: Int = 9000,
            heartbeatTimeout: Duration = .seconds(10),
            maximumMessageBytes: Int = ControllerMessage.defaultMaximumLength,
            maximumConnections: Int = 1024
        ) {
            self.host = host
            self.port = port
            self.heartbeatTimeout = heartbeatTimeout
            self.maximumMessageBytes = maximumMessageBytes
            self.maximumConnections = maximumConnections
        }
    }

    /// The controller's settings.
    public let configuration: Configuration
    private let security: ConnectionSecurity?
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let registry: Mutex<ControllerRegistry>
    private let listening = PortAnnouncement()
    private let activeConnections = Atomic<Int>(0)
    private let lookups = Counter(label: "lmcache.controller.lookups")
    private let lookupHits = Counter(label: "lmcache.controller.lookup_hits")
    private let protocolErrors = Counter(label: "lmcache.controller.protocol_errors")
    private let refusedConnections = Counter(label: "lmcache.controller.refused_connections")

    /// Creates a controller; it listens when ``run()`` is called. `security` adds TLS to every
    /// connection (`LMCacheTLS` makes it from `p2p_tls_cert_file` and `p2p_tls_key_file`).
    /// - Precondition: ``Configuration/accessToken``, if set, is 1...1024 UTF-8 bytes.
    public init(
        configuration: Configuration,
        security: ConnectionSecurity? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "lmcache.controller")
    ) {
        precondition(
            configuration.accessToken.map { (1...LMAccessToken.maximumLength).contains($0.utf8.count) } ?? true,
            "an access token is 1...\(LMAccessToken.maximumLength) bytes"
        )
        self.configuration = configuration
        self.security = security
        self.registry = Mutex(ControllerRegistry(heartbeatTimeout: configuration.heartbeatTimeout))
        self.eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
    }

    /// A copy of the map, for inspection.
    public var snapshot: ControllerRegistry { registry.withLock { $0 } }

    /// The port the controller listens on, once it does.
    /// - Throws: ``LMServerError`` when it failed to bind or has stopped.
    public func listeningPort() async throws -> Int { try await listening.wait() }

    /// Listens, answers, and drops silent instances until a graceful shutdown or cancellation.
    public func run() async throws {
        let maximum = configuration.maximumMessageBytes
        let token = configuration.accessToken
        let security = security
        let logger = logger
        let refused = refusedConnections
        let server: NIOAsyncChannel<NIOAsyncChannel<ControllerMessage, ControllerMessage>, Never>
        do {
            server = try await ServerBootstrap(group: eventLoopGroup)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .bind(host: configuration.host, port: configuration.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let operations = channel.pipeline.syncOperations
                        try addServerGuards(
                            to: channel,
                            security: security,
                            token: token,
                            timeout: .seconds(10),
                            logger: logger,
                            onRefusal: { refused.increment() }
                        )
                        try operations.addHandler(
                            ByteToMessageHandler(ControllerMessageDecoder(maximumLength: maximum))
                        )
                        try operations.addHandler(MessageToByteHandler(ControllerMessageEncoder()))
                        return try NIOAsyncChannel<ControllerMessage, ControllerMessage>(
                            wrappingChannelSynchronously: channel
                        )
                    }
                }
        } catch {
            let failure = LMServerError("cannot listen on \(configuration.host):\(configuration.port)", cause: error)
            listening.finish(.failure(failure))
            throw failure
        }
        let bound = server.channel.localAddress?.port ?? configuration.port
        logger.info(
            "controller listening",
            metadata: [
                "lmcache.address": "\(configuration.host):\(bound)",
                "lmcache.heartbeat_timeout": "\(configuration.heartbeatTimeout)",
                "lmcache.access_token": "\(token == nil ? "none" : "required")",
                "lmcache.security": "\(security?.summary ?? "plain TCP")",
            ]
        )
        listening.finish(.success(bound))
        defer { listening.finish(.failure(LMServerError("the controller has stopped"))) }

        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.sweep() }
            do {
                try await serve(server)
            } catch {
                logger.debug("controller accept loop ended", metadata: ["lmcache.error": "\(error)"])
            }
            group.cancelAll()
        }
        logger.info("controller stopped")
    }

    /// Drops silent instances, checking four times per timeout.
    private func sweep() async {
        let period = configuration.heartbeatTimeout / 4
        while !Task.isCancelled {
            try? await Task.sleep(for: period)
            let dropped = registry.withLock { $0.expire(now: .now) }
            for id in dropped {
                logger.info("instance missed its heartbeats; dropped", metadata: ["lmcache.instance": "\(id)"])
            }
        }
    }

    private func serve(
        _ server: NIOAsyncChannel<NIOAsyncChannel<ControllerMessage, ControllerMessage>, Never>
    )
        async throws
    {
        let logger = self.logger
        let limit = configuration.maximumConnections
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        let count = self.activeConnections.add(1, ordering: .relaxed).newValue
                        guard count <= limit else {
                            self.activeConnections.subtract(1, ordering: .relaxed)
                            logger.info("too many connections; closing a new one")
                            try? await connection.executeThenClose { _, _ in }
                            continue
                        }
                        group.addTask {
                            await self.serve(connection)
                            self.activeConnections.subtract(1, ordering: .relaxed)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            logger.info("controller shutting down")
            server.channel.close(promise: nil)
        }
    }

    private func serve(_ connection: NIOAsyncChannel<ControllerMessage, ControllerMessage>) async {
        let peer = connection.channel.remoteAddress.map { "\($0)" } ?? "?"
        do {
            try await connection.executeThenClose { inbound, outbound in
                for try await message in inbound.cancelOnGracefulShutdown() {
                    try await outbound.write(answer(message))
                }
            }
        } catch let error as ControllerProtocolError {
            protocolErrors.increment()
            logger.info(
                "closing a connection that broke the controller protocol",
                metadata: ["lmcache.peer": "\(peer)", "lmcache.error": "\(error)"]
            )
        } catch {
            logger.debug("connection ended", metadata: ["lmcache.peer": "\(peer)", "lmcache.error": "\(error)"])
        }
    }

    /// The reply to one message.
    func answer(_ message: ControllerMessage) -> ControllerMessage {
        let now = ContinuousClock.now
        switch message {
        case .register(let id, let host, let port):
            guard !id.isEmpty else { return .failure("an instance id must not be empty") }
            registry.withLock { $0.register(id, host: host, port: port, now: now) }
            logger.info(
                "instance registered",
                metadata: ["lmcache.instance": "\(id)", "lmcache.address": "\(host):\(port)"]
            )
            return .ok
        case .report(let id, let admitted, let removed):
            let known = registry.withLock { $0.report(id, admitted: admitted, removed: removed, now: now) }
            return known ? .ok : .unknownInstance
        case .heartbeat(let id):
            return registry.withLock { $0.heartbeat(id, now: now) } ? .ok : .unknownInstance
        case .lookup(let id, let keys):
            lookups.increment()
            guard let peer = registry.withLock({ $0.lookup(keys, excluding: id, now: now) }) else {
                return .peer(instanceID: "", host: "", port: 0, count: 0)
            }
            lookupHits.increment()
            return .peer(instanceID: peer.instanceID, host: peer.host, port: peer.port, count: peer.count)
        case .forget(let peerID, let keys):
            registry.withLock { $0.forget(keys, heldBy: peerID) }
            return .ok
        case .deregister(let id):
            registry.withLock { $0.drop(id) }
            logger.info("instance deregistered", metadata: ["lmcache.instance": "\(id)"])
            return .ok
        case .ok, .unknownInstance, .peer, .failure:
            return .failure("the controller answers requests only")
        }
    }
}
