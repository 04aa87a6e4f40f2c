import Testing

@testable import Kernels

/// Paged K/V filled with deterministic values, plus a naive attention for reference.
final class PagedFixture {
    let pageSize: Int, rowStride: Int, tokens: Int
    var kPages: [UnsafeMutablePointer<Float>] = []
    var vPages: [UnsafeMutablePointer<Float>] = []

    init(tokens: Int, kvHeads: Int, headDim: Int, pageSize: Int, seed: UInt64) {
        self.pageSize = pageSize
        self.rowStride = kvHeads * headDim
        self.tokens = tokens
        var rng = SplitMix(seed: seed)
        for _ in 0..<((tokens + pageSize - 1) / pageSize) {
            let k = UnsafeMutablePointer<Float>.allocate(capacity: pageSize * rowStride)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: pageSize * rowStride)
            for i in 0..<(pageSize * rowStride) {
                k[i] = rng.float()
                v[i] = rng.float()
            }
            kPages.append(k)
            vPages.append(v)
        }
    }

    deinit {
        kPages.forEach { $0.deallocate() }
        vPages.forEach { $0.deallocate() }
    }

    var keys: KVPages { KVPages(pages: kPages, pageSize: pageSize, rowStride: rowStride) }
    var values: KVPages { KVPages(pages: vPages, pageSize: pageSize, rowStride: rowStride) }

    /// Naive attention of one query head at `position`, masked by the documented rule.
    func reference(q: ArraySlice<Float>, head: Int, position: Int, shape: AttentionShape) -> [Double] {
        let g = head / (shape.heads / shape.kvHeads)
        let hd = shape.headDim
        var scores: [(Int, Double)] = []
        for k in 0...position where shape.window == 0 || position - k < shape.window {
            let row = keys.row(k) + g * hd
            var s = 0.0
            for i in 0..<hd { s += Double(q[q.startIndex + i]) * Double(row[i]) }
            scores.append((k, s * Double(shape.scale)))
        }
        let m = scores.map(\.1).max()!
        let e = scores.map { ($0.0, Foundation.exp($0.1 - m)) }
        let sum = e.reduce(0) { $0 + $1.1 }
        var out = [Double](repeating: 0, count: hd)
        for (k, p) in e {
            let row = values.row(k) + g * hd
            for i in 0..<hd { out[i] += p / sum * Double(row[i]) }
        }
        return out
    }
}

import Foundation

@Suite("Attention")
struct AttentionTests {
    struct Config: Sendable, CustomStringConvertible {
        var heads: Int, kvHeads: Int, window: Int, tokens: Int, first: Int
        var description: String { "H\(heads) KV\(kvHeads) window \(window) tokens \(first)..<\(first + tokens)" }
    }

    static let configs: [Config] = [
        Config(heads: 4, kvHeads: 1, window: 0, tokens: 70, first: 0),
        Config(heads: 4, kvHeads: 1, window: 16, tokens: 70, first: 0),
        Config(heads: 4, kvHeads: 2, window: 0, tokens: 40, first: 25),
        Config(heads: 6, kvHeads: 2, window: 7, tokens: 33, first: 30),
        Config(heads: 2, kvHeads: 2, window: 100, tokens: 90, first: 0),
    ]

    @Test("prefill attention equals naive causal/sliding-window attention", arguments: configs)
    func prefill(config: Config) {
        let hd = 32
        let total = config.first + config.tokens
        let fixture = PagedFixture(tokens: total, kvHeads: config.kvHeads, headDim: hd, pageSize: 16, seed: 1)
        let shape = AttentionShape(
            heads: config.heads, kvHeads: config.kvHeads, headDim: hd, window: config.window, scale: 0.3)
        var rng = SplitMix(seed: 2)
        let q = (0..<(config.tokens * config.heads * hd)).map { _ in rng.float() }
        var out = [Float](repeating: .nan, count: q.count)
        out.withUnsafeMutableBufferPointer { o in
            Attention.prefill(
                q: q, count: config.tokens, firstPosition: config.first, keys: fixture.keys,
                values: fixture.values, shape: shape, out: o.baseAddress!, scratch: AttentionScratch())
        }
        var worst = 0.0
        for t in 0..<config.tokens {
            for h in 0..<config.heads {
                let base = (t * config.heads + h) * hd
                let ref = fixture.reference(
                    q: q[base..<(base + hd)], head: h, position: config.first + t, shape: shape)
                for i in 0..<hd { worst = max(worst, abs(Double(out[base + i]) - ref[i])) }
            }
        }
        // Probabilities are rounded to half precision (as llama.cpp does) unless LMCACHE_EMULATE_HALF=0.
        #expect(worst < (Ops.emulateHalfPrecision ? 2e-3 : 1e-4))
    }

    @Test("decode attention equals the naive reference and sees exactly the window", arguments: configs)
    func decode(config: Config) {
        let hd = 32
        let position = config.first + config.tokens - 1
        let fixture = PagedFixture(tokens: position + 1, kvHeads: config.kvHeads, headDim: hd, pageSize: 16, seed: 3)
        let shape = AttentionShape(
            heads: config.heads, kvHeads: config.kvHeads, headDim: hd, window: config.window, scale: 0.3)
        var rng = SplitMix(seed: 4)
        let q = (0..<(config.heads * hd)).map { _ in rng.float() }
        var out = [Float](repeating: .nan, count: q.count)
        out.withUnsafeMutableBufferPointer { o in
            Attention.decode(
                q: q, position: position, keys: fixture.keys, values: fixture.values, shape: shape,
                out: o.baseAddress!, scratch: AttentionScratch())
        }
        for h in 0..<config.heads {
            let ref = fixture.reference(q: q[(h * hd)..<((h + 1) * hd)], head: h, position: position, shape: shape)
            for i in 0..<hd { #expect(abs(Double(out[h * hd + i]) - ref[i]) < 1e-4) }
        }
    }

    @Test("sliding window: a key exactly `window` tokens back is masked, one closer is seen")
    func windowBoundary() {
        let shape = AttentionShape(heads: 1, kvHeads: 1, headDim: 4, window: 512, scale: 1)
        #expect(shape.firstKey(for: 511) == 0)
        #expect(shape.firstKey(for: 512) == 1)
        #expect(AttentionShape(heads: 1, kvHeads: 1, headDim: 4, window: 0, scale: 1).firstKey(for: 9000) == 0)
    }
}

@Suite("Ops")
struct OpsTests {
    @Test("RMSNorm of many rows gives each row the bits of the row alone, in place or not")
    func rmsNormRows() {
        // 11 rows: two groups of four and a remainder of three; 640 values with a spread of magnitudes.
        let rows = 11, count = 640
        var rng = SplitMix(seed: 7)
        let x = (0..<(rows * count)).map { i in rng.float() * (i % 13 == 0 ? 40 : 1) }
        let w = (0..<count).map { _ in rng.float() + 0.5 }
        for weight in [w, nil] as [[Float]?] {
            var batched = [Float](repeating: 0, count: rows * count)
            Ops.rmsNorm(x, weight: weight, count: count, rows: rows, eps: 1e-6, out: &batched)
            var inPlace = x
            inPlace.withUnsafeMutableBufferPointer { p in
                Ops.rmsNorm(p.baseAddress!, weight: weight, count: count, rows: rows, eps: 1e-6, out: p.baseAddress!)
            }
            for r in 0..<rows {
                let row = Array(x[(r * count)..<((r + 1) * count)])
                // The definition: the squares summed in order in Double, then one scale per row.
                var sum = 0.0
                for v in row { sum += Double(v * v) }
                let scale = 1 / (Float(sum / Double(count)) + 1e-6).squareRoot()
                let expected = (0..<count).map { i in weight.map { row[i] * scale * $0[i] } ?? row[i] * scale }
                var alone = [Float](repeating: 0, count: count)
                Ops.rmsNorm(row, weight: weight, count: count, eps: 1e-6, out: &alone)
                let got = Array(batched[(r * count)..<((r + 1) * count)])
                #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "row \(r)")
                #expect(alone.map(\.bitPattern) == expected.map(\.bitPattern), "row \(r) alone")
                #expect(Array(inPlace[(r * count)..<((r + 1) * count)]).map(\.bitPattern) == expected.map(\.bitPattern))
            }
        }
    }

    @Test("RMSNorm, GELU-tanh, SiLU and softmax match their formulas", arguments: KernelISA.allCases)
    func elementwise(isa: KernelISA) {
        KernelISA.force(isa)
        defer { KernelISA.force(nil) }
        var x: [Float] = [1, -2, 3, 0.5]
        let w: [Float] = [1, 2, 0.5, 1]
        var y = [Float](repeating: 0, count: 4)
        Ops.rmsNorm(x, weight: w, count: 4, eps: 1e-6, out: &y)
        let rms = ((1 + 4 + 9 + 0.25) / 4.0 + 1e-6).squareRoot()
        for i in 0..<4 { #expect(abs(Double(y[i]) - Double(x[i]) / rms * Double(w[i])) < 1e-6) }

        var gate: [Float] = [-3, -0.5, 0, 0.7, 2, 12]
        let up: [Float] = [1, 2, 3, 4, 5, 6]
        let g0 = gate
        Ops.gegluTanh(gate: &gate, up: up, count: 6)
        for i in 0..<6 {
            let v = Double(g0[i])
            let gelu = 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
            // Input and output are rounded to half precision (llama.cpp's table) unless LMCACHE_EMULATE_HALF=0.
            let tolerance = Ops.emulateHalfPrecision ? 2e-3 * max(1, abs(gelu * Double(up[i]))) : 1e-5
            #expect(abs(Double(gate[i]) - gelu * Double(up[i])) < tolerance)
        }
        var s = g0
        Ops.swiglu(gate: &s, up: up, count: 6)
        for i in 0..<6 {
            let v = Double(g0[i])
            #expect(abs(Double(s[i]) - v / (1 + exp(-v)) * Double(up[i])) < 1e-5)
        }
        // Vector paths: 8 at a time plus a tail.
        var rng = SplitMix(seed: 31)
        var long = (0..<37).map { _ in rng.float() * 20 }
        let original = long
        Ops.softmax(&long, count: long.count)
        let m = original.map(Double.init).max()!
        let total = original.reduce(0.0) { $0 + exp(Double($1) - m) }
        for i in 0..<37 { #expect(abs(Double(long[i]) - exp(Double(original[i]) - m) / total) < 1e-6) }
        var g2 = (0..<41).map { _ in rng.float() * 6 }
        let g2Original = g2
        let ones = [Float](repeating: 1, count: 41)
        Ops.gegluTanh(gate: &g2, up: ones, count: 41)
        for i in 0..<41 {
            let v = Double(g2Original[i])
            let gelu = 0.5 * v * (1 + tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
            #expect(abs(Double(g2[i]) - gelu) < (Ops.emulateHalfPrecision ? 5e-3 * max(1, abs(gelu)) : 1e-5))
        }
        x = [1, 2, 3, -.infinity]
        Ops.softmax(&x, count: 4)
        #expect(x[3] == 0)
        #expect(abs(x.reduce(0, +) - 1) < 1e-6)
    }

    @Test("NEOX RoPE rotates pairs (i, i + d/2) by position · base^(−2i/d)")
    func rope() {
        let d = 8
        var x: [Float] = (0..<(2 * d)).map { Float($0) * 0.1 + 0.3 }
        let original = x
        let freqs = Ops.ropeFrequencies(dimensions: d, base: 10_000)
        Ops.rope(&x, heads: 2, headDim: d, position: 5, frequencies: freqs, style: .neox)
        for h in 0..<2 {
            for i in 0..<(d / 2) {
                let theta = 5 * pow(10_000, -2 * Double(i) / Double(d))
                let a = Double(original[h * d + i]), b = Double(original[h * d + i + d / 2])
                #expect(abs(Double(x[h * d + i]) - (a * cos(theta) - b * sin(theta))) < 1e-5)
                #expect(abs(Double(x[h * d + i + d / 2]) - (a * sin(theta) + b * cos(theta))) < 1e-5)
            }
        }
    }
}
