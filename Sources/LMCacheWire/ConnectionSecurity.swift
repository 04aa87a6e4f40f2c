public import NIOCore

/// What secures a connection before the protocol's handlers see its bytes: TLS handlers added
/// first in the channel's pipeline.
///
/// The `LMCacheTLS` target makes these (``ConnectionSecurity`` values for clients and servers,
/// from certificate files); the network code only calls ``addHandlers``, so the targets that never
/// use TLS (the fuzz build) do not link BoringSSL.
public struct ConnectionSecurity: Sendable {
    /// Adds the handlers to `channel`'s pipeline, synchronously on its event loop (from a channel
    /// initializer). `serverHostname` is the host a client dialled (a name or an address); servers
    /// pass `nil`.
    public let addHandlers: @Sendable (_ channel: any Channel, _ serverHostname: String?) throws -> Void
    /// Completes when a connected channel whose handlers ``addHandlers`` added is secured (the TLS
    /// handshake done), and fails with the reason when it cannot be (a certificate that does not
    /// verify), so that a client counts that as a failed connect, not as a failed request.
    public let ready: @Sendable (_ channel: any Channel) -> EventLoopFuture<Void>
    /// What the handlers do, for log lines (`TLS, CA /etc/ca.pem`).
    public let summary: String

    /// Creates the hook.
    public init(
        summary: String,
        addHandlers: @escaping @Sendable (_ channel: any Channel, _ serverHostname: String?) throws -> Void,
        ready: @escaping @Sendable (_ channel: any Channel) -> EventLoopFuture<Void> = {
            $0.eventLoop.makeSucceededVoidFuture()
        }
    ) {
        self.summary = summary
        self.addHandlers = addHandlers
        self.ready = ready
    }
}
