/// Turns text into token ids and back, as the model's own tokenizer does.
///
/// The requirements are the primitives; conveniences (``decode(_:renderSpecial:)``, ``piece(_:)``,
/// ``encode(_:)``) live in an extension. Implementations are immutable values that can be
/// shared across tasks.
///
/// ```swift
/// let file = try GGUFFile(contentsOf: path)
/// let tokenizer = try makeTokenizer(from: file)
/// let ids = tokenizer.encode("Hello world", addSpecial: true, parseSpecial: false)  // [2, 9259, 1902]
/// let text = tokenizer.decode(ids)                                                 // "Hello world"
/// ```
public protocol Tokenizer: Sendable {
    /// The number of tokens in the vocabulary; valid ids are `0 ..< vocabularySize`.
    var vocabularySize: Int { get }
    /// The beginning-of-sequence token, when the vocabulary has one.
    var bosID: Int32? { get }
    /// The end-of-sequence token, when the vocabulary has one.
    var eosID: Int32? { get }
    /// The padding token, when the vocabulary has one (`tokenizer.ggml.padding_token_id`).
    var paddingID: Int32? { get }
    /// The token for unknown text, when the vocabulary has one (`tokenizer.ggml.unknown_token_id`).
    var unknownID: Int32? { get }
    /// Every token that ends generation (EOS plus end-of-turn tokens such as Gemma's `<end_of_turn>`).
    var endOfGenerationIDs: Set<Int32> { get }
    /// Whether ``encode(_:addSpecial:parseSpecial:)`` with `addSpecial` puts BOS in front.
    var addsBOS: Bool { get }
    /// Whether ``encode(_:addSpecial:parseSpecial:)`` with `addSpecial` appends EOS.
    var addsEOS: Bool { get }

    /// Splits `text` into token ids.
    /// - Parameters:
    ///   - text: The text to encode.
    ///   - addSpecial: Add the BOS/EOS tokens that the model asks for (``addsBOS``, ``addsEOS``).
    ///   - parseSpecial: Recognise the text of control tokens (such as `<start_of_turn>`) as those
    ///     tokens; when `false` such text is encoded as ordinary text.
    /// - Returns: The token ids.
    /// - Complexity: O(*n* log *n*) in the length of `text`.
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32]

    /// Appends the bytes that token `id` stands for to `output`.
    ///
    /// A token may stand for part of a UTF-8 character (byte-fallback tokens), so the bytes of
    /// consecutive tokens must be joined before they are read as text; ``StreamingDecoder`` does that.
    /// - Parameters:
    ///   - id: A token id; ids outside the vocabulary append nothing.
    ///   - renderSpecial: Whether control and unknown tokens append their text (such as `<bos>`);
    ///     when `false` they append nothing.
    ///   - output: Where the bytes go.
    func appendPieceBytes(of id: Int32, renderSpecial: Bool, to output: inout [UInt8])
}

extension Tokenizer {
    /// Encodes `text` adding the model's BOS/EOS and without parsing special-token text.
    public func encode(_ text: String) -> [Int32] {
        encode(text, addSpecial: true, parseSpecial: false)
    }

    /// The bytes that `ids` stand for, joined.
    /// - Parameters:
    ///   - ids: Token ids.
    ///   - renderSpecial: Whether control tokens are rendered as their text.
    /// - Complexity: O(total length of the pieces).
    public func decodeBytes(_ ids: [Int32], renderSpecial: Bool = false) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            appendPieceBytes(of: id, renderSpecial: renderSpecial, to: &bytes)
        }
        return bytes
    }

    /// The text that `ids` stand for. Control tokens (BOS, EOS, turn markers) are left out unless
    /// `renderSpecial` is `true`; bytes that are not valid UTF-8 become U+FFFD.
    /// - Complexity: O(total length of the pieces).
    public func decode(_ ids: [Int32], renderSpecial: Bool = false) -> String {
        String(decoding: decodeBytes(ids, renderSpecial: renderSpecial), as: UTF8.self)
    }

    /// The bytes of one token, control tokens rendered as their text.
    public func pieceBytes(_ id: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        appendPieceBytes(of: id, renderSpecial: true, to: &bytes)
        return bytes
    }

    /// The text of one token (control tokens rendered as their text, such as `<bos>`; a byte
    /// token that is not a whole UTF-8 character becomes U+FFFD).
    public func piece(_ id: Int32) -> String {
        String(decoding: pieceBytes(id), as: UTF8.self)
    }

    /// Whether `id` ends generation.
    public func isEndOfGeneration(_ id: Int32) -> Bool {
        endOfGenerationIDs.contains(id)
    }
}

/// Turns a stream of token ids into text, holding back bytes of a UTF-8 character that is split
/// across tokens until the character is complete.
///
/// ```swift
/// var decoder = StreamingDecoder(tokenizer: tokenizer)
/// for id in generated { print(decoder.append(id), terminator: "") }
/// print(decoder.finish())
/// ```
public struct StreamingDecoder: Sendable {
    private let tokenizer: any Tokenizer
    private let renderSpecial: Bool
    private var pending: [UInt8] = []

    /// Creates a decoder.
    /// - Parameters:
    ///   - tokenizer: The tokenizer whose ids will be appended.
    ///   - renderSpecial: Whether control tokens are rendered as their text.
    public init(tokenizer: any Tokenizer, renderSpecial: Bool = false) {
        self.tokenizer = tokenizer
        self.renderSpecial = renderSpecial
    }

    /// Adds one token and returns the text that is now complete (possibly empty).
    public mutating func append(_ id: Int32) -> String {
        tokenizer.appendPieceBytes(of: id, renderSpecial: renderSpecial, to: &pending)
        let complete = Self.completePrefixLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[0..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Returns whatever is held back (an incomplete character becomes U+FFFD) and resets.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// The length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence
    /// that could still be completed.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        // Look back at most 3 bytes for the lead byte of a trailing, unfinished sequence.
        var index = bytes.count - 1
        var continuation = 0
        while index >= 0, continuation < 3, bytes[index] & 0xC0 == 0x80 {
            continuation += 1
            index -= 1
        }
        guard index >= 0 else { return bytes.count }
        let lead = bytes[index]
        let expected: Int
        switch lead {
        case 0xC2...0xDF: expected = 2
        case 0xE0...0xEF: expected = 3
        case 0xF0...0xF4: expected = 4
        default: return bytes.count  // ASCII or invalid: nothing to wait for
        }
        return continuation + 1 < expected ? index : bytes.count
    }
}
