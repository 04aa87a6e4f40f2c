public import NIOCore

/// One value of the Redis serialization protocol, version 2 (RESP2).
///
/// Redis answers every command with one such value. Bulk strings are slices of the received
/// bytes (no copy), so a multi-megabyte value costs one buffer, not one array of bytes.
public enum RESPValue: Hashable, Sendable {
    /// `+OK`: a short status line.
    case simpleString(String)
    /// `-ERR …`: an error reply; the text starts with an error code such as `ERR`, `MOVED`, `NOAUTH`.
    case error(String)
    /// `:42`.
    case integer(Int64)
    /// `$5 hello`; `nil` for RESP2's null bulk string (`$-1`, a missing key).
    case bulkString(ByteBuffer?)
    /// `*2 …`; `nil` for RESP2's null array (`*-1`).
    case array([RESPValue]?)
}

extension RESPValue: CustomStringConvertible {
    public var description: String {
        switch self {
        case .simpleString(let text): "+\(text)"
        case .error(let text): "-\(text)"
        case .integer(let value): ":\(value)"
        case .bulkString(nil): "$nil"
        case .bulkString(let buffer?): "$<\(buffer.readableBytes) bytes>"
        case .array(nil): "*nil"
        case .array(let values?): "[" + values.map(\.description).joined(separator: ", ") + "]"
        }
    }

    /// The error text when this is an error reply.
    public var errorMessage: String? {
        if case .error(let text) = self { return text }
        return nil
    }

    /// The bytes of a bulk or simple string as UTF-8 text; `nil` for other values or invalid UTF-8.
    public var string: String? {
        switch self {
        case .simpleString(let text): text
        case .bulkString(let buffer?): buffer.getString(at: buffer.readerIndex, length: buffer.readableBytes)
        default: nil
        }
    }
}

/// Input that breaks RESP2. The connection that sent it is closed.
public struct RESPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of violation.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case unknownType, malformedLine, malformedInteger, tooLarge, tooDeep
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The first byte of a value is not one of `+ - : $ *`.
        public static let unknownType = Code(.unknownType)
        /// A line does not end in CR LF, is too long, or a bulk string lacks its CR LF trailer.
        public static let malformedLine = Code(.malformedLine)
        /// A length or integer is not a decimal number that fits 64 bits.
        public static let malformedInteger = Code(.malformedInteger)
        /// A bulk length or array count above its cap (or below -1).
        public static let tooLarge = Code(.tooLarge)
        /// Arrays nested deeper than the cap.
        public static let tooDeep = Code(.tooDeep)

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

    public var description: String { "RESP protocol error (\(code)): \(message)" }
}
