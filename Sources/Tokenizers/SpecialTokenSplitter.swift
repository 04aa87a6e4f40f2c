/// A piece of input text: either text for the model's algorithm, or a special token found in it.
enum Fragment: Equatable {
    case text(Range<Int>)
    case token(Int32)
}

/// Finds special tokens (control, user-defined, unknown) in text before the model's algorithm
/// runs, with llama.cpp's rule: tokens are taken in priority order (longest text first), and each
/// token claims all its non-overlapping occurrences, left to right, inside text that no earlier
/// token has claimed. Control and unknown tokens are only recognised when `parseSpecial` is on;
/// user-defined tokens (for Gemma: runs of newlines and tabs, some markup) always are.
struct SpecialTokenSplitter: Sendable {
    /// Trie edges: key `node << 8 | byte`, value the child node. Node 0 is the root.
    private let edges: [Int: Int32]
    /// For each trie node, the priority ranks of the tokens whose text ends there (ascending).
    private let terminals: [[Int32]]
    /// Whether some special token text starts with this byte.
    private let firstBytes: [Bool]
    /// Special token ids in priority order.
    private let tokens: [Int32]
    /// For each rank, whether the token needs `parseSpecial` (control and unknown tokens).
    private let needsParseSpecial: [Bool]
    private let lengths: [Int]

    init(vocabulary: Vocabulary) {
        var edges: [Int: Int32] = [:]
        var terminals: [[Int32]] = [[]]
        var firstBytes = [Bool](repeating: false, count: 256)
        var needsParseSpecial: [Bool] = []
        var lengths: [Int] = []
        for (rank, id) in vocabulary.specialTokens.enumerated() {
            let text = vocabulary.table.text(Int(id))
            var node = 0
            for byte in text {
                let key = node << 8 | Int(byte)
                if let child = edges[key] {
                    node = Int(child)
                } else {
                    terminals.append([])
                    let child = terminals.count - 1
                    edges[key] = Int32(child)
                    node = child
                }
            }
            if let first = text.first { firstBytes[Int(first)] = true }
            terminals[node].append(Int32(rank))
            needsParseSpecial.append(!vocabulary.attributes(of: id).isDisjoint(with: TokenAttributes.special))
            lengths.append(text.count)
        }
        self.edges = edges
        self.terminals = terminals
        self.firstBytes = firstBytes
        self.tokens = vocabulary.specialTokens
        self.needsParseSpecial = needsParseSpecial
        self.lengths = lengths
    }

    /// Splits `text` into fragments.
    /// - Complexity: O(*n* · *L*) where *L* is the longest special token text.
    func split(_ text: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        guard !text.isEmpty else { return [] }
        // Every occurrence of an eligible special token, as (rank, start).
        var occurrences: [(rank: Int32, start: Int)] = []
        // Safe: `start` and `position` stay below text.count (loop bounds).
        for start in 0..<text.count where unsafe firstBytes[Int(text[start])] {
            var node = 0
            var position = start
            while position < text.count, let child = unsafe edges[node << 8 | Int(text[position])] {
                node = Int(child)
                position += 1
                if let rank = terminals[node].first(where: { parseSpecial || !needsParseSpecial[Int($0)] }) {
                    occurrences.append((rank, start))
                }
            }
        }
        guard !occurrences.isEmpty else { return [.text(0..<text.count)] }
        occurrences.sort { $0.rank != $1.rank ? $0.rank < $1.rank : $0.start < $1.start }

        // Claim occurrences in priority order; a claim must not overlap an earlier one.
        var claimed = [Bool](repeating: false, count: text.count)
        var accepted: [(start: Int, rank: Int32)] = []
        for occurrence in occurrences {
            let range = occurrence.start..<(occurrence.start + lengths[Int(occurrence.rank)])
            if range.contains(where: { claimed[$0] }) { continue }
            for i in range { claimed[i] = true }
            accepted.append((occurrence.start, occurrence.rank))
        }
        accepted.sort { $0.start < $1.start }

        var fragments: [Fragment] = []
        fragments.reserveCapacity(accepted.count * 2 + 1)
        var cursor = 0
        for match in accepted {
            if match.start > cursor { fragments.append(.text(cursor..<match.start)) }
            fragments.append(.token(tokens[Int(match.rank)]))
            cursor = match.start + lengths[Int(match.rank)]
        }
        if cursor < text.count { fragments.append(.text(cursor..<text.count)) }
        return fragments
    }
}
