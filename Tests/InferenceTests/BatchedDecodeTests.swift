import Foundation
import Inference
import LMCacheTestSupport
import Testing

@Suite("Batched decode")
struct BatchedDecodeTests {
    /// Prompts of different lengths (so the sequences sit at different positions, some past the
    /// 512-token sliding window) of pseudo-random token ids.
    static func prompts(vocabulary: Int, lengths: [Int]) -> [[Int32]] {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        return lengths.map { length in
            (0..<length).map { i in
                if i == 0 { return 2 }
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Int32(100 + (state >> 33) % UInt64(min(vocabulary - 100, 20_000)))
            }
        }
    }

    /// Decodes `steps` greedy tokens for every prompt, one batch step for all sequences at a time, and
    /// the same sequence by sequence; the logits must agree bit for bit at every step.
    func compare(_ model: any LanguageModel, lengths: [Int], steps: Int) throws {
        let prompts = Self.prompts(vocabulary: model.configuration.vocabularySize, lengths: lengths)
        let vocabulary = model.configuration.vocabularySize
        let workspace = Workspace()
        var batched: [SequenceKV] = []
        var alone: [SequenceKV] = []
        var next: [Int32] = []
        for prompt in prompts {
            let a = model.makeSequence()
            let b = model.makeSequence()
            let logits = try model.forward(prompt, sequence: a, outputs: .last, workspace: workspace)
            try b.importKV(a.exportKV(0..<a.count), tokens: a.tokens, at: 0)
            batched.append(a)
            alone.append(b)
            next.append(Sampler.argmax(logits))
        }
        for step in 0..<steps {
            let together = try model.decode(next, sequences: batched, workspace: workspace)
            #expect(together.count == prompts.count * vocabulary)
            for i in prompts.indices {
                let single = try model.forward([next[i]], sequence: alone[i], outputs: .last, workspace: workspace)
                let row = Array(together[(i * vocabulary)..<((i + 1) * vocabulary)])
                #expect(row == single, "sequence \(i) (prompt of \(lengths[i])) differs at step \(step)")
                next[i] = Sampler.argmax(single)
            }
        }
        for (a, b) in zip(batched, alone) { #expect(a.tokens == b.tokens) }
    }

    @Test("real model: batched logits equal one-sequence logits bit for bit")
    func realModel() throws {
        try compare(TestModel.model(), lengths: [1, 37, 300, 560], steps: 3)
    }

    @Test(
        "tiny Llama and Qwen2 files: batched logits equal one-sequence logits",
        arguments: ["tiny-llama.gguf", "tiny-qwen2.gguf"]
    )
    func tinyModels(file: String) throws {
        let model = try loadTestModel(resourcesDirectory.appendingPathComponent(file).path)
        try compare(model, lengths: [3, 20, 64], steps: 5)
    }

    @Test("prompt pieces of several sequences and decode tokens in one pass equal each computed alone")
    func mixedPass() throws {
        let model = try TestModel.model()
        let vocabulary = model.configuration.vocabularySize
        let prompts = Self.prompts(vocabulary: vocabulary, lengths: [700, 300, 40, 90])
        let workspace = Workspace()
        // Sequences 0 and 1 are decoding, 2 starts its prompt, 3 continues its prompt without logits.
        var together: [SequenceKV] = []
        var alone: [SequenceKV] = []
        let starts = [700, 300, 0, 50]
        for (prompt, start) in zip(prompts, starts) {
            let a = model.makeSequence()
            let b = model.makeSequence()
            if start > 0 {
                _ = try model.forward(Array(prompt[..<start]), sequence: a, outputs: .none, workspace: workspace)
                try b.importKV(a.exportKV(0..<a.count), tokens: a.tokens, at: 0)
            }
            together.append(a)
            alone.append(b)
        }
        let pieces = [
            ForwardPiece(tokens: [9_001], sequence: together[0]),
            ForwardPiece(tokens: Array(prompts[2]), sequence: together[2]),
            ForwardPiece(tokens: [9_002], sequence: together[1]),
            ForwardPiece(tokens: Array(prompts[3][50..<80]), sequence: together[3], wantsLogits: false),
        ]
        let logits = try model.forward(pieces, workspace: workspace)
        #expect(logits.count == 3 * vocabulary)
        var expected: [Float] = []
        expected += try model.forward([9_001], sequence: alone[0], outputs: .last, workspace: workspace)
        expected += try model.forward(Array(prompts[2]), sequence: alone[2], outputs: .last, workspace: workspace)
        expected += try model.forward([9_002], sequence: alone[1], outputs: .last, workspace: workspace)
        _ = try model.forward(Array(prompts[3][50..<80]), sequence: alone[3], outputs: .none, workspace: workspace)
        #expect(logits == expected)
        for (a, b) in zip(together, alone) {
            #expect(a.tokens == b.tokens)
            #expect(try a.exportKV(0..<a.count) == b.exportKV(0..<b.count))
        }
    }

    @Test("a batch of two entries for one sequence is refused")
    func duplicateSequence() throws {
        let model = try TestModel.model()
        let kv = model.makeSequence()
        let workspace = Workspace()
        _ = try model.forward([2, 818], sequence: kv, outputs: .last, workspace: workspace)
        #expect(throws: InferenceError.self) {
            _ = try model.decode([5, 6], sequences: [kv, kv], workspace: workspace)
        }
        #expect(throws: InferenceError.self) {
            _ = try model.decode([5], sequences: [kv, model.makeSequence()], workspace: workspace)
        }
        // A pass checks every piece before computing any: a bad one leaves the others untouched.
        let other = model.makeSequence()
        #expect(throws: InferenceError.self) {
            _ = try model.forward(
                [ForwardPiece(tokens: [2, 818], sequence: other), ForwardPiece(tokens: [-1], sequence: kv)],
                workspace: workspace)
        }
        #expect(kv.count == 2 && other.count == 0)
    }
}
