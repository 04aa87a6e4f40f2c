import LMCacheWire
import Logging
import NIOCore

/// What comes first in an accepted connection's pipeline, before the protocol's own handlers: TLS
/// when `security` is set, then the token gate when `token` is set (the `lm://` server, P2P chunk
/// servers and the controller alike). Call it from a child channel initializer, on the channel's loop.
func addServerGuards(
    to channel: any Channel,
    security: ConnectionSecurity?,
    token: String?,
    timeout: TimeAmount,
    logger: Logger,
    onRefusal: @escaping @Sendable () -> Void
) throws {
    _ = try security?.addHandlers(channel, nil)
    guard let token else { return }
    try channel.pipeline.syncOperations.addHandler(
        AccessTokenGate(token: token, timeout: timeout, logger: logger, onRefusal: onRefusal)
    )
}

/// Sits first in a connection's `lm://` pipeline when the server requires a shared token: reads
/// the ``LMAccessToken`` message, then passes the bytes after it on and leaves the pipeline. A
/// connection that starts with anything else, presents a wrong token, or has not presented one
/// within `timeout` is closed with a log line, before any request is read.
final class AccessTokenGate: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let expected: [UInt8]
    private let timeout: TimeAmount
    private let logger: Logger
    private let onRefusal: @Sendable () -> Void
    private var buffered: ByteBuffer?
    private var deadline: Scheduled<Void>?
    private var decided = false

    init(token: String, timeout: TimeAmount, logger: Logger, onRefusal: @escaping @Sendable () -> Void) {
        expected = Array(token.utf8)
        self.timeout = timeout
        self.logger = logger
        self.onRefusal = onRefusal
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: timeout) { [self] in
            refuse(context: loopBound.value, reason: "no access token within \(timeout.nanoseconds / 1_000_000) ms")
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else { return }
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        switch LMAccessToken.check(buffered!, expected: expected) {
        case .needMoreData:
            return
        case .refused(let reason):
            refuse(context: context, reason: reason)
        case .accepted(let consumed):
            decided = true
            deadline?.cancel()
            var rest = buffered!
            buffered = nil
            rest.moveReaderIndex(forwardBy: consumed)
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
    }

    private func refuse(context: ChannelHandlerContext, reason: String) {
        guard !decided else { return }
        decided = true
        buffered = nil
        onRefusal()
        logger.info(
            "refusing a connection without the server's access token (lm_token)",
            metadata: [
                "lmcache.peer": "\(context.channel.remoteAddress.map { "\($0)" } ?? "?")",
                "lmcache.reason": "\(reason)",
            ]
        )
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension AccessTokenGate: Sendable {}
