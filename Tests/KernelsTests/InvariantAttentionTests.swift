import CKernels
import Foundation
import Testing

/// `lmc_attend` (Attention.c): a query's output must have the same bits whatever else is in the call
/// (one query or many, in any order, in any grouping), on every code path (AVX-512, AVX2, portable),
/// and equal the arithmetic documented in Attention.c, which is written out again here in Swift.
@Suite("InvariantAttention")
struct InvariantAttentionTests {
    struct Config: Sendable, CustomStringConvertible {
        var headDim: Int, kvHeads: Int, offsetHeads: Int, queries: Int, tokens: Int
        var description: String {
            "hd \(headDim) KV\(kvHeads) at head \(offsetHeads), \(queries) queries over \(tokens) tokens"
        }
    }

    static let configs: [Config] = [
        Config(headDim: 16, kvHeads: 1, offsetHeads: 0, queries: 45, tokens: 700),
        Config(headDim: 32, kvHeads: 2, offsetHeads: 0, queries: 45, tokens: 700),
        Config(headDim: 64, kvHeads: 2, offsetHeads: 1, queries: 37, tokens: 600),
        Config(headDim: 256, kvHeads: 1, offsetHeads: 0, queries: 23, tokens: 560),
        Config(headDim: 256, kvHeads: 2, offsetHeads: 1, queries: 23, tokens: 560),
    ]

    /// Pages of 256 positions whose rows hold every KV head (row stride kvHeads · hd); keys and values are
    /// rounded to half precision as the engine stores them; one KV head is viewed at `offsetHeads · hd`.
    final class Fixture {
        let config: Config
        let pageSize: Int
        var kPages: [UnsafeMutablePointer<Float>] = []
        var vPages: [UnsafeMutablePointer<Float>] = []
        var kPointers: UnsafeMutablePointer<UnsafePointer<Float>?>
        var vPointers: UnsafeMutablePointer<UnsafePointer<Float>?>
        var q: [Float] = []
        var first: [Int64] = []
        var last: [Int64] = []
        let scale: Float

        init(_ config: Config, seed: UInt64) {
            self.config = config
            let pageSize = 256
            self.pageSize = pageSize
            let hd = config.headDim
            scale = 1 / Float(hd).squareRoot()
            let rowStride = config.kvHeads * hd
            var rng = SplitMix(seed: seed)
            let pages = (config.tokens + pageSize - 1) / pageSize
            kPointers = .allocate(capacity: pages)
            vPointers = .allocate(capacity: pages)
            for p in 0..<pages {
                let k = UnsafeMutablePointer<Float>.allocate(capacity: pageSize * rowStride)
                let v = UnsafeMutablePointer<Float>.allocate(capacity: pageSize * rowStride)
                for i in 0..<(pageSize * rowStride) {
                    k[i] = lmc_round_f16_scalar(rng.float())
                    v[i] = lmc_round_f16_scalar(rng.float())
                }
                kPages.append(k)
                vPages.append(v)
                kPointers[p] = UnsafePointer(k)
                vPointers[p] = UnsafePointer(v)
            }
            // Scores spread over a few units, so that the softmax is neither flat nor one-hot.
            q = (0..<(config.queries * hd)).map { _ in rng.float() * 5 }
            // Ranges as the engine makes them: causal, 512-token windows, short tails, heads of one token
            // sharing a range; many cross the page boundary at 256.
            for i in 0..<config.queries {
                let position = Int64(config.tokens - 1 - Int(rng.next() % UInt64(config.tokens / 3)))
                var range: (Int64, Int64)
                switch rng.next() % 4 {
                case 0: range = (0, position)
                case 1: range = (max(0, position - 511), position)
                case 2: range = (max(0, position - Int64(rng.next() % 40)), position)
                default:
                    let a = Int64(rng.next() % UInt64(config.tokens))
                    range = (a, a + Int64(rng.next() % UInt64(Int64(config.tokens) - a)))
                }
                if i % 4 != 0 && rng.next() % 2 == 0 { range = (first[i - 1], last[i - 1]) }
                first.append(range.0)
                last.append(range.1)
            }
        }

        deinit {
            kPages.forEach { $0.deallocate() }
            vPages.forEach { $0.deallocate() }
            kPointers.deallocate()
            vPointers.deallocate()
        }

        var maxSpan: Int64 { zip(first, last).map { $1 - $0 + 1 }.max() ?? 1 }

        func view(_ pages: UnsafeMutablePointer<UnsafePointer<Float>?>) -> lmc_kv_view {
            lmc_kv_view(
                pages: UnsafePointer(pages), page_size: Int64(pageSize),
                row_stride: Int64(config.kvHeads * config.headDim), offset: Int64(config.offsetHeads * config.headDim))
        }

        func keyRow(_ t: Int64) -> UnsafeMutablePointer<Float> { row(kPages, t) }
        func valueRow(_ t: Int64) -> UnsafeMutablePointer<Float> { row(vPages, t) }
        private func row(_ pages: [UnsafeMutablePointer<Float>], _ t: Int64) -> UnsafeMutablePointer<Float> {
            let t = Int(t)
            return pages[t / pageSize] + (t % pageSize) * config.kvHeads * config.headDim
                + config.offsetHeads * config.headDim
        }

        /// lmc_attend over the queries `indices` (in that order), one output row per index.
        func attend(_ indices: [Int]) -> [[Float]] {
            let hd = config.headDim
            var qs: [Float] = []
            for i in indices { qs += q[(i * hd)..<((i + 1) * hd)] }
            let f = indices.map { first[$0] }, l = indices.map { last[$0] }
            let m = Int64(indices.count)
            var scratch = [Float](repeating: 0, count: Int(lmc_attend_scratch_floats(m, maxSpan)))
            // Output rows 2·hd apart with NaN between them: the stride is honored and nothing else written.
            var out = [Float](repeating: .nan, count: indices.count * 2 * hd)
            lmc_attend(
                qs, Int64(hd), m, f, l, view(kPointers), view(vPointers), Int64(hd), scale, &out, Int64(2 * hd),
                &scratch)
            for j in indices.indices {
                let gapUntouched = out[(2 * j + 1) * hd..<(2 * j + 2) * hd].allSatisfy { $0.isNaN }
                #expect(gapUntouched)
            }
            return indices.indices.map { j in Array(out[(2 * j * hd)..<((2 * j + 1) * hd)]) }
        }
    }

    /// Every code path this CPU has: portable, AVX2, AVX-512.
    static var levels: [Int32] { Array(0...lmc_attend_level()) }

    static func onLevel<T>(_ level: Int32, _ body: () -> T) -> T {
        lmc_attend_force_level(level)
        defer { lmc_attend_force_level(-1) }
        return body()
    }

    @Test("a query's output has the same bits alone, in threes, and in one shuffled call", arguments: configs)
    func batchInvariance(config: Config) {
        let fixture = Fixture(config, seed: 11)
        let n = config.queries
        var rng = SplitMix(seed: 12)
        var order = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        for level in Self.levels {
            Self.onLevel(level) {
                let all = fixture.attend(Array(0..<n))
                let shuffled = fixture.attend(order)
                for (j, i) in order.enumerated() {
                    #expect(shuffled[j].map(\.bitPattern) == all[i].map(\.bitPattern), "level \(level) query \(i)")
                }
                for i0 in stride(from: 0, to: n, by: 3) {
                    let group = Array(i0..<min(n, i0 + 3))
                    for (j, i) in group.enumerated() {
                        #expect(fixture.attend(group)[j].map(\.bitPattern) == all[i].map(\.bitPattern))
                    }
                }
                for i in 0..<n {
                    #expect(fixture.attend([i])[0].map(\.bitPattern) == all[i].map(\.bitPattern), "level \(level) query \(i)")
                }
            }
        }
    }

    @Test("AVX-512, AVX2 and portable code give the documented arithmetic's bits", arguments: configs)
    func sameBitsOnEveryPath(config: Config) {
        let fixture = Fixture(config, seed: 21)
        let indices = Array(0..<config.queries)
        let model = indices.map { Self.model(fixture, $0) }
        for level in Self.levels {
            let out = Self.onLevel(level) { fixture.attend(indices) }
            for i in indices {
                #expect(out[i].map(\.bitPattern) == model[i].map(\.bitPattern), "level \(level) query \(i)")
            }
        }
    }

    @Test("outputs are within 1e-3 (relative) of attention in double precision", arguments: configs)
    func closeToDouble(config: Config) {
        let fixture = Fixture(config, seed: 31)
        let hd = config.headDim
        let out = fixture.attend(Array(0..<config.queries))
        var worst = 0.0
        for i in 0..<config.queries {
            var scores: [Double] = []
            for t in fixture.first[i]...fixture.last[i] {
                let k = fixture.keyRow(t)
                var s = 0.0
                for d in 0..<hd { s += Double(fixture.q[i * hd + d]) * Double(k[d]) }
                scores.append(s * Double(fixture.scale))
            }
            let mx = scores.max()!
            let e = scores.map { Foundation.exp($0 - mx) }
            let sum = e.reduce(0, +)
            var ref = [Double](repeating: 0, count: hd), magnitude = ref
            for (j, t) in (fixture.first[i]...fixture.last[i]).enumerated() {
                let v = fixture.valueRow(t)
                for d in 0..<hd {
                    ref[d] += e[j] / sum * Double(v[d])
                    magnitude[d] += e[j] / sum * abs(Double(v[d]))
                }
            }
            // Relative to Σ p·|v|: the scale of the terms whose sum out[d] is.
            for d in 0..<hd { worst = max(worst, abs(Double(out[i][d]) - ref[d]) / magnitude[d]) }
        }
        // Probabilities are rounded to half precision (2^-11 relative each, as llama.cpp rounds them for
        // its F16 value cache): measured 2–3e-4; without that rounding the kernel is within 1e-6.
        #expect(worst < 1e-3)
    }

    @Test("an empty range gives zeros; the exponential is within 2 ulp and follows its definition")
    func edges() {
        let fixture = Fixture(Config(headDim: 16, kvHeads: 1, offsetHeads: 0, queries: 2, tokens: 300), seed: 41)
        fixture.first[1] = 5
        fixture.last[1] = 4
        for level in Self.levels {
            let out = Self.onLevel(level) { fixture.attend([0, 1]) }
            let zeros = out[1].allSatisfy { $0 == 0 && $0.sign == .plus }
            #expect(zeros)
            #expect(out[0].map(\.bitPattern) == Self.onLevel(level) { fixture.attend([0]) }[0].map(\.bitPattern))
        }
        var x: Float = -90
        while x <= 0 {
            let e = lmc_attend_exp(x)
            #expect(e.bitPattern == Self.exp(x).bitPattern)
            if x >= -87 { #expect(abs(Double(e) - Foundation.exp(Double(x))) <= 2 * Double(e.ulp)) }
            x += 0.0137
        }
        #expect(lmc_attend_exp(-.infinity) == 0)
        #expect(lmc_attend_exp(0) == 1)
    }

    // MARK: The documented arithmetic, step by step (Swift does not fuse operations unless asked)

    static func exp(_ x: Float) -> Float {
        let xc = x < -87 ? -87 : x
        let n = (xc * 1.44269504088896341 + 12_582_912) - 12_582_912
        var r = xc.addingProduct(n, -0.693359375)
        r = r.addingProduct(n, 2.12194440e-4)
        var p: Float = 1.9875691500e-4
        for c: Float in [1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1] {
            p = c.addingProduct(p, r)
        }
        let y = r.addingProduct(p, r * r) + 1
        let scaled = y * Float(bitPattern: UInt32(Int32(n) + 127) << 23)
        return x < -87 ? 0 : scaled
    }

    static func model(_ fixture: Fixture, _ i: Int) -> [Float] {
        let hd = fixture.config.headDim
        let q = Array(fixture.q[(i * hd)..<((i + 1) * hd)])
        let range = fixture.first[i]...fixture.last[i]
        var s: [Float] = range.map { t in
            let k = fixture.keyRow(t)
            var lanes = [Float](repeating: 0, count: 16)
            for d in 0..<hd { lanes[d % 16] = lanes[d % 16].addingProduct(q[d], k[d]) }
            let r8 = (0..<8).map { lanes[$0] + lanes[$0 + 8] }
            let r4 = (0..<4).map { r8[$0] + r8[$0 + 4] }
            let r2 = (0..<2).map { r4[$0] + r4[$0 + 2] }
            return (r2[0] + r2[1]) * fixture.scale
        }
        let mx = s.max()!
        s = s.map { Self.exp($0 - mx) }
        var sum = 0.0
        for e in s { sum += Double(e) }
        let inv = Float(1 / sum)
        var out = [Float](repeating: 0, count: hd)
        for (j, t) in range.enumerated() {
            let v = fixture.valueRow(t)
            let p = Float(Float16(s[j] * inv))
            for d in 0..<hd { out[d] = out[d].addingProduct(p, v[d]) }
        }
        return out
    }
}
