import LMCacheWire
import Logging
import NIOCore

/// What one connection has sent and what of it the decoder has turned into requests, and the
/// replies not yet taken by the client; shared by the two handlers around the decoder, which run on
/// the connection's event loop.
final class FrameProgress {
    var received = 0
    var consumed = 0
    /// Replies written to the connection and not yet taken by the socket.
    var pendingWrites = 0
    /// The last read, request decoded or reply taken by the socket.
    var lastProgress = NIODeadline.now()

    var hasPartialFrame: Bool { received > consumed }
}

@available(*, unavailable)
extension FrameProgress: Sendable {}

/// Sits before the request decoder: notes every read and every reply the socket has taken, and
/// checks the timeouts on a timer.
///
/// A connection with a partial request buffered, or a reply the client has not taken, that has made
/// no progress for `stallTimeout` is closed; so is one with neither and no progress for `idleTimeout`.
/// (A reply still leaving over a slow link is not idleness: the idle clock starts again when the
/// socket has taken it.)
final class ConnectionTimeoutHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let progress: FrameProgress
    private let idleTimeout: TimeAmount
    private let stallTimeout: TimeAmount
    private let logger: Logger
    private var timer: RepeatedTask?

    init(progress: FrameProgress, idleTimeout: Duration, stallTimeout: Duration, logger: Logger) {
        self.progress = progress
        self.idleTimeout = TimeAmount(idleTimeout)
        self.stallTimeout = TimeAmount(stallTimeout)
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let tick = TimeAmount.nanoseconds(
            max(TimeAmount.milliseconds(20).nanoseconds, min(idleTimeout, stallTimeout).nanoseconds / 4)
        )
        let loopBoundContext = NIOLoopBound(context, eventLoop: context.eventLoop)
        let loopBoundSelf = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
            loopBoundSelf.value.check(context: loopBoundContext.value)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        progress.received += unwrapInboundIn(data).readableBytes
        progress.lastProgress = .now()
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let promise = promise ?? context.eventLoop.makePromise()
        let progress = NIOLoopBound(progress, eventLoop: context.eventLoop)
        progress.value.pendingWrites += 1
        promise.futureResult.whenComplete { _ in
            progress.value.pendingWrites -= 1
            progress.value.lastProgress = .now()
        }
        context.write(data, promise: promise)
    }

    private func check(context: ChannelHandlerContext) {
        let quiet = NIODeadline.now() - progress.lastProgress
        // Built only when a connection is closed, not on every tick.
        func peer() -> Logger.Metadata { ["lmcache.peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")"] }
        if progress.pendingWrites > 0 {
            guard quiet >= stallTimeout else { return }
            logger.info("closing a connection whose client has not taken a reply", metadata: peer())
        } else if progress.hasPartialFrame {
            guard quiet >= stallTimeout else { return }
            logger.info(
                "closing a connection that stalled in the middle of a request",
                metadata: peer().merging(["lmcache.buffered_bytes": "\(progress.received - progress.consumed)"]) { $1 }
            )
        } else {
            guard quiet >= idleTimeout else { return }
            logger.debug("closing an idle connection", metadata: peer())
        }
        timer?.cancel()
        context.close(promise: nil)
    }
}

/// Sits after the request decoder: counts the bytes of each whole request it produced.
final class RequestProgressHandler: ChannelInboundHandler {
    typealias InboundIn = LMRequest
    typealias InboundOut = LMRequest

    private let progress: FrameProgress

    init(progress: FrameProgress) { self.progress = progress }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = unwrapInboundIn(data)
        progress.consumed += LMRequestHeader.size + request.payload.readableBytes
        progress.lastProgress = .now()
        context.fireChannelRead(data)
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
