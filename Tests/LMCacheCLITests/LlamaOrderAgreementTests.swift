import Foundation
import Testing

/// `LMCACHE_MATMUL=llamacpp` computes every product in llama.cpp's CPU order, so the engine's
/// teacher-forced logits must be llama.cpp's own, value for value (the five largest of every
/// position are compared as float32), its argmax at (nearly) every position of the recorded texts,
/// near-ties included (the issue's 98% criterion), and its greedy continuations llama.cpp's, token for
/// token: checked end to end through `lmcache perplexity` and `lmcache generate`, as anyone can check
/// them. (The default products are faster and agree at ~95%: see ForwardReferenceTests.)
@Suite("llama.cpp order: agreement with the recordings")
struct LlamaOrderAgreementTests {
    struct Recording: Decodable {
        struct Position: Decodable { var argmax: Int; var margin: Double; var top5: [[Double]] }
        struct TeacherForced: Decodable { var token_ids: [Int]; var positions: [Position] }
        struct Greedy: Decodable { var prompt: String; var prompt_ids: [Int]; var greedy_ids: [Int]; var top2_margin_per_step: [Double] }
        var teacher_forced: TeacherForced
        var greedy: [Greedy]
    }

    struct Case: CustomStringConvertible, Sendable {
        var recording: String
        var model: String?  // nil: the default model
        var text: String
        var description: String { recording }
    }

    static let root = URL(filePath: #filePath).deletingLastPathComponent().appending(path: "../..").standardized
    static let resources = root.appending(path: "Tests/InferenceTests/Resources")

    static let cases = [
        Case(recording: "gemma3-forward.json", model: nil, text: "scripts/reference/passage.txt"),
        Case(recording: "tiny-llama-forward.json", model: "tiny-llama.gguf", text: "scripts/reference/tiny-text.txt"),
        Case(recording: "tiny-qwen2-forward.json", model: "tiny-qwen2.gguf", text: "scripts/reference/tiny-text.txt"),
    ]

    @Test("teacher-forced top-1 agreement with llama.cpp ≥ 98%", arguments: cases)
    func agreement(_ test: Case) async throws {
        let model = try test.model.map { Self.resources.appending(path: $0).path } ?? EngineCLITests.requireModel()
        let recording = try JSONDecoder().decode(
            Recording.self, from: Data(contentsOf: Self.resources.appending(path: test.recording)))
        let result = try await LMCacheExecutable.runAsync(
            ["perplexity", "--model", model, "--file", Self.root.appending(path: test.text).path, "--json", "--top-logits", "5"],
            environment: ["LMCACHE_MATMUL": "llamacpp"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try EngineCLITests.json(result.stdout)
        let ids = try #require(object["token_ids"] as? [Int])
        let argmax = try #require(object["argmax_ids"] as? [Int])
        let positions = recording.teacher_forced.positions
        #expect(ids == recording.teacher_forced.token_ids)
        try #require(argmax.count == positions.count)
        let disagreements = zip(argmax, positions).enumerated().filter { $0.element.0 != $0.element.1.argmax }
        let agree = positions.count - disagreements.count
        print("[\(test.recording)] llama.cpp order: top-1 agreement \(agree)/\(positions.count)\(disagreements.isEmpty ? "" : "; disagreements (position, llama.cpp margin): \(disagreements.map { ($0.offset, $0.element.1.margin) })")")
        #expect(Double(agree) >= 0.98 * Double(positions.count), "top-1 agreement \(agree)/\(positions.count)")

        // Logits value for value: the five largest of every position, ids and float32 values equal
        // to llama.cpp's (the recordings hold its float32 logits exactly).
        let top = try #require(object["top_logits"] as? [[[Double]]])
        try #require(top.count == positions.count)
        var differing: [Int] = []
        for (index, (ours, theirs)) in zip(top, positions).enumerated() {
            let same =
                ours.map { Int($0[0]) } == theirs.top5.map { Int($0[0]) }
                && ours.map { Float($0[1]) } == theirs.top5.map { Float($0[1]) }
            if !same { differing.append(index) }
        }
        #expect(differing.isEmpty, "top-5 logits differ from llama.cpp's at \(differing.count) positions: \(differing.prefix(10))")
    }

    @Test("greedy continuations equal llama.cpp's, token for token, through its near-ties", arguments: cases)
    func greedy(_ test: Case) async throws {
        let model = try test.model.map { Self.resources.appending(path: $0).path } ?? EngineCLITests.requireModel()
        let recording = try JSONDecoder().decode(
            Recording.self, from: Data(contentsOf: Self.resources.appending(path: test.recording)))
        #expect(!recording.greedy.isEmpty)
        for entry in recording.greedy {
            let result = try await LMCacheExecutable.runAsync(
                ["generate", "--model", model, "--prompt", entry.prompt, "--max-tokens", "\(entry.greedy_ids.count)", "--json"],
                environment: ["LMCACHE_MATMUL": "llamacpp"])
            #expect(result.status == 0, "\(result.stderr)")
            let object = try EngineCLITests.json(result.stdout)
            #expect(object["prompt_ids"] as? [Int] == entry.prompt_ids)
            let generated = try #require(object["generated_ids"] as? [Int])
            #expect(
                generated == entry.greedy_ids,
                "\(entry.prompt.prefix(40)): llama.cpp's smallest top-2 margin \(entry.top2_margin_per_step.min() ?? 0)")
        }
    }
}
