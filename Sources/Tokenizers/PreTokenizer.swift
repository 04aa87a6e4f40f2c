/// The pre-tokenizers of byte-level BPE vocabularies: they split text into words before merging.
///
/// Both implement, by hand, the regular expression of their model family (as llama.cpp does):
/// - `llama3` (`tokenizer.ggml.pre` = `llama-bpe` and relatives):
///   `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
/// - `qwen2`: the same with `\p{N}` (single digits) instead of `\p{N}{1,3}`.
enum PreTokenizer: Sendable, Hashable {
    case llama3
    case qwen2

    /// Character classes of the expression, from the Unicode general category and White_Space.
    private struct Flags {
        var isLetter = false
        var isNumber = false
        var isWhitespace = false
        /// Any code point inside the text (out-of-range positions have no flags at all).
        var isDefined = false

        init() {}

        init(_ scalar: Unicode.Scalar) {
            isDefined = true
            isWhitespace = scalar.properties.isWhitespace
            switch scalar.properties.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
                isLetter = true
            case .decimalNumber, .letterNumber, .otherNumber:
                isNumber = true
            default:
                break
            }
        }
    }

    /// Splits `text` into words; returns the ranges of the words in `scalars`.
    func split(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
        let maxDigits = self == .llama3 ? 3 : 1
        let end = scalars.count
        let flags = scalars.map(Flags.init)
        func flagsAt(_ i: Int) -> Flags { i < end ? flags[i] : Flags() }
        func scalarAt(_ i: Int) -> UInt32? { i < end ? scalars[i].value : nil }
        func isCRLF(_ v: UInt32?) -> Bool { v == 0x0D || v == 0x0A }
        func lower(_ v: UInt32?) -> UInt32? {
            guard let v else { return nil }
            return (0x41...0x5A).contains(v) ? v + 0x20 : v
        }

        var words: [Range<Int>] = []
        words.reserveCapacity(end / 3 + 1)
        var wordStart = 0
        func emit(_ stop: Int) {
            if stop > wordStart { words.append(wordStart..<stop) }
            wordStart = stop
        }

        var pos = 0
        while pos < end {
            let cpt = scalars[pos].value
            let f = flags[pos]

            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if cpt == 0x27, pos + 1 < end {
                let next = lower(scalarAt(pos + 1))
                if next == 0x73 || next == 0x74 || next == 0x6D || next == 0x64 {  // s t m d
                    emit(pos + 2)
                    pos += 2
                    continue
                }
                if pos + 2 < end {
                    let nextNext = lower(scalarAt(pos + 2))
                    if (next == 0x72 && nextNext == 0x65) || (next == 0x76 && nextNext == 0x65)
                        || (next == 0x6C && nextNext == 0x6C)
                    {  // re ve ll
                        emit(pos + 3)
                        pos += 3
                        continue
                    }
                }
            }

            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(isCRLF(cpt) || f.isNumber), f.isLetter || flagsAt(pos + 1).isLetter {
                pos += 1
                while flagsAt(pos).isLetter { pos += 1 }
                emit(pos)
                continue
            }

            // \p{N}{1,maxDigits}
            if f.isNumber {
                var groupStart = pos
                while flagsAt(pos).isNumber {
                    pos += 1
                    if pos - groupStart >= maxDigits {
                        emit(pos)
                        groupStart = pos
                    }
                }
                emit(pos)
                continue
            }

            // <space>?[^\s\p{L}\p{N}]+[\r\n]*
            var f2 = cpt == 0x20 ? flagsAt(pos + 1) : f
            if !(f2.isWhitespace || f2.isLetter || f2.isNumber), f.isDefined {
                if cpt == 0x20 { pos += 1 }
                while !(f2.isWhitespace || f2.isLetter || f2.isNumber), f2.isDefined {
                    pos += 1
                    f2 = flagsAt(pos)
                }
                while isCRLF(scalarAt(pos)) { pos += 1 }
                emit(pos)
                continue
            }

            var whitespaceCount = 0
            var lastLineBreakEnd = 0
            while flagsAt(pos + whitespaceCount).isWhitespace {
                if isCRLF(scalarAt(pos + whitespaceCount)) { lastLineBreakEnd = pos + whitespaceCount + 1 }
                whitespaceCount += 1
            }
            // \s*[\r\n]+
            if lastLineBreakEnd > 0 {
                pos = lastLineBreakEnd
                emit(pos)
                continue
            }
            // \s+(?!\S)
            if whitespaceCount > 1, pos + whitespaceCount < end {
                pos += whitespaceCount - 1
                emit(pos)
                continue
            }
            // \s+
            if whitespaceCount > 0 {
                pos += whitespaceCount
                emit(pos)
                continue
            }
            // No alternative matched: the character is a word of its own.
            pos += 1
            emit(pos)
        }
        return words
    }
}
