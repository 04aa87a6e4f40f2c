import Foundation
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing

/// The KV codecs themselves, below the tiers: lossless round trips on every float16 bit pattern and
/// every shape the code has a separate path for, the portable and SIMD decoders against each other,
/// streams of the earlier lossless version, and hostile lossless streams.
@Suite("KV codecs")
struct KVCodecTests {
    static let lossless = KVCodec.id(.lossless)

    static func layout(layers: Int, heads: Int, headDim: Int) -> KVLayout {
        KVLayout(layers: layers, kvHeads: heads, headDim: headDim, dtype: .float16)
    }

    static func encode(_ values: [UInt16], codec: UInt32, layout: KVLayout, tokens: Int) -> [UInt8]? {
        values.withUnsafeBytes { KVCodec.encode($0, codec: codec, layout: layout, tokens: tokens) }
    }

    /// The stream decoded by the SIMD decoders (where the CPU has them) and by the portable ones;
    /// `nil` when either refuses it, and the two must agree on that.
    static func decode(_ stream: [UInt8], codec: UInt32, layout: KVLayout, tokens: Int) -> [UInt16]? {
        let count = layout.byteCount(tokens: tokens) / 2
        var results: [[UInt16]?] = []
        for portable in [false, true] {
            var values = [UInt16](repeating: 0xFFFF, count: count)
            let ok = stream.withUnsafeBytes { source in
                values.withUnsafeMutableBytes {
                    KVCodec.decode(source, codec: codec, layout: layout, tokens: tokens, into: $0, portable: portable)
                }
            }
            results.append(ok ? values : nil)
        }
        #expect(mismatch(results[0], results[1]) == nil, "the portable and SIMD decoders agree")
        return results[0]
    }

    /// Where two decodings first differ (-1: one of them was refused and the other not); `nil` when
    /// they are the same, so that a failure names a position instead of printing both arrays.
    static func mismatch(_ a: [UInt16]?, _ b: [UInt16]?) -> Int? {
        guard let a, let b else { return (a == nil) == (b == nil) ? nil : -1 }
        if a.count != b.count { return min(a.count, b.count) }
        return a.indices.first { a[$0] != b[$0] }
    }

    static func realistic(count: Int, seed: UInt64) -> [UInt16] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { i in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let gaussian = (Float(state >> 40) / Float(1 << 24) - 0.5) * 3
            return Float16(gaussian * (i % 7 == 0 ? 9 : 0.7)).bitPattern
        }
    }

    @Test("lossless: every float16 bit pattern (NaNs, infinities, subnormals, signed zeros) comes back bit for bit")
    func everyBitPattern() throws {
        let layout = Self.layout(layers: 1, heads: 1, headDim: 256)
        // K holds the 65,536 patterns in one order, V in another (40,503 and 7 are odd: bijections).
        let values = (0..<65_536).map { UInt16(truncatingIfNeeded: $0 &* 40_503) }
            + (0..<65_536).map { UInt16(truncatingIfNeeded: $0 &* 7 &+ 12_345) }
        let stream = try #require(Self.encode(values, codec: Self.lossless, layout: layout, tokens: 256))
        #expect(Self.mismatch(Self.decode(stream, codec: Self.lossless, layout: layout, tokens: 256), values) == nil)
    }

    @Test(
        "lossless: shapes with and without the vector paths, and one-symbol, random and model-like values",
        arguments: [(1, 1, 1, 1), (1, 1, 3, 5), (1, 1, 4, 3), (2, 1, 32, 7), (3, 2, 32, 32), (2, 1, 256, 256)]
    )
    func shapes(layers: Int, heads: Int, headDim: Int, tokens: Int) throws {
        let layout = Self.layout(layers: layers, heads: heads, headDim: headDim)
        let count = layout.byteCount(tokens: tokens) / 2
        var random = SeededGenerator(seed: UInt64(count))
        let inputs: [[UInt16]] = [
            [UInt16](repeating: 0x3C00, count: count),
            (0..<count).map { _ in UInt16(truncatingIfNeeded: random.next()) },
            Self.realistic(count: count, seed: UInt64(layers * 1000 + tokens)),
        ]
        for values in inputs {
            let stream = try #require(Self.encode(values, codec: Self.lossless, layout: layout, tokens: tokens))
            #expect(stream.count <= KVCodec.bound(codec: Self.lossless, layout: layout, tokens: tokens))
            #expect(Self.mismatch(Self.decode(stream, codec: Self.lossless, layout: layout, tokens: tokens), values) == nil)
            #expect(Self.encode(values, codec: Self.lossless, layout: layout, tokens: tokens) == stream, "deterministic")
        }
    }

    @Test("lossless stores model-like KV in fewer bytes than float16, and one repeated value in about 11/16 of them")
    func smaller() throws {
        let layout = Self.layout(layers: 2, heads: 1, headDim: 256)
        let count = layout.byteCount(tokens: 256) / 2
        let realistic = try #require(
            Self.encode(Self.realistic(count: count, seed: 3), codec: Self.lossless, layout: layout, tokens: 256))
        #expect(Double(realistic.count) < 0.9 * Double(2 * count))
        // One symbol: a bit a value, plus the 10 mantissa bits as they are (11 of 16 bits).
        let constant = try #require(
            Self.encode([UInt16](repeating: 0xBC00, count: count), codec: Self.lossless, layout: layout, tokens: 256))
        #expect(Double(constant.count) < 0.7 * Double(2 * count))
    }

    @Test("the portable and SIMD decoders of every codec give the same values", arguments: [KVSerde.lossless, .q8, .cachegen])
    func decoderPaths(serde: KVSerde) throws {
        let layout = Self.layout(layers: 3, heads: 2, headDim: 64)
        let values = Self.realistic(count: layout.byteCount(tokens: 64) / 2, seed: 11)
        let codec = KVCodec.id(serde)
        let stream = try #require(Self.encode(values, codec: codec, layout: layout, tokens: 64))
        let back = try #require(Self.decode(stream, codec: codec, layout: layout, tokens: 64))
        #expect(back.count == values.count)
    }

    /// A version-2 lossless stream (the high bytes coded with zstd), as stores written before version 3
    /// hold them: 1 layer, 1 head of 32, 4 tokens; value i is the top half of i × 2,654,435,761.
    static let earlierStream = """
        TE1LQwECAQABAAAABAAAACAAAAAgAAAAFRwSGh4aHxgfGT0WHhceFBwVHRIaPhs/GBwZHRYeFx8cERk9Gj4XHxgcFR0WHhQbPxwS\
        GR4aHhgfGD0WHRceFOcAAAAAAAAAKLUv/WAAAO0GAMKOMymQtW16gt3llYqRjxDRsGJjcVARsVJuAikHK/bI3SmY8X2DPYdIoRa5\
        U9L7BGU/EY4HQCNokGp7aMJcNB/JIaIObf5WEw6h9+Al2AFd2/ZzJ046VjthU2+pt4oUW6dUuzUTXydelnwyQ2HugC/N4kW5Fc3S\
        aD8nzBnoIzlI1CE0fUPMDKFR9gKq9K6t+7kdD6ow+DJubzXiIOol9WYObX7kTjiF3tZMLOBEbeVD7cbcygs1Y+lYl0LYirfoAhcL\
        jcUjGRajaIOlyQTuxMsKBABALoA5MCKI2yAFADdupt0VTIS78ypimdEIQHev5h5VjMT7M2qi2RFIgLfvJl6VzQQ8c6viGVGIwPcv\
        Zp7VDUR8s+siWpHJADdvpt4VTYS88ytimtEJQHiv5x5WjcT8M2ui2hFJgLjvJ16WzQU8dKvjGlGJwPgvZ57WDUV8tOsjWpLJAThv\
        p94WTYW89CtjmtIJQXiw5x9WjsX8NGuj2hJJgbjwJ1+WzgU9dKzjG1KJwfgwZ5/WDkV9tOwjW5LKATlwp98WToW99Cxjm9IKQXmw\
        6B9Xjsb9NGyj2xJKgbnwKF+XzgY9dazkG1OKwfkwaJ/XDkZ9tewkW5PKAjlxqN8XToa99Sxkm9MKQg==
        """

    @Test("lossless streams of the earlier version 2 still decode; new streams are version 3")
    func earlierVersion() throws {
        let layout = Self.layout(layers: 1, heads: 1, headDim: 32)
        let values = (0..<256).map { UInt16(truncatingIfNeeded: (UInt32($0) &* 2_654_435_761) >> 16) }
        let earlier = try #require(Data(base64Encoded: Self.earlierStream)).map { $0 }
        #expect(earlier[5] == 2)
        #expect(Self.mismatch(Self.decode(earlier, codec: Self.lossless, layout: layout, tokens: 4), values) == nil)
        let stream = try #require(Self.encode(values, codec: Self.lossless, layout: layout, tokens: 4))
        #expect(stream[5] == 3)
        #expect(Self.mismatch(Self.decode(stream, codec: Self.lossless, layout: layout, tokens: 4), values) == nil)
    }

    @Test("hostile lossless streams: truncated, extended, bad code lengths, codes past their stream's end, a code that starts no symbol; any flipped byte is safe")
    func hostile() throws {
        let layout = Self.layout(layers: 1, heads: 1, headDim: 64)
        let tokens = 16
        let values = Self.realistic(count: layout.byteCount(tokens: tokens) / 2, seed: 5)
        let stream = try #require(Self.encode(values, codec: Self.lossless, layout: layout, tokens: tokens))
        func refused(_ bytes: [UInt8]) -> Bool { Self.decode(bytes, codec: Self.lossless, layout: layout, tokens: tokens) == nil }
        for length in 0..<stream.count { #expect(refused(Array(stream[..<length])), "truncated to \(length)") }
        #expect(refused(stream + [0]))
        // Body: header 24, side (2 planes × 64 channels), 32 bytes of code lengths, 4 stream sizes.
        let lengths = 24 + 2 * 64, sizes = lengths + 32
        var oversubscribed = stream
        for k in 0..<32 { oversubscribed[lengths + k] = 0x11 }  // 64 codes of one bit
        #expect(refused(oversubscribed))
        var tooLong = stream
        tooLong[lengths] = 0x0D  // a 13-bit code: longer than the decoder's table
        #expect(refused(tooLong))
        // One byte moved from stream 0 to stream 1: stream 0's codes now run past its end.
        var shifted = stream
        let first = Int(shifted[sizes]) | Int(shifted[sizes + 1]) << 8
        #expect(first > 0)
        shifted[sizes] = UInt8((first - 1) & 0xFF)
        shifted[sizes + 1] = UInt8((first - 1) >> 8)
        shifted[sizes + 8] &+= 1
        #expect(refused(shifted))
        // An incomplete code (symbol 0 in one bit, symbol 1 in two: "11" starts no code) and a stream 0
        // that starts with "11": the decoders take 12 bits for it, which the stream has room for, so only
        // the check for a bit pattern that starts no code refuses it (the row pass, scalar and vector).
        let one = [UInt16](repeating: 0x3C00, count: values.count)
        let plain = try #require(Self.encode(one, codec: Self.lossless, layout: layout, tokens: tokens))
        #expect(plain[lengths] == 0x01 && plain[sizes] == 64, "one symbol of one bit, 512 bits a stream")
        var incomplete = plain
        incomplete[lengths] = 0x21
        incomplete[sizes] = 66
        let streams = sizes + 32
        incomplete.replaceSubrange(streams..<(streams + 64), with: [0x03] + [UInt8](repeating: 0, count: 65))
        #expect(Self.decode(plain, codec: Self.lossless, layout: layout, tokens: tokens) == one)
        #expect(refused(incomplete))
        // Any single flipped bit decodes to something or is refused, never out of bounds (the sanitizer
        // runs check that); the portable and vector decoders agree on each.
        for offset in 0..<stream.count {
            var flipped = stream
            flipped[offset] ^= UInt8(1 << (offset % 8))
            _ = Self.decode(flipped, codec: Self.lossless, layout: layout, tokens: tokens)
        }
    }
}
