import Foundation
import Inference
import LMCacheTestSupport
import Testing

/// The default arithmetic is batch-invariant: a token's keys, values and logits do not depend on how
/// the prompt was cut into prefill pieces, which tokens were decoded one at a time, or which other
/// sequences shared a decode step. This is what lets the cache load a prefix ending at any token.
@Suite("Batch invariance")
struct BatchInvarianceTests {
    /// Runs `prompt` once whole and then `patterns` times in random pieces (random lengths; some pieces
    /// token by token through decode steps, some of those batched with an unrelated sequence), and
    /// requires every position's logits and the whole KV export to be bit-identical.
    func check(_ model: any LanguageModel, promptTokens: Int, patterns: Int, seed: UInt64) throws {
        let vocabulary = model.configuration.vocabularySize
        let prompt = BatchedDecodeTests.prompts(vocabulary: vocabulary, lengths: [promptTokens])[0]
        let workspace = Workspace()
        let whole = model.makeSequence()
        let reference = try model.forward(prompt, sequence: whole, outputs: .all, workspace: workspace)
        let referenceKV = try whole.exportKV(0..<whole.count)
        var random = Inference.SeededGenerator(seed: seed)
        for pattern in 0..<patterns {
            let pieces = model.makeSequence()
            let other = model.makeSequence()
            _ = try model.forward([2, 101, 102], sequence: other, outputs: .last, workspace: workspace)
            var logits: [Float] = []
            var start = 0
            var described: [String] = []
            while start < prompt.count {
                let length = min(prompt.count - start, 1 + Int.random(in: 0..<max(1, promptTokens / 3), using: &random))
                let end = start + length
                switch Int.random(in: 0..<3, using: &random) {
                case 0 where length <= 8:
                    // Token by token, each step batched with the unrelated sequence.
                    for t in prompt[start..<end] {
                        let both = try model.decode([t, 103], sequences: [pieces, other], workspace: workspace)
                        logits += both[0..<vocabulary]
                    }
                    described.append("\(length)d2")
                case 1 where length <= 8:
                    for t in prompt[start..<end] {
                        logits += try model.decode([t], sequences: [pieces], workspace: workspace)
                    }
                    described.append("\(length)d")
                default:
                    logits += try model.forward(
                        Array(prompt[start..<end]), sequence: pieces, outputs: .all, workspace: workspace)
                    described.append("\(length)")
                }
                start = end
            }
            let pattern = "pattern \(pattern): " + described.joined(separator: ",")
            #expect(pieces.tokens == prompt)
            let kv = try pieces.exportKV(0..<pieces.count)
            let sameKV = kv == referenceKV
            #expect(sameKV, "KV differs, \(pattern)")
            #expect(logits.count == reference.count)
            if logits != reference {
                let position = (0..<prompt.count).first {
                    logits[($0 * vocabulary)..<(($0 + 1) * vocabulary)] != reference[($0 * vocabulary)..<(($0 + 1) * vocabulary)]
                }
                Issue.record("logits differ first at position \(position ?? -1), \(pattern)")
            }
        }
    }

    @Test("real model: prefill in random pieces, decode steps alone or batched: same KV bytes and logits")
    func realModel() throws {
        // 600 tokens: past the 512-token sliding window and across 256-token pages.
        try check(TestModel.model(), promptTokens: 600, patterns: 3, seed: 21)
    }

    @Test("tiny Llama and Qwen2 files: same KV bytes and logits however the prompt is cut",
          arguments: ["tiny-llama.gguf", "tiny-qwen2.gguf"])
    func tinyModels(file: String) throws {
        let model = try loadTestModel(resourcesDirectory.appendingPathComponent(file).path)
        try check(model, promptTokens: 90, patterns: 6, seed: 22)
    }
}
