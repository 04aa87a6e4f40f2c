#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A seeded random number generator (SplitMix64) for tests that throw random input at decoders:
/// the same seed gives the same inputs, so a failure replays.
///
/// ``fromEnvironment(default:)`` takes the seed from `LMCACHE_TEST_SEED` when it is set (to explore
/// other inputs, and to replay a failure found that way), else the test's own fixed seed, so that
/// the inputs are the same on every run.
package struct SeededGenerator: RandomNumberGenerator {
    /// The seed the sequence started from.
    package let seed: UInt64
    private var state: UInt64

    package init(seed: UInt64) {
        self.seed = seed
        state = seed
    }

    /// A generator seeded by `LMCACHE_TEST_SEED` (decimal or 0x-prefixed hex) when set, else by `seed`.
    package static func fromEnvironment(default seed: UInt64) -> SeededGenerator {
        guard let text = getenv("LMCACHE_TEST_SEED").map({ String(cString: $0) }) else { return SeededGenerator(seed: seed) }
        let parsed = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
        return SeededGenerator(seed: parsed ?? seed)
    }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
