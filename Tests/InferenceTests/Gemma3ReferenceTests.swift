import Foundation
import GGUF
import Inference
import LMCacheTestSupport
import Testing

@Suite("Gemma 3 against llama.cpp")
struct Gemma3ReferenceTests {
    /// Logits of llama.cpp's top-5 must be within this of ours (llama.cpp quantizes activations to 8 bits
    /// and keeps K/V in f16; so do not expect more than two decimals).
    static let logitTolerance = 1.25

    @Test("the reference data is present")
    func referencePresent() {
        #expect(GreedyReference.all.count >= 3)
    }

    @Test("teacher-forced on llama.cpp's greedy tokens: same argmax, top-5 logits close", arguments: GreedyReference.all)
    func greedy(reference: GreedyReference) throws {
        let model = try TestModel.model()
        let vocab = model.configuration.vocabularySize
        let kv = model.makeSequence()
        let workspace = Workspace()
        var logits = try model.forward(reference.prompt_ids, sequence: kv, outputs: .last, workspace: workspace)
        var worst = 0.0
        for (step, top5) in reference.top5_per_step.enumerated() {
            let ours = argmax(logits[0..<vocab])
            let margin = top5[0][1] - top5[1][1]
            if margin > 0.1 {
                #expect(ours == Int(top5[0][0]), "step \(step): ours \(ours), llama.cpp \(Int(top5[0][0])) (margin \(margin))")
            }
            var stepWorst = 0.0
            for pair in top5 {
                stepWorst = max(stepWorst, abs(Double(logits[Int(pair[0])]) - pair[1]))
            }
            worst = max(worst, stepWorst)
            if ProcessInfo.processInfo.environment["LMCACHE_TEST_VERBOSE"] != nil {
                print("step \(step): top1 ours \(logits[Int(top5[0][0])]) llama.cpp \(top5[0][1]), worst \(stepWorst)")
            }
            guard step < reference.greedy_ids.count else { break }
            logits = try model.forward([reference.greedy_ids[step]], sequence: kv, outputs: .last, workspace: workspace)
        }
        #expect(worst <= Self.logitTolerance, "worst top-5 logit difference \(worst)")
        print("[\(reference.prompt)] worst top-5 logit difference vs llama.cpp: \(worst)")
    }
}
