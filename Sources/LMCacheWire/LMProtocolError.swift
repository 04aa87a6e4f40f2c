/// Input that breaks LMCache's `lm://` protocol. The connection that sent it is closed.
public struct LMProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of violation.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case unknownCommand, invalidKey, negativeLength, payloadTooLarge, unexpectedPayload, malformedReply
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The command field is not 1...5.
        public static let unknownCommand = Code(.unknownCommand)
        /// The key is not valid UTF-8.
        public static let invalidKey = Code(.invalidKey)
        /// The length field is negative.
        public static let negativeLength = Code(.negativeLength)
        /// The length field is above the configured cap.
        public static let payloadTooLarge = Code(.payloadTooLarge)
        /// A command other than PUT announced a payload.
        public static let unexpectedPayload = Code(.unexpectedPayload)
        /// A reply header that cannot be right (a negative length, an unknown code).
        public static let malformedReply = Code(.malformedReply)

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

    public var description: String { "lm:// protocol error (\(code)): \(message)" }

    static func unknownCommand(_ value: Int32) -> Self { Self(.unknownCommand, "unknown command \(value)") }
    static let invalidKey = Self(.invalidKey, "key is not valid UTF-8")
}
