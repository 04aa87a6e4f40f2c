import Foundation
import GGUF
import Inference
import LMCacheTestSupport
import Testing

/// llama.cpp recordings made by scripts/reference/record_forward.py (see scripts/reference/README.md).
struct ForwardReference: Decodable, Sendable {
    struct Position: Decodable, Sendable {
        var argmax: Int
        var top5: [[Double]]
        var margin: Double
    }

    struct TeacherForced: Decodable, Sendable {
        var token_ids: [Int32]
        var positions: [Position]
    }

    struct Greedy: Decodable, Sendable, CustomStringConvertible {
        var prompt: String
        var prompt_ids: [Int32]
        var greedy_ids: [Int32]
        var top2_margin_per_step: [Double]
        var description: String { prompt }
    }

    var model: String
    var teacher_forced: TeacherForced
    var greedy: [Greedy]

    static func load(_ name: String) throws -> ForwardReference {
        try decodeResource(name)
    }

    static func decodeResource<T: Decodable>(_ name: String) throws -> T {
        let data = try Data(contentsOf: resourcesDirectory.appendingPathComponent(name))
        return try JSONDecoder().decode(T.self, from: data)
    }

    /// The model file the recording was made on.
    func modelPath() -> String {
        model.hasPrefix("tiny-") ? resourcesDirectory.appendingPathComponent(model).path : TestModel.path
    }
}

/// Loads a model file (the default model is shared between tests).
func loadTestModel(_ path: String) throws -> any LanguageModel {
    if path == TestModel.path { return try TestModel.model() }
    return try loadModel(from: GGUFFile(contentsOf: path))
}

/// llama.cpp's own argmax on the teacher-forced text under other settings than the recording's, made
/// by scripts/reference/record_llamacpp_variants.py.
struct LlamaCppVariants: Decodable, Sendable {
    struct Variant: Decodable, Sendable {
        var name: String
        var argmax: [Int]
        var agreement_with_recording: Int
    }

    var positions: Int
    var variants: [Variant]

    /// The variants recorded for a forward recording, if any.
    static func load(for recording: String) throws -> LlamaCppVariants? {
        guard recording == "gemma3-forward.json" else { return nil }
        return try ForwardReference.decodeResource("gemma3-llamacpp-variants.json")
    }
}

@Suite("Forward pass against llama.cpp recordings")
struct ForwardReferenceTests {
    static let recordings = ["gemma3-forward.json", "tiny-llama-forward.json", "tiny-qwen2-forward.json"]

    /// Top-5 logits of llama.cpp must be this close to ours (8-bit activations, its and ours in other
    /// summation orders, and F16 KV add noise; the largest measured is 1.005, the same bound as
    /// Gemma3ReferenceTests' greedy runs).
    static let logitTolerance = 1.25

    @Test("teacher-forced, default products: agreement ≥ 93.5%, 100% where llama.cpp's margin > 1, top-5 logits close",
          arguments: recordings)
    func teacherForced(recording: String) throws {
        let reference = try ForwardReference.load(recording)
        let model = try loadTestModel(reference.modelPath())
        let ids = reference.teacher_forced.token_ids
        let vocab = model.configuration.vocabularySize
        let kv = model.makeSequence()
        let workspace = Workspace()
        var agree = 0, confident = 0, confidentAgree = 0
        var largestFlippedMargin = 0.0
        var worstLogit = 0.0
        var ourArgmax: [Int] = []
        var start = 0
        while start < ids.count {
            let end = min(ids.count, start + 256)
            let logits = try model.forward(Array(ids[start..<end]), sequence: kv, outputs: .all, workspace: workspace)
            for i in start..<end {
                let row = logits[((i - start) * vocab)..<((i - start + 1) * vocab)]
                let expected = reference.teacher_forced.positions[i]
                let ours = argmax(row)
                ourArgmax.append(ours)
                if ours != expected.argmax { largestFlippedMargin = max(largestFlippedMargin, expected.margin) }
                if ours == expected.argmax { agree += 1 } else if ProcessInfo.processInfo.environment["LMCACHE_TEST_VERBOSE"] != nil {
                    print("position \(i): ours \(ours) (\(row[row.startIndex + ours])) llama.cpp \(expected.argmax) (ours \(row[row.startIndex + expected.argmax]), theirs \(expected.top5[0][1])), margin \(expected.margin)")
                }
                if expected.margin > 1.0 {
                    confident += 1
                    if ours == expected.argmax { confidentAgree += 1 }
                }
                for pair in expected.top5 {
                    worstLogit = max(worstLogit, abs(Double(row[row.startIndex + Int(pair[0])]) - pair[1]))
                }
            }
            start = end
        }
        let total = ids.count
        print("[\(recording)] top-1 agreement \(agree)/\(total), confident \(confidentAgree)/\(confident), worst top-5 logit difference \(worstLogit), largest llama.cpp margin at a disagreement \(largestFlippedMargin)")
        // Every disagreement must be a near-tie for llama.cpp itself.
        #expect(largestFlippedMargin < 0.3, "a token with llama.cpp margin \(largestFlippedMargin) differs")
        // The default products (sgemm on dequantized weights; this engine matches a numpy float64
        // reference to 2e-5) agree with llama.cpp on about 95% of positions of the Gemma 3 passage: the
        // rest are near-ties that llama.cpp's own 8-bit activations, half-precision KV and summation
        // orders decide. With llama.cpp's order (LMCACHE_MATMUL=llamacpp) agreement is 100%: the
        // issue's 98% is checked there (LlamaOrderAgreementTests).
        // The batch-invariant default (int8 activations for every product, attention per query row in
        // its own fixed order) agrees on 672 of the passage's 715 positions (94.0%; the Float products
        // agreed on 680): every disagreement is still a near-tie for llama.cpp (checked above) and every
        // position where llama.cpp is confident agrees (below).
        let floatProducts = ProcessInfo.processInfo.environment["LMCACHE_MATMUL"] == "sgemm"
        #expect(Double(agree) >= (floatProducts ? 0.95 : 0.935) * Double(total), "top-1 agreement \(agree)/\(total)")
        // llama.cpp itself, with flash attention on (the setting the speed comparison uses), agrees with
        // its own flash-attention-off recording on 683 of these 715 positions (95.5%): which of two
        // near-tied tokens wins depends on its own settings. Require that the engine is as close to the
        // recording as llama.cpp's least agreeing setting, within 0.5% of the positions.
        if let variants = try LlamaCppVariants.load(for: recording) {
            #expect(variants.positions == total)
            for variant in variants.variants {
                let withVariant = zip(ourArgmax, variant.argmax).filter { $0 == $1 }.count
                print("[\(recording)] llama.cpp (\(variant.name)): \(variant.agreement_with_recording)/\(total) with the recording; ours with it \(withVariant)/\(total)")
            }
            let loosest = try #require(variants.variants.min { $0.agreement_with_recording < $1.agreement_with_recording })
            #expect(
                Double(agree) >= Double(loosest.agreement_with_recording) - (floatProducts ? 0.005 : 0.02) * Double(total),
                "ours \(agree)/\(total), llama.cpp (\(loosest.name)) \(loosest.agreement_with_recording)/\(total)"
            )
        }
        #expect(confidentAgree == confident, "agreement where margin > 1: \(confidentAgree)/\(confident)")
        #expect(worstLogit <= Self.logitTolerance, "worst top-5 logit difference \(worstLogit)")
    }

    @Test("greedy continuations equal llama.cpp's up to its first top-2 margin below 0.3", arguments: recordings)
    func greedy(recording: String) throws {
        let reference = try ForwardReference.load(recording)
        let model = try loadTestModel(reference.modelPath())
        #expect(reference.greedy.count >= (recording.hasPrefix("gemma3") ? 5 : 1))
        for case_ in reference.greedy {
            let session = InferenceSession(model: model)
            var logits = try session.prefill(case_.prompt_ids)
            var matched = 0
            for (step, expected) in case_.greedy_ids.enumerated() {
                if case_.top2_margin_per_step[step] < 0.3 { break }
                let ours = Sampler.argmax(logits)
                #expect(ours == expected, "\(case_.prompt): step \(step) ours \(ours) llama.cpp \(expected), margin \(case_.top2_margin_per_step[step])")
                if ours != expected { break }
                matched += 1
                logits = try model.forward([expected], sequence: session.sequence, outputs: .last, workspace: session.workspace)
            }
            print("[\(recording)] \(case_.prompt.debugDescription): \(matched) tokens identical before a margin < 0.3 or the end")
        }
    }
}
