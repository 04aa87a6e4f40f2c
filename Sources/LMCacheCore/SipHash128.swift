#if _endian(big)
#error("LMCache keys hash token ids as little-endian bytes; big-endian hosts are not supported")
#endif

/// SipHash-2-4 with a 128-bit output (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
/// and the reference's 128-bit variant), used with a fixed, public key.
///
/// The key is a constant so that every process, restart and machine computes the same hash for
/// the same bytes. SipHash is not used here as a MAC but as a fast, well-mixed 128-bit hash:
/// 2⁻⁶⁴ birthday bound on collisions between distinct chunks, and every hit is additionally
/// checked against the chunk's stored token ids.
///
/// - Complexity: O(*n*) in the number of bytes hashed; about 1 GB/s in release builds.
package struct SipHash128 {
    private var v0: UInt64
    private var v1: UInt64
    private var v2: UInt64
    private var v3: UInt64
    /// Up to 7 bytes not yet absorbed, packed little-endian in the low bytes.
    private var tail: UInt64 = 0
    private var tailCount: Int = 0
    private var length: Int = 0

    /// The fixed key every LMCache key is hashed with: "lmcache-swift/v1" as bytes.
    package static let projectKey: (UInt64, UInt64) = (0x2d65_6863_6163_6d6c, 0x3176_2f74_6669_7773)

    package init(key: (UInt64, UInt64) = SipHash128.projectKey) {
        v0 = key.0 ^ 0x736f_6d65_7073_6575
        v1 = key.1 ^ 0x646f_7261_6e64_6f6d ^ 0xee
        v2 = key.0 ^ 0x6c79_6765_6e65_7261
        v3 = key.1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always)
    private mutating func round() {
        v0 &+= v1
        v1 = (v1 << 13) | (v1 >> 51)
        v1 ^= v0
        v0 = (v0 << 32) | (v0 >> 32)
        v2 &+= v3
        v3 = (v3 << 16) | (v3 >> 48)
        v3 ^= v2
        v0 &+= v3
        v3 = (v3 << 21) | (v3 >> 43)
        v3 ^= v0
        v2 &+= v1
        v1 = (v1 << 17) | (v1 >> 47)
        v1 ^= v2
        v2 = (v2 << 32) | (v2 >> 32)
    }

    @inline(__always)
    private mutating func compress(_ m: UInt64) {
        v3 ^= m
        round()
        round()
        v0 ^= m
    }

    /// Absorbs `bytes`.
    package mutating func combine(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var index = 0
        let count = bytes.count
        length &+= count
        // Complete a partial word left by a previous call.
        while tailCount > 0 && tailCount < 8 && index < count {
            tail |= UInt64(bytes[index]) << (8 * UInt64(tailCount))
            tailCount += 1
            index += 1
        }
        if tailCount == 8 {
            compress(tail)
            tail = 0
            tailCount = 0
        }
        // Whole words: `index + 8 <= count` keeps every load inside `bytes`.
        while index + 8 <= count {
            let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            compress(word)
            index += 8
        }
        while index < count {
            tail |= UInt64(bytes[index]) << (8 * UInt64(tailCount))
            tailCount += 1
            index += 1
        }
    }

    package mutating func combine(_ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { combine($0) }
    }

    package mutating func combine(_ string: String) {
        var string = string
        string.withUTF8 { combine(UnsafeRawBufferPointer($0)) }
        combine(UInt64(string.utf8.count))
    }

    /// Finishes the hash and returns its 128 bits.
    package consuming func finalize() -> ChunkHash {
        let last = (UInt64(truncatingIfNeeded: length) << 56) | tail
        compress(last)
        v2 ^= 0xee
        round()
        round()
        round()
        round()
        let low = v0 ^ v1 ^ v2 ^ v3
        v1 ^= 0xdd
        round()
        round()
        round()
        round()
        let high = v0 ^ v1 ^ v2 ^ v3
        return ChunkHash(low: low, high: high)
    }
}
