public import LMCacheCore
public import LMCacheWire
import NIOCore
import NIOSSL
import NIOTLS

/// TLS for the network links (swift-nio-ssl, BoringSSL): the ``ConnectionSecurity`` hooks that
/// the Redis and `lm://` clients, our `lm://` server and the P2P chunk server add to their
/// connections.
///
/// Certificates and keys are PEM files named in `extra_config` (``TLSFiles``); they are loaded
/// when the hook is made, so a missing or unreadable file fails at start with the key and the
/// path, never on the first connection.
///
/// ```swift
/// let security = try TLS.client(configuration.tlsFiles("redis_tls"))
/// ```
public enum TLS {
    /// Client-side TLS: verifies the server's certificate chain against ``TLSFiles/caFile`` (or the
    /// system's trust store) and its name or address against the host dialled; offers
    /// ``TLSFiles/certificateFile`` and ``TLSFiles/keyFile`` when both are set (mutual TLS).
    /// - Throws: ``TLSSetupError`` naming the key and path of a file that cannot be used.
    public static func client(_ files: TLSFiles) throws(TLSSetupError) -> ConnectionSecurity {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        var summary = "TLS"
        if let caFile = files.caFile {
            configuration.trustRoots = .certificates(try certificates(files, "ca_file", caFile))
            summary += ", CA \(caFile)"
        } else {
            summary += ", system trust store"
        }
        if let (chain, key) = try identity(files, required: false) {
            configuration.certificateChain = chain.map { .certificate($0) }
            configuration.privateKey = .privateKey(key)
            summary += ", client certificate \(files.certificateFile ?? "")"
        }
        let context = try makeContext(configuration, files)
        return ConnectionSecurity(
            summary: summary,
            addHandlers: { channel, host in
                // A name is sent as SNI and checked against the certificate; an address (which SNI
                // cannot carry) is checked against the certificate's IP addresses.
                let name = host.flatMap { isAddress($0) ? nil : $0 }
                let operations = channel.pipeline.syncOperations
                let handshake = channel.eventLoop.makePromise(of: Void.self)
                try operations.addHandler(NIOSSLClientHandler(context: context, serverHostname: name))
                try operations.addHandler(HandshakeWaiter(promise: handshake))
                return handshake.futureResult
            }
        )
    }

    /// Server-side TLS with ``TLSFiles/certificateFile`` and ``TLSFiles/keyFile`` (both required).
    /// With ``TLSFiles/caFile`` set, clients must also present a certificate it signed.
    /// - Throws: ``TLSSetupError`` naming the key and path of a file that is missing or unusable.
    public static func server(_ files: TLSFiles) throws(TLSSetupError) -> ConnectionSecurity {
        guard let (chain, key) = try identity(files, required: true) else {
            preconditionFailure("identity(required: true) returns one or throws")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        configuration.minimumTLSVersion = .tlsv12
        var summary = "TLS, certificate \(files.certificateFile ?? "")"
        if let caFile = files.caFile {
            configuration.trustRoots = .certificates(try certificates(files, "ca_file", caFile))
            configuration.certificateVerification = .noHostnameVerification
            summary += ", client certificates from CA \(caFile)"
        }
        let context = try makeContext(configuration, files)
        return ConnectionSecurity(summary: summary) { channel, _ in
            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
            // The server does not wait: a client that fails the handshake is closed by the handler.
            return channel.eventLoop.makeSucceededVoidFuture()
        }
    }

    /// ``server(_:)`` with the certificate and key when ``TLSFiles/certificateFile`` or
    /// ``TLSFiles/keyFile`` is set, else `nil` (plain TCP): how `lmcache server` and
    /// `lmcache_server` read `lm_tls_cert_file` and `lm_tls_key_file`. ``TLSFiles/caFile`` is left
    /// out: in a configuration shared with engines, `lm_tls_ca_file` is what the clients verify the
    /// server against, not a demand for client certificates.
    public static func serverIfConfigured(_ files: TLSFiles) throws(TLSSetupError) -> ConnectionSecurity? {
        guard files.certificateFile != nil || files.keyFile != nil else { return nil }
        return try server(TLSFiles(link: files.link, certificateFile: files.certificateFile, keyFile: files.keyFile))
    }

    private static func identity(
        _ files: TLSFiles,
        required: Bool
    ) throws(TLSSetupError) -> ([NIOSSLCertificate], NIOSSLPrivateKey)? {
        switch (files.certificateFile, files.keyFile) {
        case (let certificateFile?, let keyFile?):
            let chain = try certificates(files, "cert_file", certificateFile)
            do {
                return (chain, try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw TLSSetupError(
                    key: "\(files.link)_key_file",
                    path: keyFile,
                    "is not a readable PEM private key",
                    cause: error
                )
            }
        case (nil, nil) where !required:
            return nil
        case (nil, _):
            throw TLSSetupError(
                key: "\(files.link)_cert_file",
                path: nil,
                "is not set (\(files.link) needs a certificate and its key)"
            )
        case (_, nil):
            throw TLSSetupError(
                key: "\(files.link)_key_file",
                path: nil,
                "is not set (\(files.link) needs a certificate and its key)"
            )
        }
    }

    private static func certificates(
        _ files: TLSFiles,
        _ suffix: String,
        _ path: String
    ) throws(TLSSetupError) -> [NIOSSLCertificate] {
        let key = "\(files.link)_\(suffix)"
        let loaded: [NIOSSLCertificate]
        do {
            loaded = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw TLSSetupError(key: key, path: path, "is not a readable PEM certificate file", cause: error)
        }
        guard !loaded.isEmpty else { throw TLSSetupError(key: key, path: path, "holds no PEM certificate") }
        return loaded
    }

    private static func makeContext(
        _ configuration: TLSConfiguration,
        _ files: TLSFiles
    ) throws(TLSSetupError) -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError(
                key: files.link,
                path: nil,
                "cannot be set up (does the key match the certificate?)",
                cause: error
            )
        }
    }

    private static func isAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// A TLS link that cannot be set up from its configuration: names the `extra_config` key and
/// the file.
public struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    /// The `extra_config` key at fault (`redis_tls_ca_file`).
    public let key: String
    /// The file it names, if any.
    public let path: String?
    /// What is wrong.
    public let message: String
    /// What the TLS library said.
    public let cause: (any Error)?

    init(key: String, path: String?, _ message: String, cause: (any Error)? = nil) {
        self.key = key
        self.path = path
        self.message = message
        self.cause = cause
    }

    public var description: String {
        let subject = path.map { "extra_config \(key) (\($0))" } ?? "extra_config \(key)"
        return cause.map { "\(subject) \(message): \($0)" } ?? "\(subject) \(message)"
    }
}

/// Sits after the client's TLS handler: completes its promise when the handshake is done, and
/// fails it with the TLS error (or the close) when it is not.
private final class HandshakeWaiter: ChannelInboundHandler {
    typealias InboundIn = NIOAny

    let promise: EventLoopPromise<Void>

    init(promise: EventLoopPromise<Void>) { self.promise = promise }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent { promise.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(ChannelError.ioOnClosedChannel)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        promise.fail(ChannelError.ioOnClosedChannel)  // a no-op once completed
    }
}

@available(*, unavailable)
extension HandshakeWaiter: Sendable {}
