import LMCacheWire
import NIOCore

/// One pipelined batch for ``RedisConnectionHandler``: commands written back to back, completed
/// with their replies in the same order once all have arrived.
struct RedisRequest {
    var commands: [RESPCommand]
    var promise: EventLoopPromise<[RESPValue]>
}

/// The client side of a Redis connection, after a `RESPValueDecoder`: writes batches of
/// commands and matches the replies to them first in, first out.
///
/// A reply nobody asked for, or input the decoder refuses, closes the connection; when the
/// connection closes, every waiting batch fails.
final class RedisConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = RESPValue
    typealias OutboundIn = RedisRequest
    typealias OutboundOut = ByteBuffer

    private struct Waiting {
        var expected: Int
        var replies: [RESPValue]
        var promise: EventLoopPromise<[RESPValue]>
    }

    private var pending = CircularBuffer<Waiting>()

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        guard !request.commands.isEmpty else {
            request.promise.succeed([])
            promise?.succeed(())
            return
        }
        var replies: [RESPValue] = []
        replies.reserveCapacity(request.commands.count)
        pending.append(Waiting(expected: request.commands.count, replies: replies, promise: request.promise))
        var parts: [ByteBuffer] = []
        for command in request.commands { parts += command.encoded(allocator: context.channel.allocator) }
        // Coalesce the small parts so that a batch of GETs is one write, not one per command.
        var small = context.channel.allocator.buffer(capacity: 0)
        for var part in parts {
            if part.readableBytes >= RESPCommand.inlineLimit {
                if small.readableBytes > 0 {
                    context.write(wrapOutboundOut(small), promise: nil)
                    small = context.channel.allocator.buffer(capacity: 0)
                }
                context.write(wrapOutboundOut(part), promise: nil)
            } else {
                small.writeBuffer(&part)
            }
        }
        context.write(wrapOutboundOut(small), promise: promise)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let value = unwrapInboundIn(data)
        guard !pending.isEmpty else {
            failAll(RedisClientError(.protocolError, "a reply nobody asked for: \(value)"))
            context.close(promise: nil)
            return
        }
        pending[pending.startIndex].replies.append(value)
        if pending[pending.startIndex].replies.count == pending[pending.startIndex].expected {
            let done = pending.removeFirst()
            done.promise.succeed(done.replies)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisClientError(.connectionClosed, "the connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(RedisClientError(.protocolError, "\(error)"))
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisClientError) {
        while let waiting = pending.popFirst() { waiting.promise.fail(error) }
    }
}

/// A failure talking to Redis. The tiers turn it into a miss and a log line.
public struct RedisClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case connectionClosed, timeout, unreachable, authentication, protocolError, serverError
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The connection closed before the reply came.
        public static let connectionClosed = Code(.connectionClosed)
        /// No reply within the request timeout.
        public static let timeout = Code(.timeout)
        /// No connection could be made (or the client is backing off after failures).
        public static let unreachable = Code(.unreachable)
        /// AUTH or SELECT was refused.
        public static let authentication = Code(.authentication)
        /// The server sent something that is not RESP2, or a reply out of step.
        public static let protocolError = Code(.protocolError)
        /// The server answered with an error reply.
        public static let serverError = Code(.serverError)

        public var description: String { "\(base)" }
    }

    /// The failure's kind.
    public let code: Code
    /// What happened.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "Redis \(code): \(message)" }
}
