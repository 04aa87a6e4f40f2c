import Foundation
import GGUF
import Inference
import LMCacheTestSupport
import Testing

/// Directory of this test target's data files.
let resourcesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Resources")

/// The index of the largest value.
func argmax(_ values: ArraySlice<Float>) -> Int {
    var best = values.startIndex
    for i in values.indices where values[i] > values[best] { best = i }
    return best - values.startIndex
}

/// llama.cpp's greedy outputs with top-5 logits (shared reference data).
struct GreedyReference: Decodable, Sendable, CustomStringConvertible {
    var prompt: String
    var prompt_ids: [Int32]
    var greedy_ids: [Int32]
    var top5_per_step: [[[Double]]]
    var description: String { prompt }

    static let all: [GreedyReference] = {
        struct File: Decodable { var greedy: [GreedyReference] }
        let url = resourcesDirectory.appendingPathComponent("llamacpp-gemma3-270m-vectors.json")
        guard let data = try? Data(contentsOf: url), let file = try? JSONDecoder().decode(File.self, from: data) else {
            return []
        }
        return file.greedy
    }()
}
