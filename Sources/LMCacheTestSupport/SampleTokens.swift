/// Tokens of ordinary text for the test model: BOS, then ids from its vocabulary (deterministic).
package func sampleTokens(_ count: Int, seed: UInt64 = 1) -> [Int32] {
    var state = seed
    var tokens: [Int32] = [2]
    while tokens.count < count {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        tokens.append(Int32(truncatingIfNeeded: (state >> 33) % 20_000) + 100)
    }
    return tokens
}

/// The largest absolute difference between two equally long arrays.
package func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}
