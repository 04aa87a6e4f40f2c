import LMCacheCore
import Testing

@Suite("XXH64 checksum")
struct XXHash64Tests {
    static func hash(_ bytes: [UInt8], seed: UInt64 = 0) -> UInt64 {
        bytes.withUnsafeBytes { XXHash64.hash($0, seed: seed) }
    }

    @Test("matches the reference implementation (values from the xxhash Python package)")
    func referenceValues() {
        #expect(Self.hash([]) == 0xef46_db37_51d8_e999)
        #expect(Self.hash(Array("abc".utf8)) == 0x44bc_2cf5_ad77_0999)
        let long = Array((0..<3).flatMap { _ in (0...255).map { UInt8($0) } }) + Array("xyz".utf8)
        #expect(Self.hash(long) == 0xe921_a1b4_5bd7_79f8)
        #expect(Self.hash((0..<100).map { UInt8($0) }, seed: 7) == 0x8065_3e7e_9b88_7cdd)
    }

    @Test("one flipped bit changes the checksum")
    func sensitivity() {
        var bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let before = Self.hash(bytes)
        bytes[1234] ^= 0x10
        #expect(Self.hash(bytes) != before)
    }
}
