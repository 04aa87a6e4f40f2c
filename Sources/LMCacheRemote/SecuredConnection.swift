package import LMCacheWire
package import NIOCore
import NIOPosix
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// How the clients of our links (`lm://`, Redis, the P2P controller) open a connection: TLS
/// handlers first when `security` is set, then the shared token (``LMAccessToken``) when `token` is
/// set, then the protocol's own handlers.
///
/// The returned future succeeds once the channel is usable: connected and, with TLS, its handshake
/// done. A handshake that fails (a certificate that does not verify) fails the future with its own
/// reason, as a failed connect; one that stalls is cut at `connectTimeout`.
package struct SecuredConnection: Sendable {
    package var host: String
    package var port: Int
    package var connectTimeout: Duration
    package var security: ConnectionSecurity?
    package var token: String?
    /// Adds the protocol's handlers (after TLS and the token writer).
    package var protocolHandlers: @Sendable (any Channel) throws -> Void

    package init(
        host: String,
        port: Int,
        connectTimeout: Duration,
        security: ConnectionSecurity?,
        token: String? = nil,
        protocolHandlers: @escaping @Sendable (any Channel) throws -> Void
    ) {
        self.host = host
        self.port = port
        self.connectTimeout = connectTimeout
        self.security = security
        self.token = token
        self.protocolHandlers = protocolHandlers
    }

    /// Connects on `group`.
    package func connect(on group: any EventLoopGroup) -> EventLoopFuture<any Channel> {
        let security = security
        let host = host
        let token = token
        let protocolHandlers = protocolHandlers
        let timeout = TimeAmount(connectTimeout)
        // The TLS handshake's outcome, made with the handlers (a failed channel empties its pipeline).
        let secured = Mutex<EventLoopFuture<Void>?>(nil)
        let connecting = ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 4 << 20)
            )
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let handshake = try security?.addHandlers(channel, host) {
                        secured.withLock { $0 = handshake }
                    }
                    if let token { try channel.pipeline.syncOperations.addHandler(AccessTokenWriter(token: token)) }
                    try protocolHandlers(channel)
                }
            }
            .connect(host: host, port: port)
        guard security != nil else { return connecting }
        return connecting.flatMap { channel in
            let cutoff = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
            let handshake = secured.withLock { $0 } ?? channel.eventLoop.makeSucceededVoidFuture()
            return handshake
                .map { _ -> any Channel in
                    cutoff.cancel()
                    return channel
                }
                .flatMapErrorThrowing { error in
                    cutoff.cancel()
                    channel.close(promise: nil)
                    throw error
                }
        }
    }
}
