import Foundation
import GGUF
import Testing
import Tokenizers

/// Seeded random strings tokenized by llama.cpp (scripts/reference/record_tokenizer_random.py).
@Suite("Tokenizers on random strings against llama.cpp")
struct RandomStringTests {
    private func check(_ tokenizer: any Tokenizer, reference name: String) throws {
        let cases = try TokenizerReference.load(name).cases
        #expect(cases.count >= 300)
        var mismatches = 0
        for reference in cases {
            let ids = tokenizer.encode(
                reference.text,
                addSpecial: reference.addSpecial,
                parseSpecial: reference.parseSpecial
            )
            if ids != reference.ids {
                mismatches += 1
                if mismatches <= 5 {
                    Issue.record("\(reference.testDescription): got \(ids), llama.cpp \(reference.ids)")
                }
            }
            let plain = tokenizer.encode(reference.text, addSpecial: false, parseSpecial: reference.parseSpecial)
            #expect(tokenizer.decode(plain, renderSpecial: true) == reference.text)
        }
        #expect(mismatches == 0)
    }

    @Test("Gemma 3")
    func gemma3() throws {
        try check(Gemma3.require(), reference: "gemma3-tokenizer-random")
    }

    @Test("byte-level BPE, Llama 3 pre-tokenizer")
    func llama3() throws {
        try check(TinyBPE.tokenizer("tiny-bpe-llama3"), reference: "tiny-bpe-llama3-tokenizer-random")
    }

    @Test("byte-level BPE, Qwen2 pre-tokenizer")
    func qwen2() throws {
        try check(TinyBPE.tokenizer("tiny-bpe-qwen2"), reference: "tiny-bpe-qwen2-tokenizer-random")
    }
}
