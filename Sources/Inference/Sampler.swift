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
    ///
    /// With a temperature, token *i* weighs exp((logit_i − max) / temperature). Top-k keeps the `topK`
    /// most likely tokens, top-p then the smallest run of the most likely ones whose share of the
    /// weight reaches `topP`; the draw walks the kept tokens from the most likely down (ties: the lower
    /// id first). Only the most likely tokens are ever sorted: those within a distance of the largest
    /// logit that doubles until they hold what the filters and the draw need (a full sort of a
    /// 262,144-token vocabulary took longer than the decode step that produced the logits).
    /// - Complexity: O(n) for greedy; O(n + m log m) with temperature, m the tokens sorted (the whole
    ///   vocabulary only when the logits are nearly flat).
    public mutating func sample(_ logits: some Collection<Float>) -> Int32 {
        guard parameters.temperature > 0 else { return Self.argmax(logits) }
        let row = Array(logits)
        guard let maxLogit = row.max() else { return 0 }
        let temperature = parameters.temperature
        let limited = parameters.topK > 0 && parameters.topK < row.count
        var ranked = RankedTokens(row, maxLogit: maxLogit, temperature: temperature)
        // The candidates, most likely first, and the sum of all their weights.
        var candidates: Int
        var total: Float
        if limited {
            candidates = parameters.topK
            ranked.extend(toHold: candidates)
            total = ranked.weightOfFirst(candidates)
        } else {
            candidates = row.count
            total = row.reduce(Float(0)) { $0 + expf(($1 - maxLogit) / temperature) }
        }
        if parameters.topP < 1 {
            var cumulative: Float = 0
            var index = 0
            while index < candidates {
                if index == ranked.count { ranked.extend(toHold: index + 1) }
                cumulative += ranked.weight(index) / total
                index += 1
                if cumulative >= parameters.topP { break }
            }
            candidates = index
            total = ranked.weightOfFirst(candidates)
        }
        var r = Float(Double(generator.next() >> 11) / Double(1 << 53)) * total
        var index = 0
        while index < candidates {
            if index == ranked.count { ranked.extend(toHold: index + 1) }
            r -= ranked.weight(index)
            if r < 0 { return ranked.token(index) }
            index += 1
        }
        // Rounding left some of the draw: the least likely candidate, as a walk to the end gives.
        ranked.extend(toHold: candidates)
        return ranked.token(candidates - 1)
    }
}

/// The most likely tokens of one row of logits, sorted (the largest logit first, the lower id on
/// ties), gathered a band of logits at a time.
private struct RankedTokens {
    let row: [Float]
    let maxLogit: Float
    let temperature: Float
    /// The sorted tokens so far: every token whose logit is at least `floor`.
    private(set) var tokens: [Int32] = []
    private var weights: [Float] = []
    /// How far below the largest logit the band reaches, in units of the temperature.
    private var depth: Float = 4
    private var floor: Float = .infinity

    init(_ row: [Float], maxLogit: Float, temperature: Float) {
        self.row = row
        self.maxLogit = maxLogit
        self.temperature = temperature
    }

    var count: Int { tokens.count }

    func token(_ index: Int) -> Int32 { tokens[index] }

    func weight(_ index: Int) -> Float { weights[index] }

    /// The sum of the first `count` weights, added most likely first.
    func weightOfFirst(_ count: Int) -> Float { weights[..<count].reduce(0, +) }

    /// Widens the band until it holds at least `count` tokens (or the whole row).
    mutating func extend(toHold count: Int) {
        while tokens.count < min(count, row.count) {
            depth *= 2
            let newFloor = depth < 1e30 ? maxLogit - depth * temperature : -.infinity
            var band: [Int32] = []
            for (index, logit) in row.enumerated() where logit < floor && logit >= newFloor {
                band.append(Int32(index))
            }
            // NaN logits fall in no band; they are gathered last, after every number.
            if newFloor == -.infinity {
                for (index, logit) in row.enumerated() where logit.isNaN { band.append(Int32(index)) }
            }
            band.sort { row[Int($0)] > row[Int($1)] || (row[Int($0)] == row[Int($1)] && $0 < $1) }
            tokens += band
            weights += band.map { expf((row[Int($0)] - maxLogit) / temperature) }
            floor = newFloor
        }
    }
}
