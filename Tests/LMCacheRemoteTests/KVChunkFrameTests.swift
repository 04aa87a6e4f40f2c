import LMCacheCore
import LMCacheRemote
import LMCacheStorage
import NIOCore
import LMCacheTestSupport
import Testing

/// The remote tier's payload framing, with no network.
struct KVChunkFrameTests {
    static func smallChunk() -> KVChunk {
        LMServerTierTests.chunk(
            seed: 3,
            tokens: 4,
            layout: KVLayout(layers: 1, kvHeads: 1, headDim: 2, dtype: .float16)
        )
    }

    @Test("a frame decodes to the same chunk")
    func roundTrip() throws {
        let chunk = Self.smallChunk()
        let frame = KVChunkFrame.encode(chunk)
        #expect(frame.readableBytes == KVChunkFrame.headerSize + 4 * 4 + chunk.byteCount)
        let back = try #require(KVChunkFrame.decodeForTesting(frame, key: chunk.key))
        #expect(back.contentEquals(chunk))
    }

    @Test("frames of every serde decode: lossless ones to the same bytes, lossy ones to the chunk's shape, smaller")
    func serdes() throws {
        let chunk = LMServerTierTests.chunk(seed: 5, tokens: 64, layout: KVLayout(layers: 2, kvHeads: 1, headDim: 64, dtype: .float16))
        for serde in KVSerde.allCases {
            let frame = KVChunkFrame.encode(chunk, serde: serde)
            let back = try #require(KVChunkFrame.decodeForTesting(frame, key: chunk.key), "\(serde)")
            #expect(back.tokens == chunk.tokens && back.layout == chunk.layout && back.byteCount == chunk.byteCount)
            if serde.isLossless {
                #expect(back.contentEquals(chunk), "\(serde)")
            } else {
                #expect(frame.readableBytes < KVChunkFrame.headerSize + 4 * 64 + chunk.byteCount * 6 / 10, "\(serde)")
            }
        }
        // float32 KV travels as it is whatever the serde.
        let wide = LMServerTierTests.chunk(seed: 6, tokens: 4, layout: KVLayout(layers: 1, kvHeads: 1, headDim: 4, dtype: .float32))
        let frame = KVChunkFrame.encode(wide, serde: .cachegen)
        #expect(frame.readableBytes == KVChunkFrame.headerSize + 4 * 4 + wide.byteCount)
        #expect(KVChunkFrame.decodeForTesting(frame, key: wide.key)?.contentEquals(wide) == true)
    }

    @Test("any flipped byte, any truncation, and another key's frame decode to nothing", arguments: [KVSerde.naive, .lossless, .q8])
    func corruption(serde: KVSerde) {
        let chunk = Self.smallChunk()
        let frame = KVChunkFrame.encode(chunk, serde: serde)
        for offset in 0..<frame.readableBytes {
            for bit in [UInt8(1), 0x80] {
                var bad = frame
                bad.setInteger(bad.getInteger(at: offset, as: UInt8.self)! ^ bit, at: offset)
                #expect(KVChunkFrame.decodeForTesting(bad, key: chunk.key) == nil, "byte \(offset) bit \(bit)")
            }
        }
        for length in 0..<frame.readableBytes {
            #expect(KVChunkFrame.decodeForTesting(frame.getSlice(at: 0, length: length)!, key: chunk.key) == nil)
        }
        var longer = frame
        longer.writeInteger(UInt8(0))
        #expect(KVChunkFrame.decodeForTesting(longer, key: chunk.key) == nil)
        let other = LMServerTierTests.chunk(seed: 4, tokens: 4, layout: chunk.layout)
        #expect(KVChunkFrame.decodeForTesting(frame, key: other.key) == nil)
    }

    @Test("the checksum is the chunk checksum of the disk tier: header, tokens, the payload's block hashes; version 1 is a miss")
    func checksumScheme() throws {
        // Two layers of 640 tokens: 655,360 bytes, three payload blocks.
        let chunk = LMServerTierTests.chunk(seed: 8, tokens: 640, layout: KVLayout(layers: 2, kvHeads: 1, headDim: 256, dtype: .float16))
        let frame = KVChunkFrame.encode(chunk)
        let tokensEnd = KVChunkFrame.headerSize + 4 * 640
        let expected = frame.withUnsafeReadableBytes { bytes in
            var joined = [UInt8](bytes[0..<56]) + [UInt8](bytes[KVChunkFrame.headerSize..<tokensEnd])
            let payload = ChunkChecksum.payload(UnsafeRawBufferPointer(rebasing: bytes[tokensEnd...]))
            withUnsafeBytes(of: payload.littleEndian) { joined += $0 }
            return joined.withUnsafeBytes { XXHash64.hash($0) }
        }
        #expect(frame.getInteger(at: 56, endianness: .little, as: UInt64.self) == expected)
        #expect(KVChunkFrame.decodeForTesting(frame, key: chunk.key)?.contentEquals(chunk) == true)
        // A flipped byte in the last block is caught.
        var bad = frame
        let offset = frame.readableBytes - 10
        bad.setInteger(bad.getInteger(at: offset, as: UInt8.self)! ^ 0x10, at: offset)
        #expect(KVChunkFrame.decodeForTesting(bad, key: chunk.key) == nil)
        // A frame saying version 1, even with a checksum that matches, is a miss.
        var old = frame
        old.setInteger(UInt16(1), at: 4, endianness: .little)
        let oldSum = old.withUnsafeReadableBytes { bytes in
            KVChunkFrame.checksum(
                head: UnsafeRawBufferPointer(rebasing: bytes[0..<56]),
                tokens: UnsafeRawBufferPointer(rebasing: bytes[KVChunkFrame.headerSize..<tokensEnd]),
                payload: UnsafeRawBufferPointer(rebasing: bytes[tokensEnd...]))
        }
        old.setInteger(oldSum, at: 56, endianness: .little)
        #expect(KVChunkFrame.decodeForTesting(old, key: chunk.key) == nil)
    }

    @Test("a header whose layout times its tokens passes 2^63 bytes is refused, not a crash (found by lmcache-fuzz kv-frame)")
    func overflowingLayout() {
        let chunk = Self.smallChunk()
        // The most tokens a frame may declare, under a key that says as many.
        let tokens = KVChunkFrame.maximumTokens
        let key = CacheKey(hash: chunk.key.hash, tokenCount: tokens, modelName: chunk.key.modelName, dtype: .float16)
        for (layers, heads, size) in [(0x1_0000, 0x1_0000, 0x1_0000), (0x7E02, 0x1001, 0x1_0000), (1, 1, 0x1_0000)] {
            var frame = KVChunkFrame.encode(chunk)
            frame.setInteger(UInt32(tokens).littleEndian, at: 8, endianness: .host)
            frame.setInteger(UInt32(layers).littleEndian, at: 12, endianness: .host)
            frame.setInteger(UInt32(heads).littleEndian, at: 16, endianness: .host)
            frame.setInteger(UInt32(size).littleEndian, at: 20, endianness: .host)
            #expect(KVChunkFrame.decodeForTesting(frame, key: key) == nil)
        }
    }

    @Test("random bytes never decode and never crash")
    func randomBytes() {
        let key = Self.smallChunk().key
        var generator = SeededGenerator.fromEnvironment(default: 0xF4A3E)
        for _ in 0..<2000 {
            let count = Int.random(in: 0...200, using: &generator)
            var buffer = ByteBuffer(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
            if count >= 8 { buffer.setBytes(Array("LMKV".utf8) + [2, 0, 64, 0], at: 0) }
            #expect(KVChunkFrame.decodeForTesting(buffer, key: key) == nil)
        }
    }

    @Test("server keys name the dtype as LMCache does, so its server can parse them")
    func wireKeys() {
        let hash = ChunkHash(low: 1, high: 2)
        for (dtype, name) in [(KVDType.float16, "half"), (.bfloat16, "bfloat16"), (.float32, "float")] {
            let key = CacheKey(hash: hash, tokenCount: 256, modelName: "org/model", dtype: dtype)
            let text = LMServerTier.wireKey(key)
            #expect(text == "org/model@1@0@\(hash)@\(name)")
            #expect(text.utf8.count <= 150)
        }
    }
}
