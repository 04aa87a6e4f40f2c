import LMCacheStorage
import Testing

@Suite("Disk payload checksum")
struct ChecksumTests {
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed | 1
        return (0..<count).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state)
        }
    }

    @Test("the vectorized accumulator equals the portable one", arguments: [0, 64, 640, 4096, 262_144])
    func vectorEqualsPortable(count: Int) {
        let data = Self.bytes(count, seed: UInt64(count) + 5)
        data.withUnsafeBytes { raw in
            #expect(
                ChunkChecksum.stripeLanes(raw)
                    == ChunkChecksum.stripeLanes(raw, portable: true)
            )
        }
    }

    @Test("every single-bit flip changes the checksum")
    func bitFlips() {
        var data = Self.bytes(1000, seed: 42)
        let original = data.withUnsafeBytes { ChunkChecksum.payload($0) }
        for position in stride(from: 0, to: data.count, by: 7) {
            for bit in 0..<8 {
                data[position] ^= 1 << bit
                #expect(data.withUnsafeBytes { ChunkChecksum.payload($0) } != original)
                data[position] ^= 1 << bit
            }
        }
        #expect(data.withUnsafeBytes { ChunkChecksum.payload($0) } == original)
    }

    @Test("swapping two 8-byte words changes the checksum")
    func wordSwap() {
        var data = Self.bytes(512, seed: 9)
        let original = data.withUnsafeBytes { ChunkChecksum.payload($0) }
        for i in 0..<8 { data.swapAt(i, 64 + i) }
        #expect(data.withUnsafeBytes { ChunkChecksum.payload($0) } != original)
    }
}
