import GGUF
import LMCacheTestSupport
import Testing
import Tokenizers

/// Tokenizers built from small hand-written vocabularies, where the expected output follows
/// directly from the algorithm.
@Suite("Tokenizers on hand-built vocabularies")
struct HandBuiltVocabularyTests {
    /// A SentencePiece vocabulary: control tokens, byte tokens, then `pieces` with their scores.
    private func spm(
        _ pieces: [(String, Float)],
        addSpacePrefix: Bool = false,
        in dir: TemporaryDirectory
    ) throws
        -> any Tokenizer
    {
        var tokens = ["<unk>", "<s>", "</s>"]
        var scores: [Float] = [0, 0, 0]
        var types: [Int32] = [2, 3, 3]
        for byte in 0..<256 {
            let hex = String(byte, radix: 16, uppercase: true)
            tokens.append("<0x\(hex.count < 2 ? "0" + hex : hex)>")
            scores.append(0)
            types.append(6)
        }
        for (text, score) in pieces {
            tokens.append(text)
            scores.append(score)
            types.append(1)
        }
        var b = GGUFBuilder()
        b.add("tokenizer.ggml.model", string: "llama")
        b.add("tokenizer.ggml.tokens", strings: tokens)
        b.add("tokenizer.ggml.scores", float32s: scores)
        b.add("tokenizer.ggml.token_type", int32s: types)
        b.add("tokenizer.ggml.add_space_prefix", bool: addSpacePrefix)
        return try makeTokenizer(from: GGUFFile(contentsOf: dir.write(b.build().bytes)))
    }

    /// The id of a piece in the vocabulary built by `spm` (3 specials and 256 bytes come first).
    private func id(_ index: Int) -> Int32 { Int32(259 + index) }

    @Test("the highest-scoring pair merges first")
    func mergeOrder() throws {
        let dir = try TemporaryDirectory()
        let t = try spm([("a", -1), ("b", -1), ("c", -1), ("ab", -2), ("bc", -0.5), ("abc", -3)], in: dir)
        // "bc" beats "ab"; then "a"+"bc" forms "abc".
        #expect(t.encode("abc", addSpecial: false, parseSpecial: false) == [id(5)])
        // Without "abc" reachable through "ab": "ab" + "c" is not tried once "bc" has merged.
        #expect(t.encode("abcab", addSpecial: false, parseSpecial: false) == [id(5), id(3)])
        let withBOS: [Int32] = [1, id(5)]
        #expect(t.encode("abc", addSpecial: true, parseSpecial: false) == withBOS)
    }

    @Test("equal scores merge the leftmost pair first")
    func leftmostOnTies() throws {
        let dir = try TemporaryDirectory()
        let t = try spm([("a", -1), ("aa", -1)], in: dir)
        #expect(t.encode("aaa", addSpecial: false, parseSpecial: false) == [id(1), id(0)])
        #expect(t.encode("aaaa", addSpecial: false, parseSpecial: false) == [id(1), id(1)])
    }

    @Test("characters that are not tokens fall back to byte tokens")
    func byteFallback() throws {
        let dir = try TemporaryDirectory()
        let t = try spm([("a", -1)], in: dir)
        // "é" is C3 A9; byte token <0xNN> has id 3 + NN.
        let c3: Int32 = 3 + 0xC3
        let a9: Int32 = 3 + 0xA9
        let expected: [Int32] = [id(0), c3, a9]
        #expect(t.encode("aé", addSpecial: false, parseSpecial: false) == expected)
        #expect(t.decode(expected) == "aé")
        #expect(t.decode([c3]) == "\u{FFFD}")
    }

    @Test("spaces become ▁, and add_space_prefix puts one in front")
    func spaces() throws {
        let dir = try TemporaryDirectory()
        let t = try spm([("a", -1), ("▁", -1), ("▁a", -0.5)], in: dir)
        #expect(t.encode("a a", addSpecial: false, parseSpecial: false) == [id(0), id(2)])
        #expect(t.decode([id(0), id(2)]) == "a a")
        let prefixed = try spm([("a", -1), ("▁", -1), ("▁a", -0.5)], addSpacePrefix: true, in: dir)
        #expect(prefixed.encode("a", addSpecial: false, parseSpecial: false) == [id(2)])
    }

    @Test("control tokens are split out only with parseSpecial")
    func controlTokens() throws {
        let dir = try TemporaryDirectory()
        let t = try spm([("<", -1), ("s", -1), (">", -1), ("x", -1)], in: dir)
        let parsed: [Int32] = [id(3), 1, id(3)]
        let literal: [Int32] = [id(3), id(0), id(1), id(2), id(3)]
        #expect(t.encode("x<s>x", addSpecial: false, parseSpecial: true) == parsed)
        #expect(t.encode("x<s>x", addSpecial: false, parseSpecial: false) == literal)
        #expect(t.decode([1, id(3)]) == "x")
        #expect(t.decode([1, id(3)], renderSpecial: true) == "<s>x")
    }

    @Test("missing or malformed tokenizer metadata throws a typed error")
    func badMetadata() throws {
        let dir = try TemporaryDirectory()
        func code(_ build: (inout GGUFBuilder) -> Void) throws -> TokenizerError.Code? {
            var b = GGUFBuilder()
            build(&b)
            let file = try GGUFFile(contentsOf: dir.write(b.build().bytes))
            do {
                _ = try makeTokenizer(from: file)
                return nil
            } catch {
                #expect(!error.message.isEmpty)
                return error.code
            }
        }
        #expect(try code { _ in } == .missingKey)
        #expect(try code { $0.add("tokenizer.ggml.model", string: "bert") } == .unsupportedModel)
        #expect(try code { $0.add("tokenizer.ggml.model", string: "llama") } == .missingKey)
        #expect(
            try code {
                $0.add("tokenizer.ggml.model", string: "llama")
                $0.add("tokenizer.ggml.tokens", int32s: [1, 2])
            } == .invalidMetadata
        )
        #expect(
            try code {
                $0.add("tokenizer.ggml.model", string: "llama")
                $0.add("tokenizer.ggml.tokens", strings: ["a", "b"])
                $0.add("tokenizer.ggml.scores", float32s: [0])
            } == .invalidMetadata
        )
        #expect(
            try code {
                $0.add("tokenizer.ggml.model", string: "llama")
                $0.add("tokenizer.ggml.tokens", strings: ["a", "b"])
                $0.add("tokenizer.ggml.token_type", float32s: [1, 1])
            } == .invalidMetadata
        )
        #expect(
            try code {
                $0.add("tokenizer.ggml.model", string: "gpt2")
                $0.add("tokenizer.ggml.pre", string: "llama-bpe")
                $0.add("tokenizer.ggml.tokens", strings: ["a", "b"])
            } == .missingKey
        )
        #expect(
            try code {
                $0.add("tokenizer.ggml.model", string: "gpt2")
                $0.add("tokenizer.ggml.pre", string: "llama-bpe")
                $0.add("tokenizer.ggml.tokens", strings: ["a", "b", "ab"])
                $0.add("tokenizer.ggml.merges", strings: ["ab"])
            } == .invalidMetadata
        )
        #expect(
            try code {
                $0.add("tokenizer.ggml.model", string: "gpt2")
                $0.add("tokenizer.ggml.pre", string: "some-future-model")
                $0.add("tokenizer.ggml.tokens", strings: ["a"])
                $0.add("tokenizer.ggml.merges", strings: [])
            } == .unsupportedModel
        )
    }

    @Test("BPE merges by rank, and unknown bytes still encode")
    func bpeRanks() throws {
        let dir = try TemporaryDirectory()
        var b = GGUFBuilder()
        b.add("tokenizer.ggml.model", string: "gpt2")
        b.add("tokenizer.ggml.pre", string: "qwen2")
        // Byte-level alphabet for "a", "b", "c" only, plus merges; "ab" ranks before "bc".
        b.add("tokenizer.ggml.tokens", strings: ["a", "b", "c", "ab", "bc", "abc", "<|end|>"])
        b.add("tokenizer.ggml.token_type", int32s: [1, 1, 1, 1, 1, 1, 3])
        b.add("tokenizer.ggml.merges", strings: ["a b", "b c", "ab c"])
        b.add("tokenizer.ggml.eos_token_id", uint32: 6)
        b.add("tokenizer.ggml.bos_token_id", uint32: 6)
        let t = try makeTokenizer(from: GGUFFile(contentsOf: dir.write(b.build().bytes)))
        #expect(t.encode("abc", addSpecial: false, parseSpecial: false) == [5])
        #expect(t.encode("bcab", addSpecial: false, parseSpecial: false) == [4, 3])
        // "d" has no token at all: it is dropped, as in llama.cpp.
        #expect(t.encode("adb", addSpecial: false, parseSpecial: false) == [0, 1])
        #expect(t.encode("ab<|end|>", addSpecial: false, parseSpecial: true) == [3, 6])
        #expect(t.isEndOfGeneration(6))
        #expect(t.decode([5, 3]) == "abcab")
    }

    @Test("special token ids outside the vocabulary fall back to the defaults")
    func outOfRangeSpecialIDs() throws {
        let dir = try TemporaryDirectory()
        var b = GGUFBuilder()
        b.add("tokenizer.ggml.model", string: "llama")
        b.add("tokenizer.ggml.tokens", strings: ["<unk>", "<s>", "</s>", "a"])
        b.add("tokenizer.ggml.bos_token_id", uint32: 1_000_000)
        b.add("tokenizer.ggml.eos_token_id", uint32: 3)
        let t = try makeTokenizer(from: GGUFFile(contentsOf: dir.write(b.build().bytes)))
        #expect(t.bosID == 1)  // the SentencePiece default
        #expect(t.eosID == 3)
        #expect(t.vocabularySize == 4)
        #expect(t.decode([-5, 4, 1_000_000]).isEmpty)
    }

    @Test("without add_bos_token, Llama 3 vocabularies add BOS and Qwen2 ones do not (llama.cpp defaults)")
    func bpeDefaultBOS() throws {
        let dir = try TemporaryDirectory()
        for (pre, addsBOS) in [("llama-bpe", true), ("qwen2", false)] {
            var b = GGUFBuilder()
            b.add("tokenizer.ggml.model", string: "gpt2")
            b.add("tokenizer.ggml.pre", string: pre)
            b.add("tokenizer.ggml.tokens", strings: ["a", "b", "<s>"])
            b.add("tokenizer.ggml.token_type", int32s: [1, 1, 3])
            b.add("tokenizer.ggml.merges", strings: [])
            b.add("tokenizer.ggml.bos_token_id", uint32: 2)
            let t = try makeTokenizer(from: GGUFFile(contentsOf: dir.write(b.build().bytes, name: "\(pre).gguf")))
            #expect(t.addsBOS == addsBOS, "\(pre)")
            let expected: [Int32] = addsBOS ? [2, 0, 1] : [0, 1]
            #expect(t.encode("ab", addSpecial: true, parseSpecial: false) == expected, "\(pre)")
        }
    }
}
