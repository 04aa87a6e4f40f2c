package import LMCacheWire
package import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Bytes of one reply payload, received straight into memory this object owns.
///
/// `@unchecked Sendable`: the memory is written only by the connection's handler before the
/// object is handed to a caller, never after, and freed in `deinit`.
package final class LMReplyPayload: @unchecked Sendable {
    private let memory: UnsafeMutableRawBufferPointer
    fileprivate var filled = 0

    init(count: Int) {
        memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
    }

    deinit { memory.deallocate() }

    /// Number of bytes.
    package var count: Int { memory.count }

    /// The bytes; valid while `self` lives.
    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(memory) }

    /// Calls `body` with the bytes.
    package func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(memory))
    }

    fileprivate func append(_ buffer: inout ByteBuffer) -> Bool {
        filled += receive(&buffer, at: filled)
        return filled == memory.count
    }

    /// Copies as many bytes of `buffer` as fit after `offset`; returns how many.
    /// Only the connection handler that owns this payload calls it, before handing it out.
    func receive(_ buffer: inout ByteBuffer, at offset: Int) -> Int {
        let wanted = min(buffer.readableBytes, memory.count - offset)
        guard wanted > 0 else { return 0 }
        buffer.readWithUnsafeReadableBytes { source in
            // `wanted` fits both the readable bytes and the room left after `offset`.
            memory.baseAddress!.advanced(by: offset).copyMemory(from: source.baseAddress!, byteCount: wanted)
            return wanted
        }
        return wanted
    }
}

/// The answer to one `lm://` request.
package struct LMClientReply: Sendable {
    /// The reply header.
    package var header: LMReplyHeader
    /// The payload of a GET hit; `nil` otherwise.
    package var payload: LMReplyPayload?
}

/// One request for ``LMClientHandler`` to send.
package struct LMClientRequest {
    package var header: LMRequestHeader
    /// The PUT payload (empty otherwise).
    package var payload: ByteBuffer
    /// Completed with the reply; `nil` for PUT, which has none.
    package var reply: EventLoopPromise<LMClientReply>?
}

/// The client side of an `lm://` connection: writes requests, matches replies to them in order.
///
/// Requests may be pipelined: each one that expects a reply queues its promise, and replies
/// complete the promises first in, first out. A reply that cannot be right (a negative length,
/// a payload larger than the cap, a reply nobody asked for) closes the connection. When the
/// connection closes, every waiting promise fails.
final class LMClientHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = LMClientRequest
    typealias OutboundOut = ByteBuffer

    private var pending = CircularBuffer<(command: LMCommand, promise: EventLoopPromise<LMClientReply>)>()
    private var partialHeader: ByteBuffer?
    private var payload: (header: LMReplyHeader, bytes: LMReplyPayload)?
    private let maximumReplyBytes: Int

    init(maximumReplyBytes: Int) { self.maximumReplyBytes = maximumReplyBytes }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let request = unwrapOutboundIn(data)
        var head = context.channel.allocator.buffer(capacity: LMRequestHeader.size)
        request.header.write(to: &head)
        if let reply = request.reply { pending.append((request.header.command, reply)) }
        if request.payload.readableBytes > 0 {
            context.write(wrapOutboundOut(head), promise: nil)
            context.write(wrapOutboundOut(request.payload), promise: promise)
        } else {
            context.write(wrapOutboundOut(head), promise: promise)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        do {
            while buffer.readableBytes > 0 {
                if let (header, bytes) = payload {
                    if bytes.append(&buffer) {
                        payload = nil
                        complete(LMClientReply(header: header, payload: bytes))
                    }
                    continue
                }
                guard let header = readHeader(&buffer) else { break }
                try accept(header)
            }
        } catch {
            fail(error)
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fail(LMClientError.connectionClosed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error)
        context.close(promise: nil)
    }

    private func readHeader(_ buffer: inout ByteBuffer) -> LMReplyHeader? {
        if partialHeader == nil, let header = LMReplyHeader.read(from: &buffer) { return header }
        var partial = partialHeader ?? ByteBuffer()
        var piece = buffer.readSlice(length: min(buffer.readableBytes, LMReplyHeader.size - partial.readableBytes))!
        partial.writeBuffer(&piece)
        if let header = LMReplyHeader.read(from: &partial) {
            partialHeader = nil
            return header
        }
        partialHeader = partial
        return nil
    }

    private func accept(_ header: LMReplyHeader) throws(LMProtocolError) {
        guard let first = pending.first else {
            throw LMProtocolError(.malformedReply, "a reply with code \(header.code) that no request asked for")
        }
        guard header.length >= 0, header.code == LMReplyHeader.success || header.code == LMReplyHeader.failure else {
            throw LMProtocolError(.malformedReply, "reply code \(header.code), length \(header.length)")
        }
        if first.command == .get, header.isSuccess, header.length > 0 {
            guard Int(header.length) <= maximumReplyBytes else {
                throw LMProtocolError(
                    .malformedReply,
                    "a reply of \(header.length) bytes; the limit is \(maximumReplyBytes)"
                )
            }
            payload = (header, LMReplyPayload(count: Int(header.length)))
        } else {
            complete(LMClientReply(header: header, payload: nil))
        }
    }

    private func complete(_ reply: LMClientReply) {
        pending.removeFirst().promise.succeed(reply)
    }

    private func fail(_ error: any Error) {
        payload = nil
        partialHeader = nil
        while let waiting = pending.popFirst() { waiting.promise.fail(error) }
    }
}

/// Why a request to an `lm://` server got no answer.
package enum LMClientError: Error, Hashable, Sendable {
    /// The connection closed (or was closed after a timeout) before the reply came.
    case connectionClosed
    /// The server is down, and the tier is waiting before it tries again.
    case backingOff
    /// The value is larger than the client's cap.
    case valueTooLarge
}
