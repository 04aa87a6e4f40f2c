internal import Foundation
internal import Kernels

/// How the next token is chosen from logits.
public struct SamplingParameters: Sendable, Hashable {
    /// 0 picks the most likely token (greedy); larger values flatten the distribution.
    public var temperature: Float
    /// Keep only the `topK` most likely tokens (0: all).
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability reaches `topP` (1: all).
    public var topP: Float
    /// Seed of the random generator; the same seed and logits give the same tokens.
    public var seed: UInt64

    /// Sampling settings; the defaults are greedy.
    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    /// Always the most likely token.
    public static let greedy = SamplingParameters()
}

/// A deterministic pseudo-random generator (SplitMix64), so that a seed reproduces a run.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator starting from `seed`.
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Chooses tokens from logits: greedy, or temperature with top-k and top-p filtering.
///
/// ```swift
/// var sampler = Sampler(SamplingParameters(temperature: 0.8, topK: 40, topP: 0.95, seed: 42))
/// let next = sampler.sample(logits)
/// ```
public struct Sampler: Sendable {
    /// The settings.
    public let parameters: SamplingParameters
    private var generator: SeededGenerator

    /// A sampler with its generator seeded from `parameters.seed`.
    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        generator = SeededGenerator(seed: parameters.seed)
    }

    /// The index of the largest logit (the first one on ties).
    /// - Complexity: O(n).
    public static func argmax(_ logits: some Collection<Float>) -> Int32 {
        if let index = logits.withContiguousStorageIfAvailable({ buffer in
            buffer.isEmpty ? 0 : Ops.argmax(buffer.baseAddress!, count: buffer.count)
        }) {
            return Int32(index)
        }
        return argmax(Array(logits))
    }

    /// Picks the next token from one row of logits.
    /// - Complexity: O(n) for greedy; O(n log n) with temperature (sorting the candidates).
    public mutating func sample(_ logits: some Collection<Float>) -> Int32 {
        guard parameters.temperature > 0 else { return Self.argmax(logits) }
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
