public import GGUF

/// The byte-level BPE tokenizer of GGUF files whose `tokenizer.ggml.model` is `gpt2`
/// (Llama 3, Qwen2 and relatives), matching llama.cpp's implementation.
///
/// Text between special tokens is split into words by the pre-tokenizer that
/// `tokenizer.ggml.pre` names (see ``PreTokenizer``); each word's bytes are written with GPT-2's
/// byte-to-unicode alphabet and merged pair by pair in the order of `tokenizer.ggml.merges`
/// (lowest rank first, leftmost on ties). For Llama 3 a word that is already a token is not merged.
public struct BytePairTokenizer: VocabularyTokenizer {
    let vocabulary: Vocabulary
    private let splitter: SpecialTokenSplitter
    private let preTokenizer: PreTokenizer
    private let ignoreMerges: Bool
    /// Every text that merging can produce or consume: token texts, merge parts and results.
    private let pieces: TokenTable
    /// For each piece, the token with the same text, or -1.
    private let pieceToken: [Int32]
    /// Merge rank by `left piece << 32 | right piece`.
    private let ranks: [UInt64: Int32]
    /// The piece that each merge produces, by rank.
    private let mergeResult: [Int32]
    /// The piece of each byte's GPT-2 character, or -1.
    private let bytePiece: [Int32]
    /// The GPT-2 characters of the 256 byte values, as UTF-8.
    private let byteCharacters: [[UInt8]]
    /// The byte each GPT-2 character stands for, by code point (0 ..< 324).
    private let characterByte: [Int16]

    /// Reads the tokenizer from a GGUF file's metadata.
    /// - Throws: ``TokenizerError`` when the `tokenizer.ggml.*` keys are missing or malformed, or
    ///   `tokenizer.ggml.pre` names a pre-tokenizer that is not implemented.
    public init(file: GGUFFile) throws(TokenizerError) {
        // The pre-tokenizer, and whether BOS is added when the file does not say (llama.cpp's lists).
        let pre = file.string("tokenizer.ggml.pre") ?? "default"
        let defaultAddsBOS: Bool
        switch pre {
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
            preTokenizer = .llama3
            ignoreMerges = true
            defaultAddsBOS = true
        case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan":
            preTokenizer = .qwen2
            ignoreMerges = false
            defaultAddsBOS = false
        default:
            throw TokenizerError(
                .unsupportedModel,
                "pre-tokenizer '\(pre)' ('tokenizer.ggml.pre') is not supported (llama-bpe, qwen2 and relatives are)"
            )
        }
        let vocabulary = try Vocabulary(
            file: file,
            defaults: .init(bos: 11, eos: 11, unknown: nil, padding: nil, addsBOS: defaultAddsBOS, addsEOS: false)
        )
        self.vocabulary = vocabulary
        splitter = SpecialTokenSplitter(vocabulary: vocabulary)

        guard let mergeArray = file.array("tokenizer.ggml.merges") else {
            throw TokenizerError(.missingKey, "'tokenizer.ggml.merges' is missing")
        }
        guard let merges = mergeArray.stringValues else {
            throw TokenizerError(.invalidMetadata, "'tokenizer.ggml.merges' must be an array of strings")
        }

        // GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the rest map to 256+.
        var byteCharacters: [[UInt8]] = []
        var characterByte = [Int16](repeating: -1, count: 324)
        var shifted: UInt32 = 256
        for byte in 0..<256 {
            let printable = (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
            let code: UInt32
            if printable {
                code = UInt32(byte)
            } else {
                code = shifted
                shifted += 1
            }
            // Safe: every code here is below 0x144, a valid scalar.
            let scalar = Unicode.Scalar(code) ?? "?"
            byteCharacters.append(Array(String(Character(scalar)).utf8))
            characterByte[Int(code)] = Int16(byte)
        }
        self.byteCharacters = byteCharacters
        self.characterByte = characterByte

        // Intern every text merging can meet.
        var texts: [[UInt8]] = (0..<vocabulary.count).map { Array(vocabulary.table.text($0)) }
        var parsed: [(left: [UInt8], right: [UInt8])] = []
        parsed.reserveCapacity(merges.count)
        for (index, merge) in merges.enumerated() {
            let bytes = Array(merge.utf8)
            // The separator is the first space after the first byte (a part may itself start with one).
            guard bytes.count >= 3, let space = bytes.dropFirst().firstIndex(of: 0x20) else {
                throw TokenizerError(
                    .invalidMetadata,
                    "merge \(index) ('\(merge)') is not two pieces separated by a space"
                )
            }
            let left = Array(bytes[..<space])
            let right = Array(bytes[(space + 1)...])
            parsed.append((left, right))
            texts.append(left)
            texts.append(right)
            texts.append(left + right)
        }
        for character in byteCharacters { texts.append(character) }
        // Keep the first id of each text: dedupe, so the table maps each text to one piece.
        var seen = Set<[UInt8]>()
        var unique: [[UInt8]] = []
        unique.reserveCapacity(texts.count)
        for text in texts where seen.insert(text).inserted { unique.append(text) }
        let pieces = TokenTable(texts: unique)
        self.pieces = pieces

        var pieceToken = [Int32](repeating: -1, count: unique.count)
        for (index, text) in unique.enumerated() {
            if let id = vocabulary.table.id(of: text) { pieceToken[index] = id }
        }
        self.pieceToken = pieceToken

        var ranks: [UInt64: Int32] = [:]
        ranks.reserveCapacity(parsed.count)
        var mergeResult: [Int32] = []
        mergeResult.reserveCapacity(parsed.count)
        for (rank, merge) in parsed.enumerated() {
            // Safe to unwrap-or-skip: every part and result was interned above.
            guard let left = pieces.id(of: merge.left), let right = pieces.id(of: merge.right),
                let result = pieces.id(of: merge.left + merge.right)
            else { continue }
            let key = UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))
            if ranks[key] == nil { ranks[key] = Int32(rank) }  // the first (best) rank wins
            mergeResult.append(result)
            if mergeResult.count != rank + 1 {
                throw TokenizerError(.invalidMetadata, "merge \(rank) could not be indexed")
            }
        }
        self.ranks = ranks
        self.mergeResult = mergeResult
        bytePiece = byteCharacters.map { pieces.id(of: $0) ?? -1 }
    }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var output: [Int32] = []
        if addSpecial, addsBOS, let bos = bosID { output.append(bos) }
        let utf8 = Array(text.utf8)
        unsafe utf8.withUnsafeBufferPointer { input in
            output.reserveCapacity(output.count + input.count / 3 + 2)
            for fragment in unsafe splitter.split(input, parseSpecial: parseSpecial) {
                switch fragment {
                case .token(let id):
                    output.append(id)
                case .text(let range):
                    // Safe: the splitter's ranges lie inside `input`, which lives for the closure.
                    unsafe encodeText(UnsafeBufferPointer(rebasing: input[range]), into: &output)
                }
            }
        }
        if addSpecial, addsEOS, let eos = eosID { output.append(eos) }
        return output
    }

    private func encodeText(_ bytes: UnsafeBufferPointer<UInt8>, into output: inout [Int32]) {
        // Valid UTF-8 (the fragment came from a String and was cut at token boundaries).
        let scalars = unsafe Array(String(decoding: bytes, as: UTF8.self).unicodeScalars)
        var encoded: [UInt8] = []
        var symbolPiece: [Int32] = []
        var symbolStart: [Int] = []
        var symbolLength: [Int] = []
        var next: [Int] = []
        var previous: [Int] = []
        var queue: [(rank: Int32, left: Int, right: Int, leftPiece: Int32, rightPiece: Int32)] = []

        for word in preTokenizer.split(scalars) {
            // The word's bytes in GPT-2's alphabet; one symbol per original byte.
            encoded.removeAll(keepingCapacity: true)
            symbolPiece.removeAll(keepingCapacity: true)
            symbolStart.removeAll(keepingCapacity: true)
            symbolLength.removeAll(keepingCapacity: true)
            for scalar in scalars[word] {
                for byte in String(Character(scalar)).utf8 {
                    symbolStart.append(encoded.count)
                    symbolLength.append(byteCharacters[Int(byte)].count)
                    symbolPiece.append(bytePiece[Int(byte)])
                    encoded.append(contentsOf: byteCharacters[Int(byte)])
                }
            }
            if ignoreMerges, let id = vocabulary.table.id(of: encoded) {
                output.append(id)
                continue
            }
            let count = symbolPiece.count
            next = (0..<count).map { $0 + 1 < count ? $0 + 1 : -1 }
            previous = (0..<count).map { $0 - 1 }
            queue.removeAll(keepingCapacity: true)

            func addPair(_ left: Int, _ right: Int) {
                guard left >= 0, right >= 0 else { return }
                let a = symbolPiece[left]
                let b = symbolPiece[right]
                guard a >= 0, b >= 0, let rank = ranks[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] else { return }
                queue.append((rank, left, right, a, b))
                // Sift up: lower rank first, then the leftmost pair.
                var child = queue.count - 1
                while child > 0 {
                    let parent = (child - 1) / 2
                    let c = queue[child]
                    let p = queue[parent]
                    guard c.rank < p.rank || (c.rank == p.rank && c.left < p.left) else { break }
                    queue.swapAt(child, parent)
                    child = parent
                }
            }
            func popPair() -> (rank: Int32, left: Int, right: Int, leftPiece: Int32, rightPiece: Int32)? {
                guard let top = queue.first else { return nil }
                let last = queue.removeLast()
                if !queue.isEmpty {
                    queue[0] = last
                    var parent = 0
                    while true {
                        let l = 2 * parent + 1
                        guard l < queue.count else { break }
                        var best = l
                        let r = l + 1
                        if r < queue.count,
                            queue[r].rank < queue[l].rank
                                || (queue[r].rank == queue[l].rank && queue[r].left < queue[l].left)
                        {
                            best = r
                        }
                        let b = queue[best]
                        let p = queue[parent]
                        guard b.rank < p.rank || (b.rank == p.rank && b.left < p.left) else { break }
                        queue.swapAt(best, parent)
                        parent = best
                    }
                }
                return top
            }

            for i in 1..<max(count, 1) { addPair(i - 1, i) }
            while let pair = popPair() {
                // Skip pairs that an earlier merge has changed.
                guard symbolLength[pair.left] > 0, symbolLength[pair.right] > 0,
                    symbolPiece[pair.left] == pair.leftPiece, symbolPiece[pair.right] == pair.rightPiece
                else { continue }
                symbolLength[pair.left] += symbolLength[pair.right]
                symbolLength[pair.right] = 0
                symbolPiece[pair.left] = mergeResult[Int(pair.rank)]
                next[pair.left] = next[pair.right]
                if next[pair.right] >= 0 { previous[next[pair.right]] = pair.left }
                addPair(previous[pair.left], pair.left)
                addPair(pair.left, next[pair.left])
            }

            var i = count > 0 ? 0 : -1
            while i >= 0 {
                let piece = symbolPiece[i]
                if piece >= 0, pieceToken[Int(piece)] >= 0 {
                    output.append(pieceToken[Int(piece)])
                } else {
                    // Not a token: each byte of the encoded text on its own, where that is a token.
                    for byte in encoded[symbolStart[i]..<(symbolStart[i] + symbolLength[i])] {
                        if let id = vocabulary.table.id(of: [byte]) { output.append(id) }
                    }
                }
                i = next[i]
            }
        }
    }

    public func appendPieceBytes(of id: Int32, renderSpecial: Bool, to output: inout [UInt8]) {
        guard id >= 0, Int(id) < vocabulary.count else { return }
        let attributes = vocabulary.attributes(of: id)
        let text = vocabulary.table.text(Int(id))
        if !attributes.isDisjoint(with: TokenAttributes.special) {
            if renderSpecial { output.append(contentsOf: text) }
        } else if attributes.contains(.userDefined) {
            output.append(contentsOf: text)
        } else if attributes.contains(.normal) {
            // Map each GPT-2 character back to its byte.
            for scalar in String(decoding: text, as: UTF8.self).unicodeScalars {
                let code = Int(scalar.value)
                if code < characterByte.count, characterByte[code] >= 0 {
                    output.append(UInt8(characterByte[code]))
                } else {
                    output.append(contentsOf: Array("[UNK_BYTE_0x".utf8))
                    for byte in String(Character(scalar)).utf8 {
                        let hex = String(byte, radix: 16)
                        output.append(contentsOf: Array((hex.count < 2 ? "0" + hex : hex).utf8))
                    }
                    output.append(contentsOf: text)
                    output.append(UInt8(ascii: "]"))
                }
            }
        } else if attributes.contains(.byte) {
            if let byte = SentencePieceTokenizer.byteValue(text) { output.append(byte) }
        }
    }
}
