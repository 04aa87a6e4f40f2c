/// The 128-bit content hash of one chunk of tokens, chained over the chunks before it.
///
/// Printed as 32 lowercase hex digits: the bytes of ``low`` then ``high``, each little-endian
/// (the byte order of SipHash's reference output).
public struct ChunkHash: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The first 64 bits of the hash output.
    public var low: UInt64
    /// The last 64 bits of the hash output.
    public var high: UInt64

    /// Creates a hash from its two halves.
    public init(low: UInt64, high: UInt64) {
        self.low = low
        self.high = high
    }

    /// Parses 32 hex digits as printed by ``description``; `nil` for anything else.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 32 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 {
            guard let hi = Self.nibble(utf8[2 * i]), let lo = Self.nibble(utf8[2 * i + 1]) else { return nil }
            bytes[i] = hi << 4 | lo
        }
        var low: UInt64 = 0
        var high: UInt64 = 0
        for i in 0..<8 {
            low |= UInt64(bytes[i]) << (8 * UInt64(i))
            high |= UInt64(bytes[8 + i]) << (8 * UInt64(i))
        }
        self.init(low: low, high: high)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// 32 lowercase hex digits.
    public var description: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(32)
        for word in [low, high] {
            for i in 0..<8 {
                let byte = UInt8(truncatingIfNeeded: word >> (8 * UInt64(i)))
                out.append(digits[Int(byte >> 4)])
                out.append(digits[Int(byte & 0xf)])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func < (lhs: ChunkHash, rhs: ChunkHash) -> Bool {
        (lhs.high, lhs.low) < (rhs.high, rhs.low)
    }
}
