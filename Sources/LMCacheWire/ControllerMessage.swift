public import NIOCore

/// A chunk's identity on the controller's wire: its 128-bit chained hash and its token count.
///
/// The hash already covers the model, the KV format, the tenant salt and every token up to the end
/// of the chunk, so the controller needs nothing else to tell chunks apart. 20 bytes on the wire.
public struct ControllerChunkKey: Hashable, Sendable, CustomStringConvertible {
    /// The hash's low 64 bits.
    public var low: UInt64
    /// The hash's high 64 bits.
    public var high: UInt64
    /// Tokens in the chunk.
    public var tokenCount: UInt32

    /// Creates a key.
    public init(low: UInt64, high: UInt64, tokenCount: UInt32) {
        self.low = low
        self.high = high
        self.tokenCount = tokenCount
    }

    /// Bytes of one key on the wire.
    public static let wireSize = 20

    public var description: String {
        let hex = String(high, radix: 16) + ":" + String(low, radix: 16)
        return "\(hex)/\(tokenCount)"
    }
}

/// One message of the controller protocol, in either direction.
///
/// Instances send ``register(instanceID:host:port:)``, ``report(instanceID:admitted:removed:)``,
/// ``heartbeat(instanceID:)``, ``lookup(instanceID:keys:)``, ``forget(peerID:keys:)`` and
/// ``deregister(instanceID:)``; the controller answers each with exactly one of ``ok``,
/// ``unknownInstance``, ``peer(instanceID:host:port:count:)`` or ``failure(_:)``, in order.
///
/// **Framing.** Every message is `u32 length | u8 version (1) | u8 type | body`, integers
/// big-endian, where `length` counts the bytes after itself. Strings are `u16 length | UTF-8`
/// (at most ``maximumStringBytes``); key lists are `u32 count | count × (u64 low, u64 high,
/// u32 tokens)` (at most ``maximumKeys``). See docs/p2p.md for the table of types.
public enum ControllerMessage: Hashable, Sendable {
    /// An instance announces itself and where it serves chunks (`port` 0: it serves none).
    /// Re-registering replaces the instance's address and forgets what it held.
    case register(instanceID: String, host: String, port: Int)
    /// Chunks an instance stored and removed since its last report.
    case report(instanceID: String, admitted: [ControllerChunkKey], removed: [ControllerChunkKey])
    /// The instance is alive.
    case heartbeat(instanceID: String)
    /// Which live peer other than `instanceID` holds the longest leading run of `keys`?
    case lookup(instanceID: String, keys: [ControllerChunkKey])
    /// `peerID` was asked for `keys` and did not have them (or did not answer): drop those entries.
    case forget(peerID: String, keys: [ControllerChunkKey])
    /// The instance is shutting down.
    case deregister(instanceID: String)

    /// The request was applied.
    case ok
    /// The request named an instance the controller does not know (it restarted, or dropped the
    /// instance for missed heartbeats): register again and report everything held.
    case unknownInstance
    /// The answer to a lookup: `count` leading keys are held by `instanceID` at `host:port`;
    /// `count` 0 (and empty strings) when no live peer holds the first key.
    case peer(instanceID: String, host: String, port: Int, count: Int)
    /// The request was understood but refused.
    case failure(String)

    /// The protocol version this codec speaks.
    public static let version: UInt8 = 1
    /// Longest string field, in UTF-8 bytes.
    public static let maximumStringBytes = 255
    /// Most keys in one list.
    public static let maximumKeys = 1 << 16
    /// The default cap on one message's length (after the length field): a full key list and change.
    public static let defaultMaximumLength = 2 * maximumKeys * ControllerChunkKey.wireSize + 4096

    enum Kind: UInt8 {
        case register = 1
        case report = 2
        case heartbeat = 3
        case lookup = 4
        case forget = 5
        case deregister = 6
        case ok = 64
        case unknownInstance = 65
        case peer = 66
        case failure = 67
    }

    var kind: Kind {
        switch self {
        case .register: .register
        case .report: .report
        case .heartbeat: .heartbeat
        case .lookup: .lookup
        case .forget: .forget
        case .deregister: .deregister
        case .ok: .ok
        case .unknownInstance: .unknownInstance
        case .peer: .peer
        case .failure: .failure
        }
    }

    /// Whether this is a message an instance sends (the others are the controller's replies).
    public var isRequest: Bool { kind.rawValue < Kind.ok.rawValue }

    /// Appends the framed message to `buffer`.
    /// - Precondition: strings of at most ``maximumStringBytes`` bytes, lists of at most
    ///   ``maximumKeys`` keys, ports in 0...65535, counts ≥ 0 (longer strings are cut).
    public func write(to buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(Self.version)
        buffer.writeInteger(kind.rawValue)
        switch self {
        case .register(let id, let host, let port):
            Self.write(string: id, to: &buffer)
            Self.write(string: host, to: &buffer)
            precondition((0...65535).contains(port), "port \(port) out of range")
            buffer.writeInteger(UInt16(port))
        case .report(let id, let admitted, let removed):
            Self.write(string: id, to: &buffer)
            Self.write(keys: admitted, to: &buffer)
            Self.write(keys: removed, to: &buffer)
        case .heartbeat(let id), .deregister(let id):
            Self.write(string: id, to: &buffer)
        case .lookup(let id, let keys), .forget(let id, let keys):
            Self.write(string: id, to: &buffer)
            Self.write(keys: keys, to: &buffer)
        case .ok, .unknownInstance:
            break
        case .peer(let id, let host, let port, let count):
            Self.write(string: id, to: &buffer)
            Self.write(string: host, to: &buffer)
            precondition((0...65535).contains(port), "port \(port) out of range")
            precondition((0...Self.maximumKeys).contains(count), "count \(count) out of range")
            buffer.writeInteger(UInt16(port))
            buffer.writeInteger(UInt32(count))
        case .failure(let message):
            Self.write(string: message, to: &buffer)
        }
        buffer.setInteger(UInt32(buffer.writerIndex - start - 4), at: start)
    }

    /// The message framed in a new buffer.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: 64)
        write(to: &buffer)
        return buffer
    }

    private static func write(string: String, to buffer: inout ByteBuffer) {
        var bytes = Array(string.utf8)
        if bytes.count > maximumStringBytes {
            // Cut on a character boundary so that the result is still valid UTF-8.
            var cut = String(string.prefix(maximumStringBytes))
            while cut.utf8.count > maximumStringBytes { cut.removeLast() }
            bytes = Array(cut.utf8)
        }
        buffer.writeInteger(UInt16(bytes.count))
        buffer.writeBytes(bytes)
    }

    private static func write(keys: [ControllerChunkKey], to buffer: inout ByteBuffer) {
        precondition(keys.count <= maximumKeys, "\(keys.count) keys in one message; the limit is \(maximumKeys)")
        buffer.writeInteger(UInt32(keys.count))
        buffer.reserveCapacity(minimumWritableBytes: keys.count * ControllerChunkKey.wireSize)
        for key in keys {
            buffer.writeInteger(key.low)
            buffer.writeInteger(key.high)
            buffer.writeInteger(key.tokenCount)
        }
    }
}

// MARK: - Decoding

extension ControllerMessage {
    /// Reads one whole message from the front of `buffer`, or returns `nil` (reader index
    /// unmoved) while it is incomplete.
    /// - Parameter maximumLength: The largest `length` field accepted.
    /// - Throws: ``ControllerProtocolError`` for a message that is too long, of another version, of
    ///   an unknown type, or whose body does not match its type (truncated, trailing bytes,
    ///   counts or strings above their caps, invalid UTF-8).
    public static func read(
        from buffer: inout ByteBuffer,
        maximumLength: Int = defaultMaximumLength
    ) throws(ControllerProtocolError) -> ControllerMessage? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= 2 else { throw ControllerProtocolError(.malformed, "message length \(length) < 2") }
        guard Int(length) <= maximumLength else {
            throw ControllerProtocolError(.oversized, "message of \(length) bytes; the limit is \(maximumLength)")
        }
        guard buffer.readableBytes >= 4 + Int(length) else { return nil }
        var body = buffer.getSlice(at: buffer.readerIndex + 4, length: Int(length))!
        let version: UInt8 = body.readInteger()!
        let type: UInt8 = body.readInteger()!
        guard version == Self.version else {
            throw ControllerProtocolError(.unsupportedVersion, "version \(version); this codec speaks \(Self.version)")
        }
        guard let kind = Kind(rawValue: type) else {
            throw ControllerProtocolError(.unknownMessage, "message type \(type)")
        }
        let message = try decodeBody(kind, &body)
        guard body.readableBytes == 0 else {
            throw ControllerProtocolError(.malformed, "\(body.readableBytes) bytes after a \(kind) message")
        }
        buffer.moveReaderIndex(forwardBy: 4 + Int(length))
        return message
    }

    private static func decodeBody(
        _ kind: Kind,
        _ body: inout ByteBuffer
    ) throws(ControllerProtocolError)
        -> ControllerMessage
    {
        switch kind {
        case .register:
            let id = try readString(&body)
            let host = try readString(&body)
            return .register(instanceID: id, host: host, port: Int(try readInteger(&body, as: UInt16.self)))
        case .report:
            let id = try readString(&body)
            let admitted = try readKeys(&body)
            return .report(instanceID: id, admitted: admitted, removed: try readKeys(&body))
        case .heartbeat: return .heartbeat(instanceID: try readString(&body))
        case .deregister: return .deregister(instanceID: try readString(&body))
        case .lookup:
            let id = try readString(&body)
            return .lookup(instanceID: id, keys: try readKeys(&body))
        case .forget:
            let id = try readString(&body)
            return .forget(peerID: id, keys: try readKeys(&body))
        case .ok: return .ok
        case .unknownInstance: return .unknownInstance
        case .peer:
            let id = try readString(&body)
            let host = try readString(&body)
            let port = Int(try readInteger(&body, as: UInt16.self))
            let count = Int(try readInteger(&body, as: UInt32.self))
            guard count <= maximumKeys else {
                throw ControllerProtocolError(
                    .malformed,
                    "a peer answer for \(count) keys; the limit is \(maximumKeys)"
                )
            }
            return .peer(instanceID: id, host: host, port: port, count: count)
        case .failure: return .failure(try readString(&body))
        }
    }

    private static func readInteger<T: FixedWidthInteger>(
        _ body: inout ByteBuffer,
        as: T.Type
    )
        throws(ControllerProtocolError) -> T
    {
        guard let value = body.readInteger(as: T.self) else {
            throw ControllerProtocolError(.malformed, "the message ends inside a field")
        }
        return value
    }

    private static func readString(_ body: inout ByteBuffer) throws(ControllerProtocolError) -> String {
        let count = Int(try readInteger(&body, as: UInt16.self))
        guard count <= maximumStringBytes else {
            throw ControllerProtocolError(.malformed, "a string of \(count) bytes; the limit is \(maximumStringBytes)")
        }
        guard let bytes = body.readSlice(length: count) else {
            throw ControllerProtocolError(.malformed, "the message ends inside a string")
        }
        guard let text = String(validating: bytes.readableBytesView, as: UTF8.self) else {
            throw ControllerProtocolError(.malformed, "a string that is not valid UTF-8")
        }
        return text
    }

    private static func readKeys(_ body: inout ByteBuffer) throws(ControllerProtocolError) -> [ControllerChunkKey] {
        let count = Int(try readInteger(&body, as: UInt32.self))
        guard count <= maximumKeys else {
            throw ControllerProtocolError(.malformed, "a list of \(count) keys; the limit is \(maximumKeys)")
        }
        // Checked before allocating: the count must fit in what is left of the message.
        guard body.readableBytes >= count * ControllerChunkKey.wireSize else {
            throw ControllerProtocolError(.malformed, "a list of \(count) keys in \(body.readableBytes) bytes")
        }
        var keys: [ControllerChunkKey] = []
        keys.reserveCapacity(count)
        for _ in 0..<count {
            let low: UInt64 = body.readInteger()!
            let high: UInt64 = body.readInteger()!
            let tokens: UInt32 = body.readInteger()!
            keys.append(ControllerChunkKey(low: low, high: high, tokenCount: tokens))
        }
        return keys
    }
}

/// Decodes controller messages from a byte stream, treating the input as hostile: lengths are
/// checked before anything is buffered for them, and the reader index moves only past whole
/// messages.
///
/// ```swift
/// try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ControllerMessageDecoder()))
/// ```
public struct ControllerMessageDecoder: ByteToMessageDecoder {
    public typealias InboundOut = ControllerMessage

    /// The largest `length` field accepted.
    public let maximumLength: Int

    /// Creates a decoder.
    public init(maximumLength: Int = ControllerMessage.defaultMaximumLength) {
        self.maximumLength = maximumLength
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let message = try ControllerMessage.read(from: &buffer, maximumLength: maximumLength) else {
            return .needMoreData
        }
        context.fireChannelRead(wrapInboundOut(message))
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

/// Encodes controller messages for a channel pipeline.
public struct ControllerMessageEncoder: MessageToByteEncoder {
    public typealias OutboundIn = ControllerMessage

    /// Creates an encoder.
    public init() {}

    public func encode(data: ControllerMessage, out: inout ByteBuffer) {
        data.write(to: &out)
    }
}

/// Input that breaks the controller protocol. The connection that sent it is closed.
public struct ControllerProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of violation.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable { case oversized, unsupportedVersion, unknownMessage, malformed }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The length field is above the cap.
        public static let oversized = Code(.oversized)
        /// The version byte is not one this codec speaks.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// The type byte names no message.
        public static let unknownMessage = Code(.unknownMessage)
        /// The body does not match its type: truncated, trailing bytes, a count or string above
        /// its cap, invalid UTF-8.
        public static let malformed = Code(.malformed)

        public var description: String { "\(base)" }
    }

    /// The violation's kind.
    public let code: Code
    /// What was received, for the log line.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "controller protocol error (\(code)): \(message)" }
}
