public import GGUF

/// The SentencePiece-style tokenizer of GGUF files whose `tokenizer.ggml.model` is `llama`
/// (Llama 1/2, Gemma, Mistral v1 …), matching llama.cpp's implementation.
///
/// Spaces are written as `▁` (U+2581). Text between special tokens is first split into UTF-8
/// characters, then adjacent pieces are merged greedily: of all adjacent pairs whose
/// concatenation is a vocabulary token, the one with the highest score (leftmost on ties) merges
/// first, until no pair is a token. Characters that are not tokens become byte tokens
/// (`<0xXX>`). A space is put in front of the text only when `tokenizer.ggml.add_space_prefix`
/// says so (Gemma's files say no).
public struct SentencePieceTokenizer: VocabularyTokenizer {
    let vocabulary: Vocabulary
    private let splitter: SpecialTokenSplitter
    /// The token for each byte value, for characters that are not tokens.
    private let byteTokens: [Int32]
    private let addSpacePrefix: Bool

    /// Reads the tokenizer from a GGUF file's metadata.
    /// - Throws: ``TokenizerError`` when the `tokenizer.ggml.*` keys are missing or malformed.
    public init(file: GGUFFile) throws(TokenizerError) {
        let vocabulary = try Vocabulary(
            file: file,
            defaults: .init(bos: 1, eos: 2, unknown: 0, padding: nil, addsBOS: true, addsEOS: false)
        )
        self.vocabulary = vocabulary
        splitter = SpecialTokenSplitter(vocabulary: vocabulary)
        addSpacePrefix = file.bool("tokenizer.ggml.add_space_prefix") ?? true
        let hex = Array("0123456789ABCDEF".utf8)
        var byteTokens = [Int32](repeating: vocabulary.unknownID ?? 0, count: 256)
        for byte in 0..<256 {
            let name: [UInt8] = Array("<0x".utf8) + [hex[byte >> 4], hex[byte & 15], UInt8(ascii: ">")]
            if let id = vocabulary.table.id(of: name) {
                byteTokens[byte] = id
            } else if byte < 0x80, let id = vocabulary.table.id(of: [UInt8(byte)]) {
                byteTokens[byte] = id
            }
        }
        self.byteTokens = byteTokens
    }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var output: [Int32] = []
        if addSpecial, addsBOS, let bos = bosID { output.append(bos) }
        let utf8 = Array(text.utf8)
        unsafe utf8.withUnsafeBufferPointer { input in
            output.reserveCapacity(output.count + input.count / 3 + 2)
            var previousIsSpecial = true
            var session = MergeSession()
            for fragment in unsafe splitter.split(input, parseSpecial: parseSpecial) {
                switch fragment {
                case .token(let id):
                    output.append(id)
                    previousIsSpecial = true
                case .text(let range):
                    // Safe: the splitter's ranges lie inside `input`, which lives for the closure.
                    unsafe session.encode(
                        UnsafeBufferPointer(rebasing: input[range]),
                        spacePrefix: addSpacePrefix && previousIsSpecial,
                        tokenizer: self,
                        into: &output
                    )
                    previousIsSpecial = false
                }
            }
        }
        if addSpecial, addsEOS, let eos = eosID { output.append(eos) }
        return output
    }

    public func appendPieceBytes(of id: Int32, renderSpecial: Bool, to output: inout [UInt8]) {
        guard id >= 0, Int(id) < vocabulary.count else { return }
        let attributes = vocabulary.attributes(of: id)
        if !attributes.isDisjoint(with: TokenAttributes.special) {
            if renderSpecial { output.append(contentsOf: vocabulary.table.text(Int(id))) }
        } else if attributes.contains(.userDefined) {
            output.append(contentsOf: vocabulary.table.text(Int(id)))
        } else if attributes.contains(.normal) {
            // Unescape "▁" (E2 96 81) to a space.
            let text = vocabulary.table.text(Int(id))
            var i = text.startIndex
            while i < text.endIndex {
                if text[i] == 0xE2, i + 2 < text.endIndex, text[i + 1] == 0x96, text[i + 2] == 0x81 {
                    output.append(0x20)
                    i += 3
                } else {
                    output.append(text[i])
                    i += 1
                }
            }
        } else if attributes.contains(.byte) {
            if let byte = Self.byteValue(vocabulary.table.text(Int(id))) { output.append(byte) }
        }
        // Unused and undefined tokens render as nothing, as in llama.cpp.
    }

    /// The value of a byte token's text `<0xXX>`.
    static func byteValue(_ text: ArraySlice<UInt8>) -> UInt8? {
        guard text.count == 6 else { return nil }
        let digits = text.dropFirst(3).prefix(2)
        guard let value = UInt8(String(decoding: digits, as: UTF8.self), radix: 16) else { return nil }
        return value
    }

    /// Reusable scratch space for the merge loop.
    private struct MergeSession {
        var text: [UInt8] = []
        var symbolStart: [Int32] = []
        var symbolLength: [Int32] = []
        var previous: [Int32] = []
        var next: [Int32] = []
        var queue = BigramQueue()

        mutating func encode(
            _ fragment: UnsafeBufferPointer<UInt8>,
            spacePrefix: Bool,
            tokenizer: SentencePieceTokenizer,
            into output: inout [Int32]
        ) {
            // Escape spaces as "▁".
            text.removeAll(keepingCapacity: true)
            text.reserveCapacity(fragment.count + fragment.count / 2 + 3)
            if spacePrefix { text.append(contentsOf: [0xE2, 0x96, 0x81]) }
            for index in 0..<fragment.count {
                let byte = unsafe fragment[index]  // Safe: index < fragment.count.
                if byte == 0x20 {
                    text.append(contentsOf: [0xE2, 0x96, 0x81])
                } else {
                    text.append(byte)
                }
            }
            guard !text.isEmpty else { return }

            // One symbol per UTF-8 character.
            symbolStart.removeAll(keepingCapacity: true)
            symbolLength.removeAll(keepingCapacity: true)
            var offset = 0
            while offset < text.count {
                let length = min(Self.utf8Length(text[offset]), text.count - offset)
                symbolStart.append(Int32(offset))
                symbolLength.append(Int32(length))
                offset += length
            }
            let count = symbolStart.count
            previous = (0..<count).map { Int32($0) - 1 }
            next = (0..<count).map { $0 + 1 < count ? Int32($0 + 1) : -1 }
            queue.removeAll()

            let table = tokenizer.vocabulary.table
            let scores = tokenizer.vocabulary.scores
            unsafe text.withUnsafeBufferPointer { bytes in
                func tryAdd(_ left: Int32, _ right: Int32) {
                    guard left >= 0, right >= 0 else { return }
                    let start = Int(symbolStart[Int(left)])
                    let size = Int(symbolLength[Int(left)] + symbolLength[Int(right)])
                    // Safe: the two symbols are adjacent pieces of `text`, so start + size <= bytes.count.
                    guard size <= table.maxLength,
                        let id = unsafe table.id(of: UnsafeBufferPointer(rebasing: bytes[start..<(start + size)]))
                    else { return }
                    queue.push(Bigram(score: scores[Int(id)], left: left, right: right, size: Int32(size)))
                }

                for i in 1..<max(count, 1) { tryAdd(Int32(i - 1), Int32(i)) }

                while let bigram = queue.pop() {
                    let left = Int(bigram.left)
                    let right = Int(bigram.right)
                    // Skip pairs that an earlier merge has changed.
                    guard symbolLength[left] != 0, symbolLength[right] != 0,
                        symbolLength[left] + symbolLength[right] == bigram.size
                    else { continue }
                    symbolLength[left] += symbolLength[right]
                    symbolLength[right] = 0
                    next[left] = next[right]
                    if next[right] >= 0 { previous[Int(next[right])] = Int32(left) }
                    tryAdd(previous[left], Int32(left))
                    tryAdd(Int32(left), next[left])
                }

                // Emit: each remaining symbol is a token, or falls back to byte tokens.
                var i: Int32 = 0
                while i >= 0 {
                    let start = Int(symbolStart[Int(i)])
                    let length = Int(symbolLength[Int(i)])
                    // Safe: the live symbols partition `text`; this one lies inside it.
                    if let id = unsafe table.id(of: UnsafeBufferPointer(rebasing: bytes[start..<(start + length)])) {
                        output.append(id)
                    } else {
                        for index in start..<(start + length) {
                            output.append(tokenizer.byteTokens[Int(unsafe bytes[index])])
                        }
                    }
                    i = next[Int(i)]
                }
            }
        }

        /// The length of the UTF-8 sequence that starts with `lead` (1 for stray bytes).
        static func utf8Length(_ lead: UInt8) -> Int {
            switch lead >> 4 {
            case 0xF: 4
            case 0xE: 3
            case 0xC, 0xD: 2
            default: 1
            }
        }
    }
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    var score: Float
    var left: Int32
    var right: Int32
    var size: Int32

    /// Whether `self` merges before `other`: higher score first, then the leftmost pair.
    @inline(__always)
    func precedes(_ other: Bigram) -> Bool {
        score > other.score || (score == other.score && left < other.left)
    }
}

/// A binary max-heap of bigrams ordered by ``Bigram/precedes(_:)``.
struct BigramQueue {
    private var heap: [Bigram] = []

    mutating func removeAll() { heap.removeAll(keepingCapacity: true) }

    mutating func push(_ element: Bigram) {
        heap.append(element)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].precedes(heap[parent]) else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Bigram? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var parent = 0
            let count = heap.count
            while true {
                let left = 2 * parent + 1
                guard left < count else { break }
                let right = left + 1
                var best = left
                if right < count, heap[right].precedes(heap[left]) { best = right }
                guard heap[best].precedes(heap[parent]) else { break }
                heap.swapAt(best, parent)
                parent = best
            }
        }
        return top
    }
}
