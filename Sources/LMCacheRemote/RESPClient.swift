package import NIOCore
import NIOPosix

/// A reply of a Redis server (RESP2), as far as ``RESPClient`` needs.
package enum RESPReply: Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    /// A bulk string; `nil` for RESP's null bulk string (a missing key).
    case bulk(LMReplyPayload?)
}

/// A minimal Redis client: enough for the storage benchmark's baseline (SET, GET and admin
/// commands) over one pipelined connection, reading bulk strings straight into their own memory
/// as the `lm://` client does. It treats replies as hostile: lines and bulk lengths are capped.
///
/// This is the seed of the Redis tier; it is not a tier yet.
package final class RESPClient: Sendable {
    private let channel: any Channel

    private init(channel: any Channel) { self.channel = channel }

    /// Connects to `host:port`.
    package static func connect(
        host: String,
        port: Int,
        maximumValueBytes: Int = 1 << 30,
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) async throws -> RESPClient {
        let channel = try await ClientBootstrap(group: eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(2))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(
                .recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 4096, initial: 65536, maximum: 4 << 20)
            )
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        RESPClientHandler(maximumBulkBytes: maximumValueBytes)
                    )
                }
            }
            .connect(host: host, port: port)
            .get()
        return RESPClient(channel: channel)
    }

    /// Sends a command whose arguments are strings, then `value` as a last argument if given.
    package func send(_ arguments: [String], value: ByteBuffer? = nil) async throws -> RESPReply {
        var head = channel.allocator.buffer(capacity: 64)
        head.writeString("*\(arguments.count + (value == nil ? 0 : 1))\r\n")
        for argument in arguments { head.writeString("$\(argument.utf8.count)\r\n\(argument)\r\n") }
        var parts = [head]
        if let value {
            var prefix = channel.allocator.buffer(capacity: 16)
            prefix.writeString("$\(value.readableBytes)\r\n")
            parts.append(prefix)
            parts.append(value)
            parts.append(ByteBuffer(string: "\r\n"))
        }
        let promise = channel.eventLoop.makePromise(of: RESPReply.self)
        channel.writeAndFlush(RESPRequest(parts: parts, reply: promise), promise: nil)
        return try await promise.futureResult.get()
    }

    /// `SET key value`.
    package func set(_ key: String, _ value: ByteBuffer) async throws {
        guard case .simple = try await send(["SET", key], value: value) else { throw RESPClientError.unexpectedReply }
    }

    /// `GET key`: the value, or `nil` when the key is absent.
    package func get(_ key: String) async throws -> LMReplyPayload? {
        guard case .bulk(let payload) = try await send(["GET", key]) else { throw RESPClientError.unexpectedReply }
        return payload
    }

    /// Closes the connection.
    package func close() async {
        try? await channel.close()
    }
}

package enum RESPClientError: Error, Hashable, Sendable {
    case unexpectedReply
    case malformedReply
    case connectionClosed
}

struct RESPRequest {
    var parts: [ByteBuffer]
    var reply: EventLoopPromise<RESPReply>
}

/// Writes RESP commands and matches replies to them in order.
final class RESPClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = RESPRequest
    typealias OutboundOut = ByteBuffer

    private static let maximumLine = 65536
    private let maximumBulkBytes: Int
    private var pending = CircularBuffer<EventLoopPromise<RESPReply>>()
    private var line = ByteBuffer()
    private var bulk: LMReplyPayload?
    private var bulkFilled = 0
    private var trailerLeft = 0

    init(maximumBulkBytes: Int) { self.maximumBulkBytes = maximumBulkBytes }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        pending.append(request.reply)
        for (i, part) in request.parts.enumerated() {
            context.write(wrapOutboundOut(part), promise: i == request.parts.count - 1 ? promise : nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        do {
            while buffer.readableBytes > 0 {
                if let payload = bulk {
                    if bulkFilled < payload.count {
                        bulkFilled += payload.receive(&buffer, at: bulkFilled)
                        continue
                    }
                    let skip = min(trailerLeft, buffer.readableBytes)
                    buffer.moveReaderIndex(forwardBy: skip)
                    trailerLeft -= skip
                    if trailerLeft == 0 {
                        bulk = nil
                        try complete(.bulk(payload))
                    }
                    continue
                }
                guard let text = try readLine(&buffer) else { break }
                try handle(line: text)
            }
        } catch {
            fail(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(RESPClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func readLine(_ buffer: inout ByteBuffer) throws -> String? {
        let view = buffer.readableBytesView
        if let newline = view.firstIndex(of: UInt8(ascii: "\n")) {
            var piece = buffer.readSlice(length: newline - view.startIndex + 1)!
            line.writeBuffer(&piece)
            var text = line.readString(length: line.readableBytes) ?? ""
            line.clear()
            guard text.hasSuffix("\r\n") else { throw RESPClientError.malformedReply }
            text.removeLast(1)  // "\r\n" is one Character in Swift.
            return text
        }
        line.writeBuffer(&buffer)
        guard line.readableBytes <= Self.maximumLine else { throw RESPClientError.malformedReply }
        return nil
    }

    private func handle(line text: String) throws {
        guard let kind = text.first else { throw RESPClientError.malformedReply }
        let rest = String(text.dropFirst())
        switch kind {
        case "+": try complete(.simple(rest))
        case "-": try complete(.error(rest))
        case ":":
            guard let value = Int(rest) else { throw RESPClientError.malformedReply }
            try complete(.integer(value))
        case "$":
            guard let length = Int(rest), length >= -1, length <= maximumBulkBytes else {
                throw RESPClientError.malformedReply
            }
            if length == -1 {
                try complete(.bulk(nil))
            } else {
                bulk = LMReplyPayload(count: length)
                bulkFilled = 0
                trailerLeft = 2
            }
        default:
            throw RESPClientError.malformedReply
        }
    }

    private func complete(_ reply: RESPReply) throws {
        guard let promise = pending.popFirst() else { throw RESPClientError.malformedReply }
        promise.succeed(reply)
    }

    private func fail(_ error: any Error) {
        bulk = nil
        line.clear()
        while let promise = pending.popFirst() { promise.fail(error) }
    }
}
