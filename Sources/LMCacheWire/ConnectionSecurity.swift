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
    /// pass `nil`. Returns what completes when the connected channel is secured (the TLS handshake
    /// done) and fails with the reason when it cannot be (a certificate that does not verify), so
    /// that a client counts that as a failed connect, not as a failed request. The future is made
    /// here, with the handlers, so that it keeps the reason even after the failed channel closed and
    /// its pipeline emptied.
    public let addHandlers: @Sendable (_ channel: any Channel, _ serverHostname: String?) throws -> EventLoopFuture<Void>
    /// What the handlers do, for log lines (`TLS, CA /etc/ca.pem`).
    public let summary: String

    /// Creates the hook.
    public init(
        summary: String,
        addHandlers: @escaping @Sendable (_ channel: any Channel, _ serverHostname: String?) throws -> EventLoopFuture<Void>
    ) {
        self.summary = summary
        self.addHandlers = addHandlers
    }
}
