import Foundation
import Inference
import Testing

@Suite("Sampling")
struct SamplerTests {
    /// The sampler as first written: every token sorted, then top-k, top-p and the draw in that order.
    /// The reference the faster sampler must agree with.
    struct SortingSampler {
        let parameters: SamplingParameters
        var generator: SeededGenerator

        init(_ parameters: SamplingParameters) {
            self.parameters = parameters
            generator = SeededGenerator(seed: parameters.seed)
        }

        mutating func sample(_ logits: [Float]) -> Int32 {
            var candidates = logits.enumerated().map { (token: Int32($0.offset), logit: $0.element) }
            candidates.sort { $0.logit > $1.logit }
            if parameters.topK > 0 && parameters.topK < candidates.count {
                candidates.removeLast(candidates.count - parameters.topK)
            }
            let maxLogit = candidates[0].logit
            var probabilities = candidates.map { expf(($0.logit - maxLogit) / parameters.temperature) }
            var total = probabilities.reduce(0, +)
            if parameters.topP < 1 {
                var cumulative: Float = 0
                var keep = probabilities.count
                for (i, p) in probabilities.enumerated() {
                    cumulative += p / total
                    if cumulative >= parameters.topP {
                        keep = i + 1
                        break
                    }
                }
                probabilities.removeLast(probabilities.count - keep)
                total = probabilities.reduce(0, +)
            }
            var r = Float(Double(generator.next() >> 11) / Double(1 << 53)) * total
            for (i, p) in probabilities.enumerated() {
                r -= p
                if r < 0 { return candidates[i].token }
            }
            return candidates[probabilities.count - 1].token
        }
    }

    /// Logits like a model's: a few likely tokens, a long tail.
    static func logits(count: Int, seed: UInt64) -> [Float] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { _ in
            let u = Float(Double(generator.next() >> 11) / Double(1 << 53))
            return 12 * u * u * u - 4
        }
    }

    @Test("greedy picks the largest logit, the first on ties")
    func greedy() {
        var sampler = Sampler(.greedy)
        #expect(sampler.sample([0.5, 2, -1, 2]) == 1)
        #expect(Sampler.argmax([3, 3, 3]) == 0)
    }

    @Test(
        "with top-k (and top-p), the draws equal those of a sampler that sorts every token",
        arguments: [(40, 1.0), (40, 0.9), (1, 1.0), (5, 0.95), (1_000, 0.8)] as [(Int, Float)]
    )
    func sameAsSorting(topK: Int, topP: Float) {
        // Both add the same weights in the same order, so they draw the same tokens. Without top-k
        // the total over every token is added in another order (vocabulary order, not sorted), which
        // moves draws that land in the long tail; `distribution` checks that path.
        let logits = Self.logits(count: 5_000, seed: 7)
        for temperature: Float in [0.3, 0.8, 1.5] {
            let parameters = SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: 42)
            var fast = Sampler(parameters)
            var reference = SortingSampler(parameters)
            let drawn = (0..<100).map { _ in fast.sample(logits) }
            let expected = (0..<100).map { _ in reference.sample(logits) }
            #expect(drawn == expected, "temperature \(temperature)")
        }
    }

    @Test("the same seed draws the same tokens; top-k and top-p keep only the most likely tokens")
    func filters() {
        // Weights 0.5, 0.3, 0.15, 0.05 at temperature 1.
        let logits: [Float] = [0.05, 0.5, 0.15, 0.3].map { logf($0) }
        func draws(_ parameters: SamplingParameters, _ count: Int = 2_000) -> [Int32] {
            var sampler = Sampler(parameters)
            return (0..<count).map { _ in sampler.sample(logits) }
        }
        let seeded = SamplingParameters(temperature: 1, seed: 9)
        #expect(draws(seeded, 100) == draws(seeded, 100))
        #expect(Set(draws(seeded)) == [0, 1, 2, 3])
        #expect(Set(draws(SamplingParameters(temperature: 1, topK: 2, seed: 9))) == [1, 3])
        #expect(Set(draws(SamplingParameters(temperature: 1, topP: 0.79, seed: 9))) == [1, 3])
        #expect(Set(draws(SamplingParameters(temperature: 1, topP: 0.81, seed: 9))) == [1, 2, 3])
        #expect(Set(draws(SamplingParameters(temperature: 1, topK: 1, topP: 0.5, seed: 9))) == [1])
    }

    @Test("draws follow the softmax of the logits at the temperature")
    func distribution() {
        let logits: [Float] = [1.0, 0.2, -0.5, 2.0, 0.0]
        let temperature: Float = 0.7
        let weights = logits.map { exp(Double($0) / Double(temperature)) }
        let total = weights.reduce(0, +)
        var sampler = Sampler(SamplingParameters(temperature: temperature, seed: 3))
        let n = 40_000
        var counts = [Int](repeating: 0, count: logits.count)
        for _ in 0..<n { counts[Int(sampler.sample(logits))] += 1 }
        for (token, count) in counts.enumerated() {
            let expected = weights[token] / total
            let sigma = (expected * (1 - expected) / Double(n)).squareRoot()
            #expect(abs(Double(count) / Double(n) - expected) < 4 * sigma + 1e-3, "token \(token): \(count) of \(n)")
        }
    }

    @Test("without top-k, a long row's draws follow the softmax, with and without top-p")
    func distributionLongRow() {
        let logits = Self.logits(count: 2_000, seed: 11)
        let temperature: Float = 1.2
        let weights = logits.map { exp(Double($0) / Double(temperature)) }
        let total = weights.reduce(0, +)
        let top = weights.indices.max { weights[$0] < weights[$1] }!
        let n = 5_000
        for topP: Float in [1, 0.95] {
            var sampler = Sampler(SamplingParameters(temperature: temperature, topP: topP, seed: 13))
            let hits = (0..<n).filter { _ in sampler.sample(logits) == Int32(top) }.count
            // The most likely token's share: its weight over all (top-p 0.95 drops at most 5% of the
            // weight, raising it by at most 1/0.95).
            let low = weights[top] / total, high = low / (topP < 1 ? 0.95 : 1)
            let sigma = (high * (1 - high) / Double(n)).squareRoot()
            let share = Double(hits) / Double(n)
            #expect(share > low - 4 * sigma && share < high + 4 * sigma, "top-p \(topP): \(share), expected \(low)...\(high)")
        }
    }

    @Test("a flat row of a whole vocabulary: top-p keeps the lowest ids, in order")
    func flatVocabulary() {
        let logits = [Float](repeating: 1.5, count: 262_144)
        var sampler = Sampler(SamplingParameters(temperature: 1, topP: 0.25, seed: 5))
        for _ in 0..<20 { #expect(sampler.sample(logits) < 65_536) }
        var all = Sampler(SamplingParameters(temperature: 0.9, seed: 5))
        let drawn = (0..<20).map { _ in all.sample(logits) }
        #expect(Set(drawn).count > 10, "draws over a flat row spread over the vocabulary")
    }
}
