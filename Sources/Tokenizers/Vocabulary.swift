import GGUF

/// What kind of token an id is (from `tokenizer.ggml.token_type`, adjusted as llama.cpp does).
struct TokenAttributes: OptionSet, Sendable, Hashable {
    let rawValue: UInt8
    static let normal = TokenAttributes(rawValue: 1 << 0)
    static let unknown = TokenAttributes(rawValue: 1 << 1)
    static let unused = TokenAttributes(rawValue: 1 << 2)
    static let control = TokenAttributes(rawValue: 1 << 3)
    static let userDefined = TokenAttributes(rawValue: 1 << 4)
    static let byte = TokenAttributes(rawValue: 1 << 5)
    static let undefined = TokenAttributes(rawValue: 1 << 6)

    /// Tokens that render only when special tokens are rendered.
    static let special: TokenAttributes = [.unknown, .control]

    /// Maps a GGUF token type (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    init(ggufTokenType: Int32) {
        switch ggufTokenType {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = .undefined
        }
    }

    init(rawValue: UInt8) { self.rawValue = rawValue }
}

/// The token texts of a vocabulary, stored contiguously, with a hash index from text to id.
///
/// Looking up a byte range costs one hash over its bytes and usually one comparison; no
/// `String` is built, which keeps encoding fast.
struct TokenTable: Sendable {
    /// All token texts back to back.
    private let storage: [UInt8]
    /// `starts[i] ..< starts[i + 1]` is token `i`'s text in `storage`.
    private let starts: [Int]
    /// Open-addressing slots holding token ids, `-1` when empty; the count is a power of two.
    private let slots: [Int32]
    /// The length of the longest token text, in bytes.
    let maxLength: Int

    var count: Int { starts.count - 1 }

    /// Builds the table. When two tokens have the same text, the later id wins (as in llama.cpp).
    init(texts: [[UInt8]]) {
        var storage: [UInt8] = []
        storage.reserveCapacity(texts.reduce(0) { $0 + $1.count })
        var starts: [Int] = [0]
        starts.reserveCapacity(texts.count + 1)
        var maxLength = 0
        for text in texts {
            storage.append(contentsOf: text)
            starts.append(storage.count)
            maxLength = max(maxLength, text.count)
        }
        var capacity = 16
        while capacity < texts.count * 2 { capacity <<= 1 }
        var slots = [Int32](repeating: -1, count: capacity)
        let mask = capacity - 1
        // Safe: `starts` are the boundaries of the texts appended to `storage` just above, so every
        // `starts[id]..<starts[id + 1]` lies inside `all`, which lives for the closure.
        unsafe storage.withUnsafeBufferPointer { all in
            for id in texts.indices {
                let text = unsafe UnsafeBufferPointer(rebasing: all[starts[id]..<starts[id + 1]])
                var slot = unsafe Int(truncatingIfNeeded: Self.hash(text)) & mask
                while true {
                    let existing = slots[slot]
                    if existing < 0 {
                        slots[slot] = Int32(id)
                        break
                    }
                    let other = unsafe UnsafeBufferPointer(
                        rebasing: all[starts[Int(existing)]..<starts[Int(existing) + 1]]
                    )
                    if unsafe other.elementsEqual(text) {
                        slots[slot] = Int32(id)  // a later duplicate replaces the earlier one
                        break
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
        self.storage = storage
        self.starts = starts
        self.slots = slots
        self.maxLength = maxLength
    }

    /// The bytes of token `id`'s text.
    func text(_ id: Int) -> ArraySlice<UInt8> { storage[starts[id]..<starts[id + 1]] }

    /// The byte length of token `id`'s text.
    func length(_ id: Int) -> Int { starts[id + 1] - starts[id] }

    /// The id of the token whose text is exactly `bytes`, or `nil`.
    func id(of bytes: UnsafeBufferPointer<UInt8>) -> Int32? {
        guard bytes.count <= maxLength else { return nil }
        let mask = slots.count - 1
        var slot = unsafe Int(truncatingIfNeeded: Self.hash(bytes)) & mask
        return unsafe storage.withUnsafeBufferPointer { all -> Int32? in
            while true {
                let id = slots[slot]
                if id < 0 { return nil }
                let start = starts[Int(id)]
                let end = starts[Int(id) + 1]
                if end - start == bytes.count {
                    var equal = true
                    var i = 0
                    while i < bytes.count {
                        // Safe: the lengths are equal, so start + i < end <= all.count, and i < bytes.count.
                        if unsafe all[start + i] != bytes[i] {
                            equal = false
                            break
                        }
                        i += 1
                    }
                    if equal { return id }
                }
                slot = (slot + 1) & mask
            }
        }
    }

    /// The id of the token whose text is `bytes`, or `nil`.
    func id(of bytes: [UInt8]) -> Int32? {
        unsafe bytes.withUnsafeBufferPointer { unsafe id(of: $0) }
    }

    /// FNV-1a, 64-bit, with a final mix so that the low bits (used for the slot) are well spread.
    @inline(__always)
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for index in 0..<bytes.count {
            // Wrapping multiplication is the hash's definition; index < bytes.count.
            h = (h ^ UInt64(unsafe bytes[index])) &* 0x0000_0100_0000_01b3
        }
        h ^= h >> 29
        h &*= 0xbf58_476d_1ce4_e5b9
        h ^= h >> 32
        return h
    }
}

/// The vocabulary shared by the tokenizer kinds: texts, scores, attributes, special ids.
struct Vocabulary: Sendable {
    let table: TokenTable
    let scores: [Float]
    let attributes: [TokenAttributes]
    let bosID: Int32?
    let eosID: Int32?
    let unknownID: Int32?
    let paddingID: Int32?
    let addsBOS: Bool
    let addsEOS: Bool
    let endOfGenerationIDs: Set<Int32>
    /// Tokens matched in the text before the model's own algorithm runs: control, user-defined and
    /// unknown tokens, longest text first (ties by id).
    let specialTokens: [Int32]

    var count: Int { table.count }

    /// Default special ids for a tokenizer kind when the file does not name them.
    struct Defaults {
        var bos: Int32?
        var eos: Int32?
        var unknown: Int32?
        var padding: Int32?
        var addsBOS: Bool
        var addsEOS: Bool
    }

    /// Reads tokens, scores and token types from `tokenizer.ggml.*` metadata.
    init(file: GGUFFile, defaults: Defaults) throws(TokenizerError) {
        guard let tokens = file.array("tokenizer.ggml.tokens") else {
            throw TokenizerError(.missingKey, "'tokenizer.ggml.tokens' is missing")
        }
        guard case .string(let texts) = tokens, !texts.isEmpty else {
            throw TokenizerError(.invalidMetadata, "'tokenizer.ggml.tokens' must be a non-empty array of strings")
        }
        guard texts.count <= Int(Int32.max) else {
            throw TokenizerError(.invalidMetadata, "'tokenizer.ggml.tokens' has more than 2^31 entries")
        }
        let count = texts.count

        var scores = [Float](repeating: 0, count: count)
        if let array = file.array("tokenizer.ggml.scores") {
            guard let values = array.floatValues, values.count >= count else {
                throw TokenizerError(
                    .invalidMetadata,
                    "'tokenizer.ggml.scores' must be an array of \(count) numbers (found \(array.count) \(array.elementType))"
                )
            }
            scores = Array(values.prefix(count))
        }

        var attributes = [TokenAttributes](repeating: .normal, count: count)
        if let array = file.array("tokenizer.ggml.token_type") {
            guard case .int32(let types) = array, types.count >= count else {
                throw TokenizerError(
                    .invalidMetadata,
                    "'tokenizer.ggml.token_type' must be an int32 array of \(count) entries "
                        + "(found \(array.count) \(array.elementType))"
                )
            }
            for i in 0..<count { attributes[i] = TokenAttributes(ggufTokenType: types[i]) }
        }

        // Empty texts cannot be matched; give them a unique placeholder as llama.cpp does.
        var bytes: [[UInt8]] = []
        bytes.reserveCapacity(count)
        for (i, text) in texts.enumerated() {
            bytes.append(text.isEmpty ? Array("[EMPTY_\(i)]".utf8) : Array(text.utf8))
        }
        let table = TokenTable(texts: bytes)

        func specialID(_ key: String, _ fallback: Int32?) -> Int32? {
            let inRange: (Int32?) -> Int32? = { id in id.flatMap { $0 >= 0 && Int($0) < count ? $0 : nil } }
            if let value = file.int(key), value >= 0, value < count {
                return Int32(value)
            }
            return inRange(fallback)
        }
        bosID = specialID("tokenizer.ggml.bos_token_id", defaults.bos)
        eosID = specialID("tokenizer.ggml.eos_token_id", defaults.eos)
        unknownID = specialID("tokenizer.ggml.unknown_token_id", defaults.unknown)
        paddingID = specialID("tokenizer.ggml.padding_token_id", defaults.padding)
        var explicitEOT: Int32? = specialID("tokenizer.ggml.eot_token_id", nil)
        let explicitEOM: Int32? = specialID("tokenizer.ggml.eom_token_id", nil)
        addsBOS = file.bool("tokenizer.ggml.add_bos_token") ?? defaults.addsBOS
        addsEOS = file.bool("tokenizer.ggml.add_eos_token") ?? defaults.addsEOS

        // End-of-generation tokens recognised by their text; they are made control tokens.
        let endOfTurnTexts: Set<String> = [
            "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
            "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
        ]
        var endOfGeneration: Set<Int32> = []
        for text in endOfTurnTexts {
            guard let id = table.id(of: Array(text.utf8)) else { continue }
            if explicitEOT == nil, text != "<|end_of_text|>", text != "<end_of_utterance>" {
                explicitEOT = id
            }
            endOfGeneration.insert(id)
            attributes[Int(id)].insert(.control)
        }
        // Control tokens whose text says "unused" are unused.
        for id in 0..<count where attributes[id].contains(.control) {
            if table.text(id).firstRange(of: Array("unused".utf8)) != nil {
                attributes[id].insert(.unused)
            }
        }
        for id in [eosID, explicitEOT, explicitEOM] {
            if let id { endOfGeneration.insert(id) }
        }
        endOfGenerationIDs = endOfGeneration

        var special: [Int32] = []
        for id in 0..<count where !attributes[id].isDisjoint(with: [.control, .userDefined, .unknown]) {
            special.append(Int32(id))
        }
        special.sort { a, b in
            let la = table.length(Int(a))
            let lb = table.length(Int(b))
            return la != lb ? la > lb : a < b
        }
        specialTokens = special

        self.table = table
        self.scores = scores
        self.attributes = attributes
    }

    func attributes(of id: Int32) -> TokenAttributes { attributes[Int(id)] }
}

/// A tokenizer whose special tokens and flags are its vocabulary's: the two algorithms share these.
protocol VocabularyTokenizer: Tokenizer {
    var vocabulary: Vocabulary { get }
}

extension VocabularyTokenizer {
    public var vocabularySize: Int { vocabulary.count }
    public var bosID: Int32? { vocabulary.bosID }
    public var eosID: Int32? { vocabulary.eosID }
    public var paddingID: Int32? { vocabulary.paddingID }
    public var unknownID: Int32? { vocabulary.unknownID }
    public var endOfGenerationIDs: Set<Int32> { vocabulary.endOfGenerationIDs }
    public var addsBOS: Bool { vocabulary.addsBOS }
    public var addsEOS: Bool { vocabulary.addsEOS }
}
