import Foundation
import Testing

@testable import Kernels

/// The pieces of llama.cpp's CPU arithmetic that the engine reproduces value for value (its GELU
/// table, its softmax, its activation quantization), so that its choice between near-tied tokens
/// follows llama.cpp's wherever the inputs are the same.
@Suite("llama.cpp arithmetic")
struct LlamaArithmeticTests {
    /// GELU as a table entry: the half-precision input, GELU in Float with `tanhf`, the result rounded
    /// to half precision.
    static func tableGELU(_ x: Float) -> Float {
        let h = Float(Float16(x))
        let c: Float = 0.79788456080286535587989211986876
        // 1 + a·x·x as one fused multiply-add, as llama.cpp's build computes it.
        let g = 0.5 * h * (1 + tanh(c * h * Float(1).addingProduct(0.044715 * h, h)))
        return Float(Float16(g))
    }

    @Test("GELU read from the half-precision table: exactly its entries, bypassed at and beyond ±10",
          arguments: KernelISA.allCases)
    func geluTable(isa: KernelISA) {
        KernelISA.force(isa)
        defer { KernelISA.force(nil) }
        var rng = SplitMix(seed: 41)
        let edges: [Float] = [-12, -10, -9.999, -1e-3, 0, 3e-5, 9.999, 10, 10.5, 25]
        let x = edges + (0..<1003).map { _ in rng.float() * 12 }
        let up = x.indices.map { _ in rng.float() * 3 }
        var gate = x
        Ops.gegluTanh(gate: &gate, up: up, count: x.count, halfTable: true)
        for i in x.indices {
            let g: Float = x[i] <= -10 ? 0 : (x[i] >= 10 ? x[i] : Self.tableGELU(x[i]))
            #expect(gate[i] == g * up[i], "x = \(x[i]): \(gate[i]) vs \(g * up[i])")
        }
        // Without the table, GELU is computed in Float: within rounding of the formula.
        var exact = x
        Ops.gegluTanh(gate: &exact, up: up, count: x.count, halfTable: false)
        for i in x.indices where abs(x[i]) < 10 {
            let v = Double(x[i])
            let gelu = 0.5 * v * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)))
            #expect(abs(Double(exact[i]) - gelu * Double(up[i])) <= 1e-5 * max(1, abs(gelu * Double(up[i]))))
        }
    }

    @Test("softmax as llama.cpp computes a row: the formula to 1e-6, −∞ is 0, any block phase, both ISAs")
    func softmaxRow() {
        var rng = SplitMix(seed: 43)
        let scores = (0..<77).map { i in i == 30 ? -Float.infinity : rng.float() * 30 }
        let m = scores.map(Double.init).max()!
        let total = scores.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }
        var results: [[Float]] = []
        for isa in KernelISA.allCases {
            KernelISA.force(isa)
            defer { KernelISA.force(nil) }
            for position in [0, 1, 5, 8, 13, 511] {
                var row = scores
                Ops.softmax(&row, count: row.count, rowPosition: position)
                #expect(row[30] == 0)
                for i in row.indices {
                    let expected = Foundation.exp(Double(scores[i]) - m) / total
                    #expect(abs(Double(row[i]) - expected) <= 1e-6 * max(expected, 1e-3), "element \(i)")
                }
                results.append(row)
            }
        }
        // The block phase changes only the order of the sum: results agree to a few ulps.
        for row in results.dropFirst() {
            for i in row.indices { #expect(abs(row[i] - results[0][i]) <= 4 * results[0][i].ulp) }
        }
    }

    @Test("activations quantized as ggml's x86 Q8_0: multiplier 127/amax, halves to even, half-precision scale")
    func q8_0Activation() {
        #expect(QuantizedActivation.llamaStyle)
        // Block 1: amax 127, so values are quantized as they are and the .5 cases show the rounding.
        var x: [Float] = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.25]
        x += [Float](repeating: 0.25, count: 24)
        // Block 2: an amax whose 127/amax differs from 1/(amax/127) in the last bit.
        var rng = SplitMix(seed: 47)
        let amax: Float = 0.5017509
        #expect(127 / amax != 1 / (amax / 127))
        x += [amax] + (1..<32).map { _ in rng.float() * amax }
        let activation = QuantizedActivation(capacity: x.count)
        activation.quantize(x, count: x.count, superBlocks: false)
        #expect(Array(UnsafeBufferPointer(start: activation.qs, count: 8)) == [127, 0, 2, 2, 0, -2, -2, 3])
        #expect(activation.d[0] == 1)
        let multiplier: Float = 127 / amax
        for i in 32..<64 {
            #expect(Int(activation.qs[i]) == Int(lrintf(x[i] * multiplier)), "value \(i)")
        }
        #expect(activation.d[1] == Float(Float16(amax / 127)))
    }
}
