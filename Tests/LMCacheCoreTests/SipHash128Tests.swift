import LMCacheCore
import Testing

@Suite("SipHash-2-4-128")
struct SipHash128Tests {
    /// The reference implementation's key: bytes 00 01 … 0f.
    static let referenceKey: (UInt64, UInt64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908)

    static func hash(_ bytes: [UInt8], splitAt split: Int? = nil) -> String {
        var hasher = SipHash128(key: referenceKey)
        bytes.withUnsafeBytes { all in
            if let split {
                hasher.combine(UnsafeRawBufferPointer(rebasing: all[..<split]))
                hasher.combine(UnsafeRawBufferPointer(rebasing: all[split...]))
            } else {
                hasher.combine(all)
            }
        }
        return hasher.finalize().description
    }

    @Test("matches the reference 128-bit vectors")
    func referenceVectors() {
        // From the SipHash reference's 128-bit vector table: message = bytes 00 01 … (n-1).
        #expect(Self.hash([]) == "a3817f04ba25a8e66df67214c7550293")
        #expect(Self.hash([0]) == "da87c1d86b99af44347659119b22fc45")
        #expect(Self.hash(Array(0..<15)) == "5493e99933b0a8117e08ec0f97cfc3d9")
    }

    @Test("feeding bytes in pieces gives the same hash", arguments: [0, 1, 7, 8, 9, 31, 63])
    func incremental(split: Int) {
        let bytes = (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        #expect(Self.hash(bytes, splitAt: split) == Self.hash(bytes))
    }

    @Test("hex form round-trips")
    func hexRoundTrip() {
        let hash = ChunkHash(low: 0x0123_4567_89ab_cdef, high: 0xfedc_ba98_7654_3210)
        #expect(hash.description == "efcdab89674523011032547698badcfe")
        #expect(ChunkHash(hex: hash.description) == hash)
        #expect(ChunkHash(hex: "xyz") == nil)
        #expect(ChunkHash(hex: String(repeating: "g", count: 32)) == nil)
    }
}
