import CKernels
import Foundation
import GGUF
import Testing

@testable import Kernels

/// The products of `LMCACHE_MATMUL=llamacpp` (OrderedProducts.c): each is checked against a model of
/// llama.cpp's float steps written out here from its documented order, under both instruction sets
/// (the portable code must give the AVX2 code's bits). That the order is llama.cpp's own is checked
/// end to end against its recordings (LlamaOrderAgreementTests).
@Suite("llama.cpp summation order")
struct OrderedProductsTests {
    /// ((L0+L4) + (L2+L6)) + ((L1+L5) + (L3+L7)).
    static func lanesSum(_ l: [Float]) -> Float { ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])) }

    static func half(_ bytes: [UInt8], _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8))
    }

    /// Runs `body` once per instruction set on this thread, and checks that all give the same floats.
    static func sameOnEveryISA(_ body: () -> [Float]) -> [Float] {
        var results: [[Float]] = []
        for isa in KernelISA.allCases where isa.rawValue <= KernelISA.best.rawValue {
            KernelISA.force(isa)
            results.append(body())
            KernelISA.force(nil)
        }
        for r in results.dropFirst() { #expect(r.map(\.bitPattern) == results[0].map(\.bitPattern)) }
        return results[0]
    }

    @Test("Q8_0 and Q5_0: lanes of four bytes per block, one fused multiply-add per block (rows read in place, or unpacked for 4+ tokens)",
          arguments: [GGMLType.q8_0, .q5_0], [3, 9])
    func blocks32(type: GGMLType, tokens: Int) throws {
        let rows = 9, columns = 256
        let bytes = randomWeights(type, rows: rows, columns: columns, seed: 71)
        let w = try Dequantization.dequantize(type, bytes: bytes)
        var rng = SplitMix(seed: 72)
        let x = (0..<(tokens * columns)).map { _ in rng.float() }
        var qs = [Int8](repeating: 0, count: tokens * columns)
        var d = [Float](repeating: 0, count: tokens * columns / 32)
        var ds = d
        for t in 0..<tokens {
            x.withUnsafeBufferPointer { lmc_quantize_q8_0_like($0.baseAddress! + t * columns, Int64(columns), &qs[t * columns], &d[t * columns / 32], &ds[t * columns / 32]) }
        }
        let y = Self.sameOnEveryISA {
            var y = [Float](repeating: .nan, count: tokens * rows)
            bytes.withUnsafeBytes { lmc_matmul_ordered(Int32(type.rawValue), $0.baseAddress!, Int64(bytes.count / rows), 0, Int64(rows), Int64(columns), Int64(tokens), qs, d, &y, Int64(rows)) }
            return y
        }
        let blockBytes = type.typeSize, perRow = columns / 32
        for t in 0..<tokens {
            for r in 0..<rows {
                var lanes = [Float](repeating: 0, count: 8)
                for b in 0..<perRow {
                    let scale = Self.half(bytes, (r * perRow + b) * blockBytes) * d[t * perRow + b]
                    for l in 0..<8 {
                        var s = 0
                        for k in 0..<4 {
                            let i = b * 32 + 4 * l + k
                            // Integer weights: the dequantized value over the block scale.
                            let q = Int((w[r * columns + i] / Self.half(bytes, (r * perRow + b) * blockBytes)).rounded())
                            s += q * Int(qs[t * columns + i])
                        }
                        lanes[l] = lanes[l].addingProduct(Float(s), scale)
                    }
                }
                #expect(y[t * rows + r] == Self.lanesSum(lanes), "token \(t) row \(r)")
            }
        }
    }

    /// Unpacked K-quant weights: integer values (Q4_K: 0…15; Q6_K: −32…31) and per-super-block scales.
    static func integerWeights(_ type: GGMLType, _ bytes: [UInt8], rows: Int, columns: Int) -> [Int] {
        var out = [Int](repeating: 0, count: rows * columns)
        let blockBytes = type.typeSize
        for r in 0..<rows {
            for b in 0..<(columns / 256) {
                let o = (r * columns / 256 + b) * blockBytes
                for e in 0..<256 {
                    if type == .q4_K {
                        let byte = bytes[o + 16 + 32 * (e / 64) + e % 32]
                        out[r * columns + b * 256 + e] = Int(e % 64 < 32 ? byte & 15 : byte >> 4)
                    } else {
                        let h = e / 128, l = e % 32, g = (e % 128) / 32
                        let byte = bytes[o + 64 * h + l + 32 * (g & 1)]
                        let nib = Int(g < 2 ? byte & 15 : byte >> 4)
                        out[r * columns + b * 256 + e] = (nib | (Int(bytes[o + 128 + 32 * h + l] >> (2 * g)) & 3) << 4) - 32
                    }
                }
            }
        }
        return out
    }

    static func q4kScaleMin(_ s: ArraySlice<UInt8>, _ j: Int) -> (Int, Int) {
        let s = Array(s)
        if j < 4 { return (Int(s[j] & 63), Int(s[j + 4] & 63)) }
        return (Int(s[j + 4] & 0xF) | Int(s[j - 4] >> 6) << 4, Int(s[j + 4] >> 4) | Int(s[j] >> 6) << 4)
    }

    /// `tokens` rows of `x` as llama.cpp's K-quant activations; the first `grouped` rows as its 4×8
    /// quantizer does.
    static func superBlockActivations(_ x: [Float], tokens: Int, columns: Int, grouped: Int)
        -> (qs: [Int8], d: [Float], bsums: [Int16])
    {
        var qs = [Int8](repeating: 0, count: tokens * columns)
        var d = [Float](repeating: 0, count: tokens * columns / 256)
        var bsums = [Int16](repeating: 0, count: tokens * columns / 16)
        for t in 0..<tokens {
            x.withUnsafeBufferPointer {
                lmc_quantize_q8_k_ordered(
                    $0.baseAddress! + t * columns, Int64(columns), t < grouped ? 1 : 0, &qs[t * columns],
                    &d[t * columns / 256], &bsums[t * columns / 16])
            }
        }
        return (qs, d, bsums)
    }

    @Test("Q4_K: four steps per super-block for rows in groups of four, one for the rest", arguments: [5, 8, 11])
    func q4k(tokens: Int) {
        let rows = 8, columns = 512
        let bytes = randomWeights(.q4_K, rows: rows, columns: columns, seed: 81)
        let q = Self.integerWeights(.q4_K, bytes, rows: rows, columns: columns)
        var rng = SplitMix(seed: 82)
        let x = (0..<(tokens * columns)).map { _ in rng.float() }
        let grouped = tokens - tokens % 4
        let (qs, d, bsums) = Self.superBlockActivations(x, tokens: tokens, columns: columns, grouped: grouped)
        let y = Self.sameOnEveryISA {
            var y = [Float](repeating: .nan, count: tokens * rows)
            bytes.withUnsafeBytes { lmc_matmul_ordered_k(12, $0.baseAddress!, Int64(bytes.count / rows), 0, Int64(rows), Int64(columns), Int64(tokens), qs, d, bsums, &y, Int64(rows)) }
            return y
        }
        for t in 0..<tokens {
            for r in 0..<rows {
                var acc: Float = 0, accm: Float = 0
                for b in 0..<(columns / 256) {
                    let o = (r * columns / 256 + b) * 144
                    let sd = Self.half(bytes, o) * d[t * columns / 256 + b]
                    let sm = Self.half(bytes, o + 2) * d[t * columns / 256 + b]
                    var i1 = 0, i2 = 0
                    for j in 0..<8 {
                        let (sc, m) = Self.q4kScaleMin(bytes[(o + 4)..<(o + 16)], j)
                        var dot = 0, sum = 0
                        for i in 0..<32 {
                            let e = b * 256 + 32 * j + i
                            dot += q[r * columns + e] * Int(qs[t * columns + e])
                            sum += Int(qs[t * columns + e])
                        }
                        i1 += sc * dot
                        i2 += m * sum
                        if t < grouped && j % 2 == 1 || j == 7 {
                            acc = acc.addingProduct(Float(i1), sd)
                            accm = accm.addingProduct(Float(i2), sm)
                            i1 = 0
                            i2 = 0
                        }
                    }
                }
                #expect(y[t * rows + r] == acc - accm, "token \(t) row \(r)")
            }
        }
    }

    @Test("Q6_K: the tiled kernel's steps from 8 tokens, the row dot's lanes below", arguments: [3, 8])
    func q6k(tokens: Int) {
        let rows = 8, columns = 512
        let bytes = randomWeights(.q6_K, rows: rows, columns: columns, seed: 91)
        let q = Self.integerWeights(.q6_K, bytes, rows: rows, columns: columns)
        var rng = SplitMix(seed: 92)
        let x = (0..<(tokens * columns)).map { _ in rng.float() }
        let (qs, d, bsums) = Self.superBlockActivations(x, tokens: tokens, columns: columns, grouped: 0)
        let y = Self.sameOnEveryISA {
            var y = [Float](repeating: .nan, count: tokens * rows)
            bytes.withUnsafeBytes { lmc_matmul_ordered_k(14, $0.baseAddress!, Int64(bytes.count / rows), 0, Int64(rows), Int64(columns), Int64(tokens), qs, d, bsums, &y, Int64(rows)) }
            return y
        }
        for t in 0..<tokens {
            for r in 0..<rows {
                var buf: Float = 0
                var lanes = [Float](repeating: 0, count: 8)
                for b in 0..<(columns / 256) {
                    let o = (r * columns / 256 + b) * 210
                    let dw = Self.half(bytes, o + 208), da = d[t * columns / 256 + b]
                    func scale(_ e: Int) -> Int { Int(Int8(bitPattern: bytes[o + 192 + e / 16])) }
                    var s1 = 0
                    var lane = [Int](repeating: 0, count: 8)
                    for e in 0..<256 {
                        let p = scale(e) * q[r * columns + b * 256 + e] * Int(qs[t * columns + b * 256 + e])
                        s1 += p
                        lane[(e % 32) / 4] += p  // the same integer, however its parts are grouped
                    }
                    buf = buf.addingProduct(dw * Float(s1), da)
                    for l in 0..<8 {
                        // The row dot's lanes: unsigned codes, the offset of values 32L…32L+31 moved into lane L.
                        var value = lane[l]
                        for e in 0..<256 where (e % 32) / 4 == l { value += 32 * scale(e) * Int(qs[t * columns + b * 256 + e]) }
                        for e in (32 * l)..<(32 * l + 32) { value -= 32 * scale(e) * Int(qs[t * columns + b * 256 + e]) }
                        lanes[l] = lanes[l].addingProduct(dw * da, Float(value))
                    }
                }
                let expected = tokens >= 8 ? buf : ((lanes[4] + lanes[0]) + (lanes[6] + lanes[2])) + ((lanes[5] + lanes[1]) + (lanes[7] + lanes[3]))
                #expect(y[t * rows + r] == expected, "token \(t) row \(r)")
            }
        }
    }

    @Test("Q8_K activations: the row quantizer maps the first extreme value to −127, the grouped one a positive extreme")
    func superBlockQuantizers() {
        var x = (0..<256).map { Float($0 % 17) / 40 - 0.2 }
        x[10] = -2
        x[200] = 2
        var qs = [Int8](repeating: 0, count: 256)
        var d: Float = 0
        var bsums = [Int16](repeating: 0, count: 16)
        lmc_quantize_q8_k_ordered(x, 256, 0, &qs, &d, &bsums)
        #expect(qs[10] == -127 && qs[200] == 127 && d == 1 / (-127 / Float(-2)))
        lmc_quantize_q8_k_ordered(x, 256, 1, &qs, &d, &bsums)
        #expect(qs[10] == 127 && qs[200] == -127 && d == 1 / (-127 / Float(2)))
        for k in 0..<16 { #expect(Int(bsums[k]) == qs[(16 * k)..<(16 * k + 16)].reduce(0) { $0 + Int($1) }) }
    }

    /// llama.cpp's one-token row dot: slot i mod 32, then ((A0+A2) + (A1+A3)) per lane, then
    /// ((l0+l4) + (l1+l5)) + ((l2+l6) + (l3+l7)).
    static func slotsSum(_ s: [Float]) -> Float {
        let l: [Float] = (0..<8).map { (k: Int) -> Float in
            let even: Float = s[k] + s[16 + k]
            let odd: Float = s[8 + k] + s[24 + k]
            return even + odd
        }
        return ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
    }

    @Test("attention: q·k and P·V by index (batches: 8 lanes; one token: 32 slots), P·V by absolute cell across spans",
          arguments: [false, true])
    func attention(oneToken: Bool) {
        let hd = 64, cells = 45
        let slots = oneToken ? 32 : 8
        func sum(_ l: [Float]) -> Float { oneToken ? Self.slotsSum(l) : Self.lanesSum(l) }
        var rng = SplitMix(seed: 101)
        let q = (0..<hd).map { _ in Float(Float16(rng.float())) }
        let k = (0..<(cells * hd)).map { _ in Float(Float16(rng.float())) }
        let p = (0..<cells).map { i in i == 4 ? 0 : Float(Float16(abs(rng.float()))) }
        let first = 13  // absolute cell of p[0]
        let scores = Self.sameOnEveryISA {
            var s = [Float](repeating: .nan, count: cells)
            lmc_scores_ordered(q, k, Int64(hd), Int64(cells), Int64(hd), 0.125, oneToken ? 1 : 0, &s)
            return s
        }
        for c in 0..<cells {
            var lanes = [Float](repeating: 0, count: slots)
            for i in 0..<hd { lanes[i % slots] = lanes[i % slots].addingProduct(k[c * hd + i], q[i]) }
            #expect(scores[c] == 0.125 * sum(lanes))
        }
        let out = Self.sameOnEveryISA {
            // Two spans (as two KV pages), accumulated into the same slots.
            var lanes = [Float](repeating: 0, count: 32 * hd)
            let flag: Int32 = oneToken ? 1 : 0
            lmc_values_ordered_accumulate(p, k, Int64(hd), 9, Int64(first), Int64(hd), flag, &lanes)
            p.withUnsafeBufferPointer { pp in
                k.withUnsafeBufferPointer { kk in
                    lmc_values_ordered_accumulate(
                        pp.baseAddress! + 9, kk.baseAddress! + 9 * hd, Int64(hd), Int64(cells - 9), Int64(first + 9),
                        Int64(hd), flag, &lanes)
                }
            }
            var o = [Float](repeating: .nan, count: hd)
            lmc_values_ordered_finish(lanes, Int64(hd), flag, &o)
            return o
        }
        for i in 0..<hd {
            var lanes = [Float](repeating: 0, count: slots)
            for j in 0..<cells { lanes[(first + j) % slots] = lanes[(first + j) % slots].addingProduct(k[j * hd + i], p[j]) }
            #expect(out[i] == sum(lanes))
        }
    }

    @Test("one-token float rows: 32 slots, then the values past the last multiple of 32 one by one (in double for F16)")
    func oneTokenTail() {
        let n = 70, rows = 3
        var rng = SplitMix(seed: 121)
        let w = (0..<(rows * n)).map { _ in Float(Float16(rng.float())) }
        let x = (0..<n).map { _ in Float(Float16(rng.float())) }
        for tailDouble in [false, true] {
            let y = Self.sameOnEveryISA {
                var y = [Float](repeating: .nan, count: rows)
                lmc_dot_ordered_f32(w, Int64(n), Int64(rows), x, Int64(n), 1, tailDouble ? 1 : 0, &y)
                return y
            }
            for r in 0..<rows {
                var slots = [Float](repeating: 0, count: 32)
                for i in 0..<64 { slots[i % 32] = slots[i % 32].addingProduct(w[r * n + i], x[i]) }
                var expected = Self.slotsSum(slots)
                if tailDouble {
                    var d = Double(expected)
                    for i in 64..<n { d += Double(w[r * n + i] * x[i]) }
                    expected = Float(d)
                } else {
                    for i in 64..<n { expected += w[r * n + i] * x[i] }
                }
                #expect(y[r] == expected)
            }
        }
    }

    @Test("RoPE: angles by a running product from the position, rotations as fused multiply-adds", arguments: [true, false])
    func rope(neox: Bool) {
        let heads = 2, hd = 16, dims = 12, position = 37
        var rng = SplitMix(seed: 111)
        let x = (0..<(heads * hd)).map { _ in rng.float() }
        var y = x
        let factors: [Float] = (0..<(dims / 2)).map { 1 + Float($0) / 4 }
        let step = powf(10_000, -2 / Float(dims))
        factors.withUnsafeBufferPointer { lmc_rope_ordered(&y, Int64(heads), Int64(hd), Int64(dims), Int64(position), step, $0.baseAddress, neox ? 1 : 0) }
        var theta = Float(position)
        var expected = x
        for i in 0..<(dims / 2) {
            let angle = theta / factors[i]
            let c = cosf(angle), s = sinf(angle)
            for h in 0..<heads {
                let a = h * hd + (neox ? i : 2 * i), b = h * hd + (neox ? i + dims / 2 : 2 * i + 1)
                expected[a] = (-(x[b] * s)).addingProduct(x[a], c)
                expected[b] = (x[b] * c).addingProduct(x[a], s)
            }
            theta *= step
        }
        #expect(y == expected)
    }
}
