// Element-wise and row-wise operations of transformer layers: RMSNorm, RoPE, gated activations,
// softmax. All work on Float rows in place or into caller-provided memory.

internal import CKernels
internal import Foundation

/// Row operations used between the matrix products.
package enum Ops {
    /// Whether to round where llama.cpp's CPU backend works in half precision (K/V cache, q before q·k,
    /// attention probabilities, GELU table). On by default: together with ggml-style activation
    /// quantization it makes greedy decoding follow llama.cpp's through its near-ties (measured on the
    /// recorded continuations). `LMCACHE_EMULATE_HALF=0` turns it off (Float everywhere).
    /// With it on, every stored K/V value is exactly representable in half precision.
    package static let emulateHalfPrecision: Bool = ProcessInfo.processInfo.environment["LMCACHE_EMULATE_HALF"] != "0"

    /// Converts `count` floats to half-precision bit patterns.
    package static func convertToHalf(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt16>, count: Int) {
        lmc_convert_f32_to_f16(x, y, Int64(count))
    }

    /// Converts `count` half-precision bit patterns to floats.
    package static func convertFromHalf(_ x: UnsafePointer<UInt16>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        lmc_convert_f16_to_f32(x, y, Int64(count))
    }

    /// Rounds `count` floats to half precision in place.
    @inline(__always)
    package static func roundToHalf(_ x: UnsafeMutablePointer<Float>, count: Int) {
        lmc_round_f16(x, Int64(count))
    }

    /// RMSNorm of `rows` rows of `count` floats: out = x / sqrt(mean(x²) + eps) · weight.
    ///
    /// `out` may equal `x`. The sum of squares is accumulated in Double, as ggml does.
    package static func rmsNorm(
        _ x: UnsafePointer<Float>,
        weight: UnsafePointer<Float>?,
        count: Int,
        rows: Int = 1,
        eps: Float,
        out: UnsafeMutablePointer<Float>
    ) {
        if rows >= 32 && rows * count >= 32_768 {
            // Large batches: rows in parallel. Each share goes to the serial loop, never back here: with one
            // thread the share is the whole batch, and recursing would repeat this branch forever.
            Parallel.forRanges(rows) { range in
                rmsNormRows(x + range.lowerBound * count, weight: weight, count: count, rows: range.count, eps: eps,
                            out: out + range.lowerBound * count)
            }
            return
        }
        rmsNormRows(x, weight: weight, count: count, rows: rows, eps: eps, out: out)
    }

    /// ``rmsNorm(_:weight:count:rows:eps:out:)`` on the calling thread.
    static func rmsNormRows(
        _ x: UnsafePointer<Float>,
        weight: UnsafePointer<Float>?,
        count: Int,
        rows: Int,
        eps: Float,
        out: UnsafeMutablePointer<Float>
    ) {
        // Each row's sum of squares is one chain of dependent additions (ggml's order, in Double), so four
        // rows run side by side: the same additions in the same order per row, four chains in flight.
        var r = 0
        while r + 4 <= rows {
            let x0 = x + r * count, x1 = x0 + count, x2 = x1 + count, x3 = x2 + count
            var s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0
            for i in 0..<count {
                s0 += Double(x0[i] * x0[i])
                s1 += Double(x1[i] * x1[i])
                s2 += Double(x2[i] * x2[i])
                s3 += Double(x3[i] * x3[i])
            }
            rmsNormScale(x0, sum: s0, weight: weight, count: count, eps: eps, out: out + r * count)
            rmsNormScale(x1, sum: s1, weight: weight, count: count, eps: eps, out: out + (r + 1) * count)
            rmsNormScale(x2, sum: s2, weight: weight, count: count, eps: eps, out: out + (r + 2) * count)
            rmsNormScale(x3, sum: s3, weight: weight, count: count, eps: eps, out: out + (r + 3) * count)
            r += 4
        }
        for r in r..<rows {
            let xr = x + r * count
            var sum = 0.0
            for i in 0..<count { sum += Double(xr[i] * xr[i]) }
            rmsNormScale(xr, sum: sum, weight: weight, count: count, eps: eps, out: out + r * count)
        }
    }

    /// One row of ``rmsNormRows(_:weight:count:rows:eps:out:)`` from its sum of squares.
    @inline(__always)
    private static func rmsNormScale(
        _ xr: UnsafePointer<Float>,
        sum: Double,
        weight: UnsafePointer<Float>?,
        count: Int,
        eps: Float,
        out yr: UnsafeMutablePointer<Float>
    ) {
        let scale = 1 / (Float(sum / Double(count)) + eps).squareRoot()
        if let weight {
            for i in 0..<count { yr[i] = xr[i] * scale * weight[i] }
        } else {
            for i in 0..<count { yr[i] = xr[i] * scale }
        }
    }

    /// Angle factors θ_i = base^(−2i/dims) for i in 0..<dims/2, built by repeated multiplication as ggml does.
    package static func ropeFrequencies(dimensions: Int, base: Float) -> [Float] {
        let step = powf(base, -2 / Float(dimensions))
        var result = [Float]()
        result.reserveCapacity(dimensions / 2)
        var f: Float = 1
        for _ in 0..<(dimensions / 2) {
            result.append(f)
            f *= step
        }
        return result
    }

    /// Rotary position embedding as llama.cpp computes it (``Linear/Strategy/llamaOrder``): angles by a
    /// running product from the position, the rotation in fused multiply-adds (`lmc_rope_ordered`).
    /// `neox`: element i pairs with i + dimensions/2; otherwise 2i with 2i + 1.
    package static func ropeLlamaOrder(
        _ x: UnsafeMutablePointer<Float>,
        heads: Int,
        headDim: Int,
        dimensions: Int,
        position: Int,
        base: Float,
        factors: [Float]?,
        neox: Bool
    ) {
        let step = powf(base, -2 / Float(dimensions))
        if let factors {
            factors.withUnsafeBufferPointer {
                lmc_rope_ordered(
                    x, Int64(heads), Int64(headDim), Int64(dimensions), Int64(position), step, $0.baseAddress,
                    neox ? 1 : 0)
            }
        } else {
            lmc_rope_ordered(x, Int64(heads), Int64(headDim), Int64(dimensions), Int64(position), step, nil, neox ? 1 : 0)
        }
    }

    /// How rotary position embedding pairs a head's elements.
    package enum RoPEStyle: Sendable {
        /// NEOX (Gemma, Qwen2): element i pairs with i + dims/2.
        case neox
        /// The original GPT-J / Llama style: element 2i pairs with 2i + 1.
        case normal
    }

    /// Rotary position embedding of one token's heads, in place.
    ///
    /// - Parameters:
    ///   - x: `heads × headDim` floats for one token, rotated in place.
    ///   - position: the token's position.
    ///   - frequencies: from ``ropeFrequencies(dimensions:base:)`` with `dims` ≤ headDim rotated values.
    ///   - style: which elements form the rotated pairs.
    package static func rope(
        _ x: UnsafeMutablePointer<Float>,
        heads: Int,
        headDim: Int,
        position: Int,
        frequencies: [Float],
        style: RoPEStyle
    ) {
        let half = frequencies.count
        // Pair i is (i · step, i · step + offset).
        let (step, offset) = style == .neox ? (1, half) : (2, 1)
        frequencies.withUnsafeBufferPointer { freq in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * half) { cs in
                // Same angle for every head: compute cos/sin once per token.
                let p = Float(position)
                for i in 0..<half {
                    let theta = p * freq[i]
                    cs[i] = cosf(theta)
                    cs[half + i] = sinf(theta)
                }
                for h in 0..<heads {
                    let v = x + h * headDim
                    for i in 0..<half {
                        let j = i * step
                        let a = v[j], b = v[j + offset]
                        let c = cs[i], s = cs[half + i]
                        v[j] = a * c - b * s
                        v[j + offset] = a * s + b * c
                    }
                }
            }
        }
    }

    /// gate[i] = gelu_tanh(gate[i]) · up[i] for `count` floats.
    ///
    /// With `halfTable` (the default when ``emulateHalfPrecision`` is on), GELU is read from a table
    /// of half-precision results indexed by the half-precision input, as llama.cpp's CPU backend
    /// does (inputs at or beyond ±10 bypass it); otherwise it is computed in Float, using
    /// 0.5·(1 + tanh(u)) = 1 / (1 + e^(−2u)).
    package static func gegluTanh(
        gate: UnsafeMutablePointer<Float>,
        up: UnsafePointer<Float>,
        count: Int,
        halfTable: Bool = emulateHalfPrecision
    ) {
        let body = { (lo: Int, hi: Int) in
            if halfTable {
                lmc_geglu_tanh_half_table(gate + lo, up + lo, Int64(hi - lo))
            } else {
                lmc_geglu_tanh(gate + lo, up + lo, Int64(hi - lo))
            }
        }
        guard count >= 65_536 else { return body(0, count) }
        Parallel.forRanges(count / 8, minimumPerPart: 4096) { range in
            body(range.lowerBound * 8, range.upperBound == count / 8 ? count : range.upperBound * 8)
        }
    }

    /// The index of the largest of `count` floats (the first on ties).
    package static func argmax(_ x: UnsafePointer<Float>, count: Int) -> Int {
        var best = 0
        var value = -Float.infinity
        for i in 0..<count where x[i] > value {
            value = x[i]
            best = i
        }
        return best
    }

    /// gate[i] = silu(gate[i]) · up[i] for `count` floats.
    package static func swiglu(gate: UnsafeMutablePointer<Float>, up: UnsafePointer<Float>, count: Int) {
        for i in 0..<count {
            let x = gate[i]
            gate[i] = x / (1 + expf(-x)) * up[i]
        }
    }

    /// x = softmax(x) over `count` floats; −∞ entries get probability 0.
    package static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int) {
        lmc_softmax(x, Int64(count))
    }

    /// x = softmax(x) over `count` floats, computed as llama.cpp computes a row of attention scores
    /// whose first element here is at `position` of its row (its exponential, block sums aligned to
    /// multiples of 8 of the row, a double sum), so that rounding the result to half precision
    /// gives its values.
    package static func softmax(_ x: UnsafeMutablePointer<Float>, count: Int, rowPosition position: Int) {
        lmc_softmax_aligned(x, Int64(count), Int64(position))
    }

    /// y[i] += x[i].
    package static func add(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }

    /// x[i] *= s.
    package static func scale(_ x: UnsafeMutablePointer<Float>, by s: Float, count: Int) {
        for i in 0..<count { x[i] *= s }
    }
}
