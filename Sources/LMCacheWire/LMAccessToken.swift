public import NIOCore

/// The optional first message of a connection to our `lm://` server or a P2P chunk server: a
/// shared token that proves the client may use it.
///
/// Layout: the 4 bytes `LMCT`, the token's length as a `uint32` little-endian (1...1024), then the
/// token's UTF-8 bytes. Nothing is answered: a server that accepts it reads `lm://` requests next;
/// one that refuses it closes the connection. Only clients configured with a token send it, so a
/// connection without one is byte for byte LMCache's protocol. (A server without a token that
/// receives it reads `LMCT` as an unknown command and closes the connection.)
public enum LMAccessToken {
    /// `LMCT`.
    public static let magic: [UInt8] = Array("LMCT".utf8)
    /// The longest token accepted, in bytes.
    public static let maximumLength = 1024

    /// The message that presents `token`.
    /// - Precondition: `token` is 1...``maximumLength`` UTF-8 bytes.
    public static func message(_ token: String, allocator: ByteBufferAllocator) -> ByteBuffer {
        let bytes = Array(token.utf8)
        precondition((1...maximumLength).contains(bytes.count), "an access token is 1...\(maximumLength) bytes")
        var buffer = allocator.buffer(capacity: 8 + bytes.count)
        buffer.writeBytes(magic)
        buffer.writeInteger(UInt32(bytes.count), endianness: .little)
        buffer.writeBytes(bytes)
        return buffer
    }

    /// What the first bytes of a connection say.
    public enum Verdict: Equatable, Sendable {
        /// The message is not complete yet.
        case needMoreData
        /// The right token; the message took `consumed` bytes, and requests follow.
        case accepted(consumed: Int)
        /// No token, or a wrong one; `reason` is for the log line.
        case refused(reason: String)
    }

    /// Checks the readable bytes of `buffer` (the start of a connection) against `expected`,
    /// without moving its reader index. Compares in time independent of where the tokens differ.
    public static func check(_ buffer: ByteBuffer, expected: [UInt8]) -> Verdict {
        let available = buffer.readableBytes
        if let head = buffer.getBytes(at: buffer.readerIndex, length: min(available, magic.count)),
            head != Array(magic.prefix(head.count))
        {
            return .refused(reason: "the connection did not start with an access token (a client without lm_token?)")
        }
        guard available >= 8,
            let length = buffer.getInteger(at: buffer.readerIndex + 4, endianness: .little, as: UInt32.self)
        else { return .needMoreData }
        guard (1...UInt32(maximumLength)).contains(length) else {
            return .refused(reason: "an access token of \(length) bytes (1...\(maximumLength) allowed)")
        }
        guard available >= 8 + Int(length),
            let token = buffer.getBytes(at: buffer.readerIndex + 8, length: Int(length))
        else { return .needMoreData }
        var difference = UInt8(token.count == expected.count ? 0 : 1)
        for i in 0..<token.count { difference |= token[i] ^ (i < expected.count ? expected[i] : 0) }
        return difference == 0 ? .accepted(consumed: 8 + Int(length)) : .refused(reason: "a wrong access token")
    }
}
