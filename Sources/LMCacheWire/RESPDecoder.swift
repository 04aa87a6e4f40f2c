public import NIOCore

/// Decodes RESP2 values from a byte stream, treating it as hostile.
///
/// Every length and count is capped before anything is allocated, integers are parsed with
/// overflow checks and no sign or space tricks, nesting depth is limited, and a line without
/// its CR LF within ``maximumLineBytes`` is an error. When a value is not complete yet the
/// decoder returns `nil` without moving the reader index, so it can be drip-fed.
///
/// ```swift
/// let handler = ByteToMessageHandler(RESPValueDecoder(maximumBulkBytes: 64 << 20))
/// ```
public struct RESPValueDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = RESPValue

    /// The largest bulk string accepted. Default 512 MiB (Redis's own `proto-max-bulk-len`).
    public var maximumBulkBytes: Int
    /// The most elements one array may declare. Default 1 Mi.
    public var maximumArrayCount: Int
    /// The deepest nesting of arrays. Default 8 (Redis replies here nest at most 4 deep).
    public var maximumDepth: Int
    /// The longest simple-string, error or integer line, without CR LF. Default 64 KiB.
    public var maximumLineBytes: Int

    /// Creates a decoder with the given caps.
    public init(
        maximumBulkBytes: Int = 512 << 20, maximumArrayCount: Int = 1 << 20, maximumDepth: Int = 8,
        maximumLineBytes: Int = 65536
    ) {
        self.maximumBulkBytes = maximumBulkBytes
        self.maximumArrayCount = maximumArrayCount
        self.maximumDepth = maximumDepth
        self.maximumLineBytes = maximumLineBytes
    }

    /// The next complete value, or `nil` (reader index unchanged) when more bytes are needed.
    /// - Throws: ``RESPProtocolError`` when the bytes cannot be RESP2.
    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        var index = buffer.readerIndex
        guard let value = try parse(buffer, at: &index, depth: 0) else { return nil }
        buffer.moveReaderIndex(to: index)
        return value
    }

    /// Same as ``decode(buffer:)``; what is left at the end of the stream is an incomplete value
    /// that the connection's owner reports when it sees the stream end.
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }

    private func parse(_ buffer: ByteBuffer, at index: inout Int, depth: Int) throws -> RESPValue? {
        guard let type = buffer.getInteger(at: index, as: UInt8.self) else { return nil }
        var cursor = index + 1
        guard let line = try line(buffer, at: &cursor) else { return nil }
        switch type {
        case UInt8(ascii: "+"):
            index = cursor
            return .simpleString(String(decoding: buffer.getSlice(at: line.lowerBound, length: line.count)!.readableBytesView, as: UTF8.self))
        case UInt8(ascii: "-"):
            index = cursor
            return .error(String(decoding: buffer.getSlice(at: line.lowerBound, length: line.count)!.readableBytesView, as: UTF8.self))
        case UInt8(ascii: ":"):
            index = cursor
            return .integer(try Self.integer(buffer, line))
        case UInt8(ascii: "$"):
            let length = try Self.integer(buffer, line)
            if length == -1 {
                index = cursor
                return .bulkString(nil)
            }
            guard length >= 0, length <= maximumBulkBytes else {
                throw RESPProtocolError(.tooLarge, "bulk string of \(length) bytes (cap \(maximumBulkBytes))")
            }
            // `length` is at most `maximumBulkBytes`, an Int, and `cursor` an index into the buffer:
            // the sum cannot overflow for any cap below Int.max / 2.
            let count = Int(length)
            guard buffer.writerIndex - cursor >= count + 2 else { return nil }
            guard buffer.getInteger(at: cursor + count, as: UInt16.self) == 0x0D0A else {
                throw RESPProtocolError(.malformedLine, "bulk string of \(count) bytes not followed by CR LF")
            }
            let slice = buffer.getSlice(at: cursor, length: count)!
            index = cursor + count + 2
            return .bulkString(slice)
        case UInt8(ascii: "*"):
            let count = try Self.integer(buffer, line)
            if count == -1 {
                index = cursor
                return .array(nil)
            }
            guard count >= 0, count <= maximumArrayCount else {
                throw RESPProtocolError(.tooLarge, "array of \(count) elements (cap \(maximumArrayCount))")
            }
            guard depth < maximumDepth else {
                throw RESPProtocolError(.tooDeep, "arrays nested more than \(maximumDepth) deep")
            }
            // Each element takes at least 3 bytes; do not reserve for more than could have arrived.
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(Int(count), (buffer.writerIndex - cursor) / 3 + 1))
            for _ in 0..<count {
                guard let element = try parse(buffer, at: &cursor, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            index = cursor
            return .array(elements)
        default:
            throw RESPProtocolError(.unknownType, "value starts with byte 0x\(String(type, radix: 16))")
        }
    }

    /// The range of the line that starts at `cursor` (without CR LF), moving `cursor` past the
    /// CR LF; `nil` when the line is not complete yet.
    private func line(_ buffer: ByteBuffer, at cursor: inout Int) throws -> Range<Int>? {
        let available = buffer.writerIndex - cursor
        let scan = min(available, maximumLineBytes + 2)
        guard let view = buffer.viewBytes(at: cursor, length: scan) else { return nil }
        guard let newline = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if available > maximumLineBytes + 1 {
                throw RESPProtocolError(.malformedLine, "a line longer than \(maximumLineBytes) bytes")
            }
            return nil
        }
        guard newline > view.startIndex, view[newline - 1] == UInt8(ascii: "\r") else {
            throw RESPProtocolError(.malformedLine, "a line ends in LF without CR")
        }
        let range = cursor..<(newline - 1)
        cursor = newline + 1
        return range
    }

    /// A decimal integer: an optional `-` then 1...19 digits, nothing else, checked for overflow.
    static func integer(_ buffer: ByteBuffer, _ range: Range<Int>) throws -> Int64 {
        guard let bytes = buffer.viewBytes(at: range.lowerBound, length: range.count), !bytes.isEmpty else {
            throw RESPProtocolError(.malformedInteger, "an empty number")
        }
        var negative = false
        var digits = bytes[...]
        if digits.first == UInt8(ascii: "-") {
            negative = true
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty, digits.count <= 19 else {
            throw RESPProtocolError(.malformedInteger, "a number of \(bytes.count) characters")
        }
        var value: Int64 = 0
        for byte in digits {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else {
                throw RESPProtocolError(.malformedInteger, "a number with the byte 0x\(String(byte, radix: 16))")
            }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw RESPProtocolError(.malformedInteger, "a number beyond 64 bits") }
            value = sum
        }
        return negative ? -value : value
    }
}

/// Writes Redis commands: an array of bulk strings.
///
/// Small arguments are copied into one head buffer; an argument of at least
/// ``RESPCommand/inlineLimit`` bytes is passed on as its own buffer, so a multi-megabyte value
/// is never copied on its way to the socket.
public struct RESPCommand: Sendable {
    /// Arguments at least this long travel as their own buffer.
    public static let inlineLimit = 16 << 10
    /// The command name and its arguments, in order.
    public var arguments: [ByteBuffer]

    /// A command from its name and arguments.
    public init(_ arguments: [ByteBuffer]) { self.arguments = arguments }

    /// A command whose arguments are all text.
    public init(_ arguments: String...) { self.arguments = arguments.map { ByteBuffer(string: $0) } }

    /// The command's bytes as a few buffers to write in order.
    /// - Complexity: O(total length of the small arguments); large arguments are not copied.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> [ByteBuffer] {
        var parts: [ByteBuffer] = []
        var head = allocator.buffer(capacity: 64 + arguments.reduce(0) { $0 + min($1.readableBytes, Self.inlineLimit) + 16 })
        head.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            head.writeString("$\(argument.readableBytes)\r\n")
            if argument.readableBytes < Self.inlineLimit {
                head.writeImmutableBuffer(argument)
                head.writeStaticString("\r\n")
            } else {
                parts.append(head)
                parts.append(argument)
                head = allocator.buffer(capacity: 256)
                head.writeStaticString("\r\n")
            }
        }
        parts.append(head)
        return parts
    }

    /// The command's bytes in one buffer (tests and tools).
    public func encodedBuffer() -> ByteBuffer {
        var result = ByteBuffer()
        for var part in encoded() { result.writeBuffer(&part) }
        return result
    }
}

extension RESPValue {
    /// Writes the value in RESP2 (used by tests and fakes that play a server).
    public func write(to buffer: inout ByteBuffer) {
        switch self {
        case .simpleString(let text): buffer.writeString("+\(text)\r\n")
        case .error(let text): buffer.writeString("-\(text)\r\n")
        case .integer(let value): buffer.writeString(":\(value)\r\n")
        case .bulkString(nil): buffer.writeStaticString("$-1\r\n")
        case .bulkString(let value?):
            buffer.writeString("$\(value.readableBytes)\r\n")
            buffer.writeImmutableBuffer(value)
            buffer.writeStaticString("\r\n")
        case .array(nil): buffer.writeStaticString("*-1\r\n")
        case .array(let values?):
            buffer.writeString("*\(values.count)\r\n")
            for value in values { value.write(to: &buffer) }
        }
    }
}
