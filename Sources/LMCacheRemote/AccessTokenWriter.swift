import LMCacheWire
import NIOCore

/// Writes the shared token (``LMAccessToken``) as the first bytes of a connection, when it
/// becomes active (before any request, which can only be written once the connect completes),
/// then leaves the pipeline.
final class AccessTokenWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let token: String

    init(token: String) { self.token = token }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(
            wrapOutboundOut(LMAccessToken.message(token, allocator: context.channel.allocator)),
            promise: nil
        )
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

@available(*, unavailable)
extension AccessTokenWriter: Sendable {}
