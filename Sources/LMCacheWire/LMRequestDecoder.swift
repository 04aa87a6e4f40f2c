public import NIOCore

/// One request of LMCache's `lm://` protocol: its header and, for PUT, its payload.
public struct LMRequest: Hashable, Sendable {
    /// The header.
    public var header: LMRequestHeader
    /// The payload of a PUT (`header.length` bytes); empty for every other command.
    ///
    /// The decoder hands out a slice of its receive buffer, without copying.
    public var payload: ByteBuffer

    /// Creates a request.
    public init(header: LMRequestHeader, payload: ByteBuffer = ByteBuffer()) {
        self.header = header
        self.payload = payload
    }
}

/// Decodes `lm://` requests, treating the input as hostile.
///
/// The header is checked as soon as its 186 bytes are in, before any payload is buffered:
/// an unknown command, a key that is not UTF-8, a negative length, a length above
/// ``maximumPayloadBytes``, or a payload on anything but PUT throws ``LMProtocolError``
/// (the server then closes that connection). The reader index never moves until a whole
/// request is available, so partial input is simply kept for the next read.
///
/// ```swift
/// let handler = ByteToMessageHandler(LMRequestDecoder(maximumPayloadBytes: 1 << 30))
/// ```
public struct LMRequestDecoder: ByteToMessageDecoder {
    public typealias InboundOut = LMRequest

    /// The largest PUT payload accepted.
    public let maximumPayloadBytes: Int

    /// The most receive-buffer room reserved ahead of a payload's bytes.
    static let reservationLimit = 64 << 20

    /// Creates a decoder.
    /// - Parameter maximumPayloadBytes: The largest PUT payload; at most `Int32.max`.
    public init(maximumPayloadBytes: Int) {
        precondition(maximumPayloadBytes >= 0, "maximumPayloadBytes must not be negative")
        self.maximumPayloadBytes = min(maximumPayloadBytes, Int(Int32.max))
    }

    /// Decodes one request from `buffer` if it is complete.
    /// - Throws: ``LMProtocolError`` for input that breaks the protocol.
    public func decode(buffer: inout ByteBuffer) throws(LMProtocolError) -> LMRequest? {
        guard let header = try LMRequestHeader.peek(buffer) else { return nil }
        guard header.length >= 0 else {
            throw LMProtocolError(.negativeLength, "\(header.command) with length \(header.length)")
        }
        let length = Int(header.length)
        if header.command != .put && length != 0 {
            throw LMProtocolError(.unexpectedPayload, "\(header.command) with length \(length)")
        }
        guard length <= maximumPayloadBytes else {
            throw LMProtocolError(
                .payloadTooLarge,
                "PUT of \(length) bytes; the limit is \(maximumPayloadBytes)"
            )
        }
        // Both terms are at most Int32.max, so the sum cannot overflow Int.
        let needed = LMRequestHeader.size + length
        guard buffer.readableBytes >= needed else {
            // Make room for the rest of a large payload once, instead of growing the receive buffer
            // step by step (a copy each time). Bounded, so an announced length alone cannot make
            // the server allocate much; beyond the bound the buffer grows as bytes arrive.
            let missing = min(needed - buffer.readableBytes, Self.reservationLimit)
            if length >= 65536, buffer.writableBytes < missing {
                buffer.reserveCapacity(minimumWritableBytes: missing)
            }
            return nil
        }
        buffer.moveReaderIndex(forwardBy: LMRequestHeader.size)
        let payload = length == 0 ? ByteBuffer() : buffer.readSlice(length: length)!
        return LMRequest(header: header, payload: payload)
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let request = try decode(buffer: &buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(request))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext,
        buffer: inout ByteBuffer,
        seenEOF: Bool
    ) throws
        -> DecodingState
    {
        try decode(context: context, buffer: &buffer)
    }
}

/// Encodes `lm://` requests: the header, then the payload, as separate buffers.
public enum LMRequestEncoder {
    /// The header of `request` followed by a copy of its payload, in one buffer (for tests and
    /// small values; clients that care about copies write the payload buffer separately).
    public static func encode(
        _ request: LMRequest,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: LMRequestHeader.size + request.payload.readableBytes)
        request.header.write(to: &buffer)
        var payload = request.payload
        buffer.writeBuffer(&payload)
        return buffer
    }
}
