/// An error building a tokenizer from a model file's metadata.
public struct TokenizerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of a ``TokenizerError``.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case missingKey
            case invalidMetadata
            case unsupportedModel
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A required `tokenizer.ggml.*` key is absent.
        public static let missingKey = Code(.missingKey)
        /// A tokenizer key has the wrong type or inconsistent contents.
        public static let invalidMetadata = Code(.invalidMetadata)
        /// `tokenizer.ggml.model` names a tokenizer this module does not implement.
        public static let unsupportedModel = Code(.unsupportedModel)

        /// The code's name.
        public var description: String { base.rawValue }
    }

    /// What kind of error this is.
    public let code: Code
    /// What is wrong, naming the metadata key.
    public let message: String

    /// Creates an error.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// `Tokenizer <code>: <message>`.
    public var description: String { "Tokenizer \(code): \(message)" }
}
