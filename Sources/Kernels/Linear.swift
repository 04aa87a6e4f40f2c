// Matrix products against weights stored in GGUF formats.
//
// Decode (one token): the activation is quantized to int8 per 32 values and each weight row is
// dotted in its own block format (CKernels), so weights are read once, compressed; memory-bound.
// Prefill (many tokens): weight rows are dequantized in tiles to Float and multiplied with OpenBLAS
// sgemm; compute-bound, and the dequantization is amortized over all tokens of the batch.

internal import CKernels
internal import COpenBLAS
internal import Foundation
package import GGUF

/// A weight matrix in a GGUF tensor: `rows` output features, each a row of `columns` input values.
///
/// It is a view: `base` points into memory (usually the mapped model file) that its owner keeps alive.
package struct WeightMatrix: @unchecked Sendable {
    // @unchecked: the struct is an immutable view of read-only memory; the owner (the model, which
    // holds the mapped file) outlives every use.

    /// The element type.
    package let type: GGMLType
    /// Output features (ggml's ne[1]).
    package let rows: Int
    /// Input features per row (ggml's ne[0], contiguous).
    package let columns: Int
    /// Row 0.
    package let base: UnsafeRawPointer
    /// Bytes from one row to the next.
    package let rowBytes: Int
    /// The matrix dequantized to Float (`rows × columns`, row-major), when kept: batched products then
    /// read it instead of dequantizing tiles on every call. Owned by a ``DenseWeights``.
    package private(set) var dense: UnsafePointer<Float>?

    /// A view of `rows × columns` values of `type` at `base`.
    ///
    /// - Throws: ``KernelError`` when the type has no kernel or `columns` is not a whole number of blocks.
    package init(type: GGMLType, rows: Int, columns: Int, base: UnsafeRawPointer) throws(KernelError) {
        guard Dequantization.supports(type) else { throw KernelError.unsupportedType(type) }
        guard columns > 0, rows > 0, columns % type.blockSize == 0 else {
            throw KernelError.invalidArgument("\(columns) columns is not a whole number of \(type) blocks")
        }
        self.type = type
        self.rows = rows
        self.columns = columns
        self.base = base
        self.rowBytes = columns / type.blockSize * type.typeSize
        self.dense = nil
    }

    /// Float values of the matrix in bytes.
    package var denseBytes: Int { rows * columns * MemoryLayout<Float>.size }

    fileprivate mutating func setDense(_ pointer: UnsafePointer<Float>) { dense = pointer }

    /// Whether decode uses the int8 kernels (else rows are dequantized and dotted in Float).
    package var usesQuantizedDot: Bool { lmc_matvec_supports(Int32(type.rawValue)) != 0 }

    /// Whether the activation is quantized with one scale per 256 values (K-quant weights, as ggml's
    /// Q8_K) rather than one half-precision scale per 32 (as ggml's Q8_0).
    package var usesSuperBlockActivation: Bool {
        QuantizedActivation.llamaStyle && (type == .q4_K || type == .q5_K || type == .q6_K)
    }

    /// Dequantizes rows `range` into `destination` (row-major, `columns` floats per row).
    package func dequantizeRows(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        // Safe: range is within 0..<rows by contract; each row is rowBytes bytes of whole blocks.
        Dequantization.dequantize(
            type,
            from: base + range.lowerBound * rowBytes,
            count: range.count * columns,
            into: destination
        )
    }
}

/// An activation vector quantized to int8 with one scale per 32 values (the decode kernels' input).
package final class QuantizedActivation {
    package private(set) var capacity: Int
    package private(set) var qs: UnsafeMutablePointer<Int8>
    package private(set) var d: UnsafeMutablePointer<Float>
    package private(set) var ds: UnsafeMutablePointer<Float>

    package init(capacity: Int = 0) {
        self.capacity = max(32, capacity)
        qs = .allocate(capacity: self.capacity)
        d = .allocate(capacity: self.capacity / 32 + 1)
        ds = .allocate(capacity: self.capacity / 32 + 1)
    }

    deinit {
        qs.deallocate()
        d.deallocate()
        ds.deallocate()
    }

    /// Quantizes `count` floats at `x`: per 256 values when `superBlocks` (count % 256 == 0), else per 32.
    package func quantize(_ x: UnsafePointer<Float>, count: Int, superBlocks: Bool) {
        reserve(count)
        Self.quantize(x, count: count, superBlocks: superBlocks, qs: qs, d: d, ds: ds)
    }

    /// Activations are quantized as ggml does (one scale per 256 values for K-quant weights as its Q8_K,
    /// half-precision scales per 32 values otherwise as its Q8_0), so decoding follows llama.cpp's
    /// choices at near-ties. `LMCACHE_LLAMA_ACTIVATIONS=0` gives every 32 values a Float scale instead
    /// (more precise, further from llama.cpp).
    package static let llamaStyle = ProcessInfo.processInfo.environment["LMCACHE_LLAMA_ACTIVATIONS"] != "0"

    @inline(__always)
    static func quantize(
        _ x: UnsafePointer<Float>,
        count: Int,
        superBlocks: Bool,
        qs: UnsafeMutablePointer<Int8>,
        d: UnsafeMutablePointer<Float>,
        ds: UnsafeMutablePointer<Float>
    ) {
        if !llamaStyle {
            lmc_quantize_q8(x, Int64(count), qs, d, ds)
        } else if superBlocks {
            lmc_quantize_q8_k_like(x, Int64(count), qs, d, ds)
        } else {
            lmc_quantize_q8_0_like(x, Int64(count), qs, d, ds)
        }
    }

    /// Makes room for `count` values.
    package func reserve(_ count: Int) {
        if count > capacity {
            qs.deallocate()
            d.deallocate()
            ds.deallocate()
            capacity = count
            qs = .allocate(capacity: count)
            d = .allocate(capacity: count / 32 + 1)
            ds = .allocate(capacity: count / 32 + 1)
        }
    }
}

@available(*, unavailable)
extension QuantizedActivation: Sendable {}

/// Dequantized copies of weight matrices, kept for the life of a model so that prefill does not
/// dequantize every weight on every forward pass. The values are exactly those that dequantizing a
/// tile gives, so products are unchanged bit for bit; memory is 4 bytes per weight.
package final class DenseWeights: @unchecked Sendable {
    // @unchecked: the buffers are written once in `densify` before any reader sees the returned
    // matrix, and only read afterwards.
    private var buffers: [UnsafeMutablePointer<Float>] = []

    package init() {}

    deinit { for b in buffers { b.deallocate() } }

    /// Bytes held.
    package private(set) var bytes = 0

    /// `w` with a dense copy that this object owns (dequantized on all cores).
    package func densify(_ w: WeightMatrix) -> WeightMatrix {
        if w.dense != nil { return w }
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: w.rows * w.columns)
        buffers.append(buffer)
        bytes += w.denseBytes
        let target = UncheckedSendable(buffer)
        Parallel.forRanges(w.rows, minimumPerPart: 64) { rows in
            w.dequantizeRows(rows, into: target.value + rows.lowerBound * w.columns)
        }
        var copy = w
        copy.setDense(buffer)
        return copy
    }
}

/// Reusable memory for the matrix products (tiles of dequantized weights, quantized activations).
package final class LinearScratch {
    package let activation = QuantizedActivation(capacity: 4096)
    package let superBlockActivation = QuantizedActivation(capacity: 4096)
    package let batchActivation = QuantizedActivation(capacity: 4096)

    /// The activation buffer that weights of `w`'s type read.
    package func activation(for w: WeightMatrix) -> QuantizedActivation {
        w.usesSuperBlockActivation ? superBlockActivation : activation
    }
    private var tiles: [(UnsafeMutablePointer<Float>, Int)] = []
    private var sums: (UnsafeMutablePointer<Int16>, Int) = (.allocate(capacity: 1), 1)

    package init() {}

    deinit {
        for (t, _) in tiles { t.deallocate() }
        sums.0.deallocate()
    }

    /// The sums of each 16 activation values of llama.cpp's K-quant activations: at least `count`,
    /// valid until the next call.
    package func blockSums(_ count: Int) -> UnsafeMutablePointer<Int16> {
        if sums.1 < count {
            sums.0.deallocate()
            sums = (.allocate(capacity: count), count)
        }
        return sums.0
    }

    /// Buffer `worker` with at least `count` floats, valid until the next call.
    package func workerTile(_ worker: Int, _ count: Int) -> UnsafeMutablePointer<Float> {
        while tiles.count <= worker { tiles.append((.allocate(capacity: 1), 1)) }
        if tiles[worker].1 >= count { return tiles[worker].0 }
        tiles[worker].0.deallocate()
        tiles[worker] = (.allocate(capacity: count), count)
        return tiles[worker].0
    }
}

@available(*, unavailable)
extension LinearScratch: Sendable {}

/// Matrix products of activations with ``WeightMatrix`` weights.
package enum Linear {
    /// y_i = W_i · x for several weights that share the input `x` (`columns` floats), in one parallel pass.
    ///
    /// Each output must hold `rows` floats. All weights must have the same `columns`.
    package static func matvec(
        _ outputs: [(weight: WeightMatrix, y: UnsafeMutablePointer<Float>)],
        x: UnsafePointer<Float>,
        scratch: LinearScratch
    ) {
        guard let first = outputs.first else { return }
        let columns = first.weight.columns
        if exactFloat {
            Parallel.forRanges(outputs.count) { range in
                for i in range {
                    floatRowDots(outputs[i].weight, rows: 0..<outputs[i].weight.rows, x: x, y: outputs[i].y)
                }
            }
            return
        }
        if outputs.contains(where: { $0.weight.usesQuantizedDot && !$0.weight.usesSuperBlockActivation }) {
            scratch.activation.quantize(x, count: columns, superBlocks: false)
        }
        if outputs.contains(where: { $0.weight.usesQuantizedDot && $0.weight.usesSuperBlockActivation }) {
            scratch.superBlockActivation.quantize(x, count: columns, superBlocks: true)
        }
        let total = outputs.reduce(0) { $0 + $1.weight.rows }
        // Split the concatenated rows of all matrices evenly over the threads.
        Parallel.forRanges(total, minimumPerPart: 64) { range in
            var start = 0
            for (weight, y) in outputs {
                let lo = max(range.lowerBound, start)
                let hi = min(range.upperBound, start + weight.rows)
                if lo < hi {
                    rowDots(
                        weight,
                        rows: (lo - start)..<(hi - start),
                        x: x,
                        act: scratch.activation(for: weight),
                        y: y + (lo - start)
                    )
                }
                start += weight.rows
            }
        }
    }

    /// Rows `rows` of `w · x` into `y` (y[0] is row rows.lowerBound).
    @inline(__always)
    static func rowDots(
        _ w: WeightMatrix,
        rows: Range<Int>,
        x: UnsafePointer<Float>,
        act: QuantizedActivation,
        y: UnsafeMutablePointer<Float>
    ) {
        if w.usesQuantizedDot {
            lmc_matvec_q8(
                Int32(w.type.rawValue),
                w.base,
                Int64(w.rowBytes),
                Int64(rows.lowerBound),
                Int64(rows.upperBound),
                Int64(w.columns),
                act.qs,
                act.d,
                act.ds,
                y
            )
            return
        }
        floatRowDots(w, rows: rows, x: x, y: y)
    }

    static func floatRowDots(
        _ w: WeightMatrix,
        rows: Range<Int>,
        x: UnsafePointer<Float>,
        y: UnsafeMutablePointer<Float>
    ) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: w.columns) { buffer in
            let row = buffer.baseAddress!
            for r in rows {
                w.dequantizeRows(r..<(r + 1), into: row)
                y[r - rows.lowerBound] = dot(row, x, w.columns)
            }
        }
    }

    /// Debugging aid: `LMCACHE_EXACT_MATMUL=1` makes every product dequantize weights to Float and use
    /// Float activations (slow; for comparing against the int8 kernels).
    package static let exactFloat: Bool = ProcessInfo.processInfo.environment["LMCACHE_EXACT_MATMUL"] == "1"

    /// How batched products are computed.
    package enum Strategy: Sendable {
        /// The default: every product computes each output row of each token with the same arithmetic
        /// whatever the batch (int8 activations and block-format dots for quantized weights, one row dot
        /// per output for float weights), and attention computes each query row on its own
        /// (``Attention/invariantRows(_:shape:scratch:)``). A token's keys, values and logits are then
        /// bit-identical whether it is computed in a long prefill, a short tail, a batched decode step or
        /// alone, which lets the cache load a prefix that ends at any token.
        case invariant
        /// Int8 activations and the block-format dot products (as decode); a token's result is the
        /// same whatever batch it is in. Float weights fall back to `.sgemm`.
        case quantized
        /// Dequantize weight tiles to Float and multiply with OpenBLAS sgemm.
        case sgemm
        /// Int8 activations as llama.cpp quantizes them, and every float step of the products (and of
        /// attention's) in llama.cpp's CPU order, so that results are bit-identical to its own
        /// (OrderedProducts.c). Slower than `.sgemm`; for checking agreement with llama.cpp.
        case llamaOrder
    }

    /// The strategy used when callers do not choose: ``Strategy/invariant``, or `LMCACHE_MATMUL=sgemm`,
    /// `quantized` or `llamacpp`.
    package static let defaultStrategy: Strategy =
        switch ProcessInfo.processInfo.environment["LMCACHE_MATMUL"] {
        case "quantized": .quantized
        case "llamacpp": .llamaOrder
        case "sgemm": .sgemm
        default: .invariant
        }

    /// Names the arithmetic of the default strategy on this CPU: results computed under one identity
    /// are bit-identical to results computed under the same identity on any other host, so the cache
    /// puts it in its keys (KV made with other arithmetic is never mixed in silently).
    package static var arithmeticIdentity: String {
        // The AVX2 kernels (and faster ones that reproduce their bits) agree with each other, not with the portable C.
        let isa = KernelISA.best == .generic ? "portable" : "x86avx2"
        let activations = QuantizedActivation.llamaStyle ? "q8ggml" : "q8f32"
        let kv = Ops.emulateHalfPrecision ? "kvf16" : "kvf32"
        let strategy: String =
            switch defaultStrategy {
            case .invariant: "invariant1"
            case .quantized: "quantized"
            case .sgemm: "sgemm"
            case .llamaOrder: "llamacpp"
            }
        return [strategy, isa, activations, kv, exactFloat ? "exact" : ""].filter { !$0.isEmpty }.joined(separator: ".")
    }

    /// Whether `.llamaOrder` has a kernel for the matrix's type.
    package static func supportsLlamaOrder(_ w: WeightMatrix) -> Bool {
        lmc_ordered_supports(Int32(w.type.rawValue)) != 0
    }

    /// Y = X · Wᵀ for `count` tokens in llama.cpp's order (``Strategy/llamaOrder``), for a type that
    /// ``supportsLlamaOrder(_:)``.
    package static func orderedMatmul(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        count: Int,
        y: UnsafeMutablePointer<Float>,
        ldy: Int? = nil,
        scratch: LinearScratch
    ) {
        let ldy = ldy ?? w.rows
        let columns = w.columns
        if w.type == .q4_K || w.type == .q6_K {
            orderedSuperBlockMatmul(w, x: x, count: count, y: y, ldy: ldy, scratch: scratch)
            return
        }
        if w.type == .f32 || w.type == .f16 {
            orderedFloatMatmul(w, x: x, count: count, y: y, ldy: ldy, scratch: scratch)
            return
        }
        let act = scratch.batchActivation
        act.reserve(count * columns)
        Parallel.forRanges(count, minimumPerPart: 4) { tokens in
            for t in tokens {
                lmc_quantize_q8_0_like(
                    x + t * columns, Int64(columns), act.qs + t * columns, act.d + t * columns / 32,
                    act.ds + t * columns / 32)
            }
        }
        Parallel.forRanges(w.rows, minimumPerPart: 16) { rows in
            lmc_matmul_ordered(
                Int32(w.type.rawValue), w.base, Int64(w.rowBytes), Int64(rows.lowerBound), Int64(rows.upperBound),
                Int64(columns), Int64(count), act.qs, act.d, y, Int64(ldy))
        }
    }

    /// Y = X · Wᵀ for `count` tokens: X is `count × columns`, Y is `count × rows` (row-major, `ldy` apart).
    package static func matmul(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        count: Int,
        y: UnsafeMutablePointer<Float>,
        ldy: Int? = nil,
        strategy: Strategy = defaultStrategy,
        scratch: LinearScratch
    ) {
        let ldy = ldy ?? w.rows
        if count == 1 {
            matvec([(w, y)], x: x, scratch: scratch)
        } else if (strategy == .quantized || strategy == .invariant) && w.usesQuantizedDot && !exactFloat {
            quantizedMatmul(w, x: x, count: count, y: y, ldy: ldy, scratch: scratch)
        } else if strategy == .invariant {
            // Float weights: each token through the one-token row dots, so that its result is a lone token's.
            for t in 0..<count {
                matvec([(w, y + t * ldy)], x: x + t * w.columns, scratch: scratch)
            }
        } else {
            sgemmMatmul(w, x: x, count: count, y: y, ldy: ldy, scratch: scratch)
        }
    }

    static func quantizedMatmul(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        count: Int,
        y: UnsafeMutablePointer<Float>,
        ldy: Int,
        scratch: LinearScratch
    ) {
        let columns = w.columns
        let act = scratch.batchActivation
        act.reserve(count * columns)
        let superBlocks = w.usesSuperBlockActivation
        Parallel.forRanges(count, minimumPerPart: 4) { tokens in
            for t in tokens {
                QuantizedActivation.quantize(
                    x + t * columns,
                    count: columns,
                    superBlocks: superBlocks,
                    qs: act.qs + t * columns,
                    d: act.d + t * columns / 32,
                    ds: act.ds + t * columns / 32
                )
            }
        }
        Parallel.forRanges(w.rows, minimumPerPart: 16) { rows in
            lmc_matmul_q8(
                Int32(w.type.rawValue),
                w.base,
                Int64(w.rowBytes),
                Int64(rows.lowerBound),
                Int64(rows.upperBound),
                Int64(columns),
                Int64(count),
                act.qs,
                act.d,
                act.ds,
                y,
                Int64(ldy)
            )
        }
    }

    static func sgemmMatmul(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        count: Int,
        y: UnsafeMutablePointer<Float>,
        ldy: Int,
        scratch: LinearScratch
    ) {
        sgemmBlocks(w, x: x, blocks: [0..<count], y: y, ldy: ldy, scratch: scratch)
    }

    /// ``orderedMatmul(_:x:count:y:ldy:scratch:)`` for F32 and F16 weights: each output is eight lanes
    /// by index mod 8 (llama.cpp's order for float operands); F16 weights meet activations rounded to
    /// half precision, as llama.cpp converts them.
    static func orderedFloatMatmul(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        count: Int,
        y: UnsafeMutablePointer<Float>,
        ldy: Int,
        scratch: LinearScratch
    ) {
        let columns = w.columns
        // F32 weights are read where they are (the file, or the dense copy of F16 ones); only F16
        // weights without a dense copy are dequantized, a tile per worker.
        let inPlace: UnsafePointer<Float>? = w.dense ?? (w.type == .f32 ? w.base.assumingMemoryBound(to: Float.self) : nil)
        // F16 weights meet activations rounded to half precision (a buffer past the workers' tiles).
        let activations: UnsafePointer<Float>
        if w.type == .f16 {
            let copy = scratch.workerTile(Parallel.threadCount, count * columns)
            copy.update(from: x, count: count * columns)
            lmc_round_f16(copy, Int64(count * columns))
            activations = UnsafePointer(copy)
        } else {
            activations = x
        }
        let tileRows = max(1, min(w.rows, (1 << 16) / columns))
        let jobs = (w.rows + tileRows - 1) / tileRows
        let tiles = inPlace != nil ? [] : (0..<Parallel.threadCount).map { scratch.workerTile($0, tileRows * columns) }
        Parallel.forEachJob(jobs) { job, worker in
            let r0 = job * tileRows
            let n = min(tileRows, w.rows - r0)
            let tile: UnsafePointer<Float>
            if let inPlace {
                tile = inPlace + r0 * columns
            } else {
                w.dequantizeRows(r0..<(r0 + n), into: tiles[worker])
                tile = UnsafePointer(tiles[worker])
            }
            for t in 0..<count {
                lmc_dot_ordered_f32(
                    tile, Int64(columns), Int64(n), activations + t * columns, Int64(columns), count == 1 ? 1 : 0,
                    w.type == .f16 ? 1 : 0, y + t * ldy + r0)
            }
        }
    }

    /// ``orderedMatmul(_:x:count:y:ldy:scratch:)`` for Q4_K and Q6_K (activations per 256 values).
    static func orderedSuperBlockMatmul(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        count: Int,
        y: UnsafeMutablePointer<Float>,
        ldy: Int,
        scratch: LinearScratch
    ) {
        let columns = w.columns
        let blocks = columns / 256
        let grouped = w.type == .q4_K ? count - count % 4 : 0
        let act = scratch.batchActivation
        act.reserve(count * columns)
        let qs = act.qs, d = act.d
        let bsums = scratch.blockSums(count * columns / 16)
        Parallel.forRanges(count, minimumPerPart: 4) { tokens in
            for t in tokens {
                lmc_quantize_q8_k_ordered(
                    x + t * columns, Int64(columns), t < grouped ? 1 : 0, qs + t * columns, d + t * blocks,
                    bsums + t * columns / 16)
            }
        }
        Parallel.forRanges(w.rows, minimumPerPart: 16) { rows in
            lmc_matmul_ordered_k(
                Int32(w.type.rawValue), w.base, Int64(w.rowBytes), Int64(rows.lowerBound), Int64(rows.upperBound),
                Int64(columns), Int64(count), qs, d, bsums, y, Int64(ldy))
        }
    }

    /// Blocks of at most this many tokens are multiplied without sgemm (`lmc_gemm_nt_small`), which
    /// reads the weights in place where sgemm would first copy them into its panels; that copy dominated
    /// short prefills (a cache hit's last tokens). `LMCACHE_SMALL_GEMM_TOKENS` overrides (0: always sgemm).
    package static let smallBlockTokens: Int = {
        if let text = ProcessInfo.processInfo.environment["LMCACHE_SMALL_GEMM_TOKENS"], let n = Int(text), n >= 0 {
            return n
        }
        return 64
    }()

    /// Y = X · Wᵀ for several token blocks with sgemm, dequantizing each weight tile once for all blocks.
    /// Each block is one call per tile (its own M), so a block's result does not depend on the others;
    /// blocks of at most ``smallBlockTokens`` tokens use the unpacked small-block kernel.
    package static func sgemmBlocks(
        _ w: WeightMatrix,
        x: UnsafePointer<Float>,
        blocks: [Range<Int>],
        y: UnsafeMutablePointer<Float>,
        ldy: Int? = nil,
        scratch: LinearScratch
    ) {
        _ = Parallel.configureBLAS
        let ldy = ldy ?? w.rows
        // Jobs of `tileRows` weight rows: each worker dequantizes a tile into its own buffer and
        // multiplies it with every block (single-threaded sgemm per worker).
        let tileRows = min(w.rows, max(16, (1 << 18) / w.columns))
        let jobs = (w.rows + tileRows - 1) / tileRows
        let buffers =
            w.dense != nil ? [] : (0..<Parallel.threadCount).map { scratch.workerTile($0, tileRows * w.columns) }
        Parallel.forEachJob(jobs) { job, worker in
            let r0 = job * tileRows
            let n = min(tileRows, w.rows - r0)
            let tile: UnsafePointer<Float>
            if let dense = w.dense {
                tile = dense + r0 * w.columns
            } else {
                w.dequantizeRows(r0..<(r0 + n), into: buffers[worker])
                tile = UnsafePointer(buffers[worker])
            }
            for block in blocks {
                let xs = x + block.lowerBound * w.columns
                let ys = y + block.lowerBound * ldy + r0
                let k = w.columns
                if block.count <= smallBlockTokens {
                    lmc_gemm_nt_small(Int64(block.count), Int64(n), Int64(k), xs, Int64(k), tile, Int64(k), ys, Int64(ldy))
                } else {
                    cblas_sgemm(
                        CblasRowMajor, CblasNoTrans, CblasTrans, Int32(block.count), Int32(n), Int32(k),
                        1, xs, Int32(k), tile, Int32(k), 0, ys, Int32(ldy)
                    )
                }
            }
        }
    }

    /// Σ a[i]·b[i] over `count` floats.
    @inline(__always)
    package static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc0 = SIMD8<Float>()
        var acc1 = SIMD8<Float>()
        var i = 0
        // Safe: loads stay within count floats of both pointers.
        while i + 16 <= count {
            let a0 = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
            let b0 = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
            let a1 = UnsafeRawPointer(a + i + 8).loadUnaligned(as: SIMD8<Float>.self)
            let b1 = UnsafeRawPointer(b + i + 8).loadUnaligned(as: SIMD8<Float>.self)
            acc0 += a0 * b0
            acc1 += a1 * b1
            i += 16
        }
        var s = (acc0 + acc1).sum()
        while i < count {
            s += a[i] * b[i]
            i += 1
        }
        return s
    }
}
