import Foundation
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
        #expect(KVChunkFrame.headerLength(of: chunk) == ChunkFormat.fixedSize + chunk.key.modelName.utf8.count + 4 * 4)
        #expect(frame.readableBytes == KVChunkFrame.headerLength(of: chunk) + chunk.byteCount)
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
                #expect(frame.readableBytes < KVChunkFrame.headerLength(of: chunk) + chunk.byteCount * 6 / 10, "\(serde)")
            }
        }
        // float32 KV travels as it is whatever the serde.
        let wide = LMServerTierTests.chunk(seed: 6, tokens: 4, layout: KVLayout(layers: 1, kvHeads: 1, headDim: 4, dtype: .float32))
        let frame = KVChunkFrame.encode(wide, serde: .cachegen)
        #expect(frame.readableBytes == KVChunkFrame.headerLength(of: wide) + wide.byteCount)
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

    @Test("a frame is the disk tier's file of the same chunk without the header's padding; its checksums recompute; version 2 is a miss")
    func oneFormat() throws {
        // Two layers of 640 tokens: 655,360 bytes, three payload blocks.
        let chunk = LMServerTierTests.chunk(seed: 8, tokens: 640, layout: KVLayout(layers: 2, kvHeads: 1, headDim: 256, dtype: .float16))
        let frame = Array(KVChunkFrame.encode(chunk).readableBytesView)
        let used = KVChunkFrame.headerLength(of: chunk)
        #expect(frame.count == used + chunk.byteCount)

        let directory = try TemporaryDirectory("lmcache-frame-format")
        defer { directory.remove() }
        let tier = try LocalDiskTier(directory: directory.path, capacity: 1 << 24)
        #expect(tier.write(chunk))
        let file = try [UInt8](Data(contentsOf: URL(filePath: directory.path + "/\(chunk.key.hash)-640.lmkv")))
        let padded = (used + 4095) / 4096 * 4096
        #expect(file.count == padded + chunk.byteCount)
        // The same bytes but for the header length (offset 8) and the header checksum over it (48).
        #expect(file[0..<8] == frame[0..<8] && file[12..<48] == frame[12..<48] && file[56..<used] == frame[56..<used])
        #expect(file[used..<padded].allSatisfy { $0 == 0 })
        #expect(file[padded...] == frame[used...])
        func integer<T: FixedWidthInteger>(_ bytes: [UInt8], _ offset: Int, _: T.Type) -> T {
            bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        #expect(integer(frame, 8, UInt32.self) == UInt32(used) && integer(file, 8, UInt32.self) == UInt32(padded))

        // The checksums, recomputed from their definition.
        func headerChecksum(_ bytes: [UInt8]) -> UInt64 {
            var header = Array(bytes[0..<used])
            for i in 48..<56 { header[i] = 0 }
            return header.withUnsafeBytes { XXHash64.hash($0) }
        }
        #expect(integer(frame, 48, UInt64.self) == headerChecksum(frame))
        #expect(integer(frame, 40, UInt64.self) == frame[used...].withUnsafeBytes { ChunkChecksum.payload($0) })
        #expect(KVChunkFrame.decodeForTesting(ByteBuffer(bytes: frame), key: chunk.key)?.contentEquals(chunk) == true)
        // A flipped byte in the last block is caught.
        var bad = frame
        bad[frame.count - 10] ^= 0x10
        #expect(KVChunkFrame.decodeForTesting(ByteBuffer(bytes: bad), key: chunk.key) == nil)
        // A frame saying version 2, even with a header checksum that matches, is a miss.
        var old = frame
        old[4] = 2
        withUnsafeBytes(of: headerChecksum(old).littleEndian) { old.replaceSubrange(48..<56, with: $0) }
        #expect(KVChunkFrame.decodeForTesting(ByteBuffer(bytes: old), key: chunk.key) == nil)
    }

    @Test("a header whose layout times its tokens passes 2^63 bytes is refused, not a crash (found by lmcache-fuzz kv-frame)")
    func overflowingLayout() throws {
        let chunk = Self.smallChunk()
        // The most tokens a frame may declare, under a key that says as many, in a header whose checksum holds.
        let tokens = [Int32](repeating: 7, count: KVChunkFrame.maximumTokens)
        let key = CacheKey(hash: chunk.key.hash, tokenCount: tokens.count, modelName: chunk.key.modelName, dtype: .float16)
        for (layers, heads, size) in [(0x1000, 0x1000, 0x1_0000), (0xFFF, 0x1000, 0x1_0000), (1, 1, 0x1_0000)] {
            let layout = KVLayout(layers: layers, kvHeads: heads, headDim: size, dtype: .float16)
            let content = ChunkFormat.Content.kv(tokens: tokens, layout: layout, modelName: key.modelName, codec: 0)
            var frame = [UInt8](repeating: 0, count: ChunkFormat.headerLength(of: content, alignment: 1))
            frame.withUnsafeMutableBytes {
                ChunkFormat.writeHeader(hash: key.hash, content: content, payloadLength: 0, payloadChecksum: 0, into: $0)
            }
            let parsed = frame.withUnsafeBytes { ChunkFormat.parseHeader($0, recordSize: frame.count, alignment: 1) }
            #expect(throws: ChunkFormatError.self) { try parsed.get() }
            #expect(KVChunkFrame.decodeForTesting(ByteBuffer(bytes: frame), key: key) == nil)
        }
    }

    @Test("random bytes never decode and never crash")
    func randomBytes() {
        let key = Self.smallChunk().key
        var generator = SeededGenerator.fromEnvironment(default: 0xF4A3E)
        for _ in 0..<2000 {
            let count = Int.random(in: 0...200, using: &generator)
            var buffer = ByteBuffer(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
            if count >= 8 { buffer.setBytes(Array("LMKV".utf8) + [3, 0, 1, 0], at: 0) }
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
