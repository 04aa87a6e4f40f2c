import CKernels
import GGUF
import Testing

@testable import Kernels

/// `lmc_matmul_q8` computes tiles of rows × tokens; a token's KV must not depend on its batch, so every
/// element must carry the bits of the one-token row dot (`lmc_matvec_q8`), and the AVX-512 VNNI tiles
/// the bits of the AVX2 ones.
@Suite("Batched int8 products")
struct BatchedProductsTests {
    /// Token counts around the tile widths, row ranges starting and ending at odd offsets.
    static let tokenCounts = [1, 2, 3, 5, 8, 13, 70]

    /// Q8 activations of `tokens` rows of `columns` random floats, by the quantizer `kind` (0: plain,
    /// 1: Q8_0-like, 2: Q8_K-like); `withMin` writes some −128 values, which the quantizers never do.
    static func activations(tokens: Int, columns: Int, kind: Int, withMin: Bool, seed: UInt64)
        -> (qs: [Int8], d: [Float], ds: [Float])
    {
        var rng = SplitMix(seed: seed)
        let x = (0..<(tokens * columns)).map { i in rng.float() * (i % 7 == 0 ? 3 : 1) }
        var qs = [Int8](repeating: 0, count: tokens * columns)
        var d = [Float](repeating: 0, count: tokens * columns / 32)
        var ds = d
        x.withUnsafeBufferPointer { xp in
            qs.withUnsafeMutableBufferPointer { q in
                d.withUnsafeMutableBufferPointer { dp in
                    ds.withUnsafeMutableBufferPointer { sp in
                        for t in 0..<tokens {
                            let (xi, qi) = (xp.baseAddress! + t * columns, q.baseAddress! + t * columns)
                            let (di, si) = (dp.baseAddress! + t * columns / 32, sp.baseAddress! + t * columns / 32)
                            switch kind {
                            case 0: lmc_quantize_q8(xi, Int64(columns), qi, di, si)
                            case 1: lmc_quantize_q8_0_like(xi, Int64(columns), qi, di, si)
                            default: lmc_quantize_q8_k_like(xi, Int64(columns), qi, di, si)
                            }
                        }
                    }
                }
            }
        }
        if withMin {
            for _ in 0..<20 { qs[Int(rng.next() % UInt64(qs.count))] = -128 }
        }
        return (qs, d, ds)
    }

    @Test(
        "each token of lmc_matmul_q8 has lmc_matvec_q8's bits, and AVX-512 VNNI gives AVX2's",
        arguments: [GGMLType.q5_0, .q8_0, .q4_K, .q6_K, .q4_0, .q5_K])
    func batchedEqualsOneToken(type: GGMLType) throws {
        defer { KernelISA.force(nil) }
        let superBlocks = type.blockSize == 256
        let rows = 29, rowRange = 3..<26
        for columns in superBlocks ? [256, 1024] : [96, 640] {
            let bytes = randomWeights(type, rows: rows, columns: columns, seed: UInt64(type.rawValue) * 100 + UInt64(columns))
            let rowBytes = bytes.count / rows
            for (index, tokens) in Self.tokenCounts.enumerated() {
                let kind = superBlocks ? (index == 2 ? 0 : 2) : index % 2
                let act = Self.activations(
                    tokens: tokens, columns: columns, kind: kind, withMin: index == 4, seed: UInt64(31 * columns + tokens))
                let nd = columns / 32
                var byISA: [KernelISA: [UInt32]] = [:]
                for isa in KernelISA.allCases where isa.rawValue <= KernelISA.best.rawValue {
                    KernelISA.force(isa)
                    let ldy = rows + 2
                    var batched = [Float](repeating: -7, count: tokens * ldy)
                    var single = [Float](repeating: -7, count: rowRange.count)
                    bytes.withUnsafeBytes { w in
                        lmc_matmul_q8(
                            Int32(type.rawValue), w.baseAddress!, Int64(rowBytes), Int64(rowRange.lowerBound),
                            Int64(rowRange.upperBound), Int64(columns), Int64(tokens), act.qs, act.d, act.ds, &batched,
                            Int64(ldy))
                    }
                    for t in 0..<tokens {
                        bytes.withUnsafeBytes { w in
                            act.qs.withUnsafeBufferPointer { q in
                                act.d.withUnsafeBufferPointer { d in
                                    act.ds.withUnsafeBufferPointer { s in
                                        lmc_matvec_q8(
                                            Int32(type.rawValue), w.baseAddress!, Int64(rowBytes), Int64(rowRange.lowerBound),
                                            Int64(rowRange.upperBound), Int64(columns), q.baseAddress! + t * columns,
                                            d.baseAddress! + t * nd, s.baseAddress! + t * nd, &single)
                                    }
                                }
                            }
                        }
                        let inBatch = batched[(t * ldy + rowRange.lowerBound)..<(t * ldy + rowRange.upperBound)]
                        #expect(
                            inBatch.map(\.bitPattern) == single.map(\.bitPattern),
                            "\(isa), \(columns) columns, token \(t) of \(tokens)")
                    }
                    // Elements outside the row range stay untouched.
                    #expect(batched[0..<rowRange.lowerBound].allSatisfy { $0 == -7 })
                    byISA[isa] = batched.map(\.bitPattern)
                }
                if let avx2 = byISA[.avx2], let vnni = byISA[.avx512vnni] {
                    #expect(vnni == avx2, "\(columns) columns, \(tokens) tokens")
                }
            }
        }
    }

    @Test("the activation quantizers' AVX2 path writes the portable path's bytes and scales")
    func quantizersAgree() throws {
        defer { KernelISA.force(nil) }
        try #require(KernelISA.best.rawValue >= KernelISA.avx2.rawValue, "needs AVX2 (CI's machines have it)")
        var rng = SplitMix(seed: 7)
        let columns = 1024
        for trial in 0..<40 {
            // Plain values, tiny ones, zeros, subnormals, repeated extremes of either sign (the first
            // one sets Q8_K's scale), an all-zero block, and rounding ties: with 127 leading each block
            // the multipliers are exactly ±1, so the half-integers stay halves.
            var x = (0..<columns).map { _ in rng.float() * (trial % 3 == 0 ? 1e-3 : 6) }
            for i in 0..<columns {
                switch rng.next() % 40 {
                case 0: x[i] = 0
                case 1: x[i] = Float.leastNormalMagnitude / 64  // subnormal
                case 2 where i > 0: x[i] = -x[i - 1]
                case 3...12 where trial % 2 == 0: x[i] = Float(Int(rng.next() % 253) - 126) + 0.5
                default: break
                }
            }
            if trial % 2 == 0 { for b in 0..<(columns / 32) { x[b * 32] = 127 } }
            if trial % 4 == 1 { for i in 0..<256 { x[i] = 0 } }
            if trial % 5 == 1 { for i in 256..<512 { x[i] = i % 2 == 0 ? 2.5 : -2.5 } }
            for kind in 0..<2 {
                var results: [[UInt32]] = []
                for isa in [KernelISA.generic, .avx2] {
                    KernelISA.force(isa)
                    var qs = [Int8](repeating: 0, count: columns)
                    var d = [Float](repeating: 0, count: columns / 32)
                    var ds = d
                    if kind == 0 {
                        lmc_quantize_q8_0_like(x, Int64(columns), &qs, &d, &ds)
                    } else {
                        lmc_quantize_q8_k_like(x, Int64(columns), &qs, &d, &ds)
                    }
                    results.append(qs.map { UInt32(UInt8(bitPattern: $0)) } + d.map(\.bitPattern) + ds.map(\.bitPattern))
                }
                #expect(results[0] == results[1], "trial \(trial), \(kind == 0 ? "Q8_0" : "Q8_K")-like")
            }
        }
    }
}
