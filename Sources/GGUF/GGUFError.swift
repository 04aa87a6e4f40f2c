/// An error reading a GGUF file: the file could not be opened, or its bytes are not a valid GGUF file.
///
/// Every error names what is wrong (the metadata key or tensor involved) and, where it applies, the
/// byte offset in the file at which the problem was found. Match on ``code`` to handle a kind of
/// error; ``message`` is for people.
///
/// ```swift
/// do {
///     let file = try GGUFFile(contentsOf: path)
/// } catch where error.code == .truncated {
///     print("incomplete download: \(error)")
/// }
/// ```
public struct GGUFError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of a ``GGUFError``; an extensible set of values, compare with `==`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case ioError
            case truncated
            case badMagic
            case unsupportedVersion
            case limitExceeded
            case invalidUTF8
            case invalidValueType
            case invalidValue
            case duplicateKey
            case invalidAlignment
            case invalidTensorInfo
            case unknownTensorType
            case duplicateTensor
            case tensorOutOfBounds
            case tensorOverlap
            case missingKey
            case typeMismatch
        }

        private let base: Base

        private init(_ base: Base) { self.base = base }

        /// The file could not be opened, inspected or mapped (the operating system's error is in the message).
        public static let ioError = Code(.ioError)
        /// The file ends before a structure that the header promises.
        public static let truncated = Code(.truncated)
        /// The file does not start with the four bytes `GGUF`.
        public static let badMagic = Code(.badMagic)
        /// The format version is not 2 or 3 (or the file is big-endian).
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// A count, length, dimension or nesting depth is beyond what the file can hold or the reader accepts.
        public static let limitExceeded = Code(.limitExceeded)
        /// A key, tensor name or string value is not valid UTF-8.
        public static let invalidUTF8 = Code(.invalidUTF8)
        /// A metadata value has a type id that GGUF does not define.
        public static let invalidValueType = Code(.invalidValueType)
        /// A metadata value is out of its domain (for example a boolean byte other than 0 or 1).
        public static let invalidValue = Code(.invalidValue)
        /// Two metadata entries have the same key.
        public static let duplicateKey = Code(.duplicateKey)
        /// `general.alignment` is not a `uint32` power of two.
        public static let invalidAlignment = Code(.invalidAlignment)
        /// A tensor's dimensions are invalid (negative, too many, overflowing, or not whole blocks).
        public static let invalidTensorInfo = Code(.invalidTensorInfo)
        /// A tensor's type id is not a known ``GGMLType``.
        public static let unknownTensorType = Code(.unknownTensorType)
        /// Two tensors have the same name.
        public static let duplicateTensor = Code(.duplicateTensor)
        /// A tensor's data is misaligned or lies (partly) outside the file.
        public static let tensorOutOfBounds = Code(.tensorOutOfBounds)
        /// Two tensors' data ranges overlap.
        public static let tensorOverlap = Code(.tensorOverlap)
        /// A required metadata key is absent (from the `require…` helpers).
        public static let missingKey = Code(.missingKey)
        /// A metadata value has a different type than the caller asked for (from the `require…` helpers).
        public static let typeMismatch = Code(.typeMismatch)

        /// The code's name, such as `truncated`.
        public var description: String { base.rawValue }
    }

    /// What kind of error this is.
    public let code: Code
    /// A description naming the key or tensor involved and what is wrong with it.
    public let message: String
    /// The byte offset in the file where the problem was found, when it applies.
    public let offset: Int?

    /// Creates an error.
    /// - Parameters:
    ///   - code: The kind of error.
    ///   - message: What is wrong, naming the key or tensor involved.
    ///   - offset: The byte offset in the file, when it applies.
    public init(_ code: Code, _ message: String, offset: Int? = nil) {
        self.code = code
        self.message = message
        self.offset = offset
    }

    /// `GGUF <code> at offset <n>: <message>`.
    public var description: String {
        if let offset {
            return "GGUF \(code) at offset \(offset): \(message)"
        }
        return "GGUF \(code): \(message)"
    }
}
