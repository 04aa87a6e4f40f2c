/// A failure of a storage tier itself (not a miss).
public struct StorageError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case outOfMemory
            case invalidArgument
            case io
            case corrupt
            case unavailable
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// Memory for the tier could not be had.
        public static let outOfMemory = Code(.outOfMemory)
        /// The caller passed something the tier cannot store.
        public static let invalidArgument = Code(.invalidArgument)
        /// A read or write failed.
        public static let io = Code(.io)
        /// Stored data failed its checks.
        public static let corrupt = Code(.corrupt)
        /// The tier is switched off or unreachable.
        public static let unavailable = Code(.unavailable)

        public var description: String { "\(base)" }
    }

    /// The failure's kind.
    public let code: Code
    /// What happened, for logs.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code): \(message)" }
}
