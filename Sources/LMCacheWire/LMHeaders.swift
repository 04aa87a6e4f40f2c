public import NIOCore

/// A command of LMCache's `lm://` protocol (the first `int32` of a request header).
public enum LMCommand: Int32, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Store a value: header plus exactly `length` payload bytes; no reply.
    case put = 1
    /// Fetch a value: a 200 header and the payload, or a 400 header.
    case get = 2
    /// Ask whether a key is stored: a 200 or 400 header.
    case exist = 3
    /// List keys. LMCache's reference server never answers it; see ``LMRequestDecoder``.
    case list = 4
    /// Liveness probe: a 200 header.
    case health = 5

    public var description: String {
        switch self {
        case .put: "PUT"
        case .get: "GET"
        case .exist: "EXIST"
        case .list: "LIST"
        case .health: "HEALTH"
        }
    }
}

/// The four shape values carried by `lm://` headers (unused trailing ones are 0).
///
/// The server treats them as opaque metadata: it stores what a PUT carried and echoes it on GET.
public struct LMShape: Hashable, Sendable, CustomStringConvertible {
    public var d0: Int32
    public var d1: Int32
    public var d2: Int32
    public var d3: Int32

    /// Creates a shape from up to four values; missing ones are 0.
    /// - Precondition: `values.count <= 4`.
    public init(_ values: [Int32] = []) {
        precondition(values.count <= 4, "an lm:// shape holds at most 4 values")
        d0 = values.count > 0 ? values[0] : 0
        d1 = values.count > 1 ? values[1] : 0
        d2 = values.count > 2 ? values[2] : 0
        d3 = values.count > 3 ? values[3] : 0
    }

    /// All-zero shape.
    public static let zero = LMShape()

    /// The four values in order.
    public var values: [Int32] { [d0, d1, d2, d3] }

    public var description: String { "[\(d0), \(d1), \(d2), \(d3)]" }

    mutating func read(from buffer: ByteBuffer, at offset: Int) {
        d0 = buffer.getInteger(at: offset, endianness: .little, as: Int32.self)!
        d1 = buffer.getInteger(at: offset + 4, endianness: .little, as: Int32.self)!
        d2 = buffer.getInteger(at: offset + 8, endianness: .little, as: Int32.self)!
        d3 = buffer.getInteger(at: offset + 12, endianness: .little, as: Int32.self)!
    }

    func write(to buffer: inout ByteBuffer) {
        buffer.writeInteger(d0, endianness: .little)
        buffer.writeInteger(d1, endianness: .little)
        buffer.writeInteger(d2, endianness: .little)
        buffer.writeInteger(d3, endianness: .little)
    }
}

/// The 186-byte request header of LMCache's `lm://` protocol.
///
/// Layout (every integer `int32`, little-endian): command, length, format, dtype, location,
/// shape[4], then the key as UTF-8 right-padded with ASCII spaces to 150 bytes.
/// `format`, `dtype` and `shape` describe the payload of a PUT; the server stores them opaquely.
///
/// ```swift
/// var buffer = ByteBuffer()
/// LMRequestHeader(command: .get, key: "model@1@0@abc@float16").write(to: &buffer)
/// ```
public struct LMRequestHeader: Hashable, Sendable {
    /// Bytes on the wire.
    public static let size = 186
    /// The key to send with requests that need none (HEALTH, LIST): LMCache's own server parses
    /// the key of every request as `model@world_size@worker_id@hex_hash@dtype` (dtype one of
    /// its names: `half`, `bfloat16`, `float`, …) and drops the connection when it cannot.
    public static let placeholderKey = "lmcache@1@0@0@half"
    /// Bytes of the key field; longer keys cannot be sent.
    public static let keyFieldSize = 150

    public var command: LMCommand
    /// Payload bytes that follow the header (PUT only; 0 otherwise).
    public var length: Int32
    /// The memory-format code; 1 when there is no payload.
    public var format: Int32
    /// The dtype code (2 for float16, 3 bfloat16, 4 float32, …).
    public var dtype: Int32
    /// A hint the server ignores.
    public var location: Int32
    public var shape: LMShape
    /// The key, without padding.
    public var key: String

    /// Creates a header.
    /// - Precondition: `key` is at most ``keyFieldSize`` UTF-8 bytes.
    public init(
        command: LMCommand,
        key: String,
        length: Int32 = 0,
        format: Int32 = 1,
        dtype: Int32 = 2,
        location: Int32 = 0,
        shape: LMShape = .zero
    ) {
        precondition(key.utf8.count <= Self.keyFieldSize, "lm:// keys are at most 150 UTF-8 bytes")
        self.command = command
        self.length = length
        self.format = format
        self.dtype = dtype
        self.location = location
        self.shape = shape
        self.key = key
    }

    /// Appends the 186 header bytes to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: Self.size)
        buffer.writeInteger(command.rawValue, endianness: .little)
        buffer.writeInteger(length, endianness: .little)
        buffer.writeInteger(format, endianness: .little)
        buffer.writeInteger(dtype, endianness: .little)
        buffer.writeInteger(location, endianness: .little)
        shape.write(to: &buffer)
        let written = buffer.writeString(key)
        buffer.writeRepeatingByte(UInt8(ascii: " "), count: Self.keyFieldSize - written)
    }

    /// Parses the header at the reader index of `buffer` without moving it.
    /// - Returns: `nil` when fewer than ``size`` bytes are readable.
    /// - Throws: ``LMProtocolError`` for an unknown command or a key that is not UTF-8.
    ///   Lengths are not checked here; ``LMRequestDecoder`` caps them.
    public static func peek(_ buffer: ByteBuffer) throws(LMProtocolError) -> LMRequestHeader? {
        guard buffer.readableBytes >= size else { return nil }
        let base = buffer.readerIndex
        let code = buffer.getInteger(at: base, endianness: .little, as: Int32.self)!
        guard let command = LMCommand(rawValue: code) else { throw .unknownCommand(code) }
        let length = buffer.getInteger(at: base + 4, endianness: .little, as: Int32.self)!
        let format = buffer.getInteger(at: base + 8, endianness: .little, as: Int32.self)!
        let dtype = buffer.getInteger(at: base + 12, endianness: .little, as: Int32.self)!
        let location = buffer.getInteger(at: base + 16, endianness: .little, as: Int32.self)!
        var shape = LMShape.zero
        shape.read(from: buffer, at: base + 20)
        let key = try buffer.withUnsafeReadableBytes { bytes throws(LMProtocolError) -> String in
            // The key field is bytes 36..<186 of the header, all inside the readable region.
            var field = bytes[36..<size]
            while let last = field.last, last == UInt8(ascii: " ") { field = field.dropLast() }
            guard let text = String(validating: field, as: UTF8.self) else { throw .invalidKey }
            return text
        }
        return LMRequestHeader(
            command: command,
            key: key,
            length: length,
            format: format,
            dtype: dtype,
            location: location,
            shape: shape
        )
    }
}

/// The 36-byte reply header of LMCache's `lm://` protocol.
///
/// Layout (every integer `int32`, little-endian): code, length, format, dtype, shape[4], location.
public struct LMReplyHeader: Hashable, Sendable {
    /// Bytes on the wire.
    public static let size = 36
    /// The success code.
    public static let success: Int32 = 200
    /// The failure code (a miss, or an absent key).
    public static let failure: Int32 = 400

    /// 200 or 400.
    public var code: Int32
    /// Payload bytes that follow (a GET hit).
    public var length: Int32
    public var format: Int32
    public var dtype: Int32
    public var shape: LMShape
    public var location: Int32

    /// Creates a reply header.
    public init(
        code: Int32,
        length: Int32 = 0,
        format: Int32 = 1,
        dtype: Int32 = 2,
        shape: LMShape = .zero,
        location: Int32 = 0
    ) {
        self.code = code
        self.length = length
        self.format = format
        self.dtype = dtype
        self.shape = shape
        self.location = location
    }

    /// The reply to a GET miss, as LMCache's server sends it: 400, length 0, format 1, dtype 2, zero shape.
    public static let miss = LMReplyHeader(code: failure)
    /// A bare success reply (EXIST hit, HEALTH).
    public static let ok = LMReplyHeader(code: success)
    /// A bare failure reply (EXIST miss).
    public static let notFound = LMReplyHeader(code: failure)

    /// Whether the code is 200.
    public var isSuccess: Bool { code == Self.success }

    /// Appends the 36 header bytes to `buffer`.
    public func write(to buffer: inout ByteBuffer) {
        buffer.reserveCapacity(minimumWritableBytes: Self.size)
        buffer.writeInteger(code, endianness: .little)
        buffer.writeInteger(length, endianness: .little)
        buffer.writeInteger(format, endianness: .little)
        buffer.writeInteger(dtype, endianness: .little)
        shape.write(to: &buffer)
        buffer.writeInteger(location, endianness: .little)
    }

    /// Reads a header from `buffer`, moving the reader index past it.
    /// - Returns: `nil` (reader index untouched) when fewer than ``size`` bytes are readable.
    public static func read(from buffer: inout ByteBuffer) -> LMReplyHeader? {
        guard buffer.readableBytes >= size else { return nil }
        let base = buffer.readerIndex
        var shape = LMShape.zero
        shape.read(from: buffer, at: base + 16)
        let header = LMReplyHeader(
            code: buffer.getInteger(at: base, endianness: .little, as: Int32.self)!,
            length: buffer.getInteger(at: base + 4, endianness: .little, as: Int32.self)!,
            format: buffer.getInteger(at: base + 8, endianness: .little, as: Int32.self)!,
            dtype: buffer.getInteger(at: base + 12, endianness: .little, as: Int32.self)!,
            shape: shape,
            location: buffer.getInteger(at: base + 32, endianness: .little, as: Int32.self)!
        )
        buffer.moveReaderIndex(forwardBy: size)
        return header
    }
}
