// The decoder-only transformer machinery that the architectures in Models/ configure: embedding,
// pre-norm attention with RoPE and grouped-query heads, gated feed-forward, optional Gemma-style
// extra norms, final norm and output head. All arithmetic goes through the Kernels module.

internal import Foundation
internal import GGUF
internal import Kernels
internal import LMCacheCore

/// Reads tensors of a GGUF file as kernel operands; the file stays mapped while the model lives.
struct TensorSource {
    let file: GGUFFile

    func info(_ name: String) throws(InferenceError) -> GGUFTensorInfo {
        guard let info = file.tensor(named: name) else { throw InferenceError.missingTensor(name) }
        return info
    }

    func has(_ name: String) -> Bool { file.tensor(named: name) != nil }

    /// A weight matrix with `columns` inputs and `rows` outputs.
    func matrix(_ name: String, columns: Int, rows: Int? = nil) throws(InferenceError) -> WeightMatrix {
        let info = try info(name)
        guard info.shape.count == 2, info.shape[0] == columns, rows == nil || info.shape[1] == rows else {
            throw InferenceError.invalidModel(
                "tensor '\(name)' has shape \(info.shape), expected [\(columns), \(rows.map(String.init) ?? "*")]"
            )
        }
        // The mapping's address is stable for the life of `file`, which the model keeps; the pointer
        // is only used while the model exists.
        let base = file.withBytes(of: info) { $0.baseAddress! }
        do {
            return try WeightMatrix(type: info.type, rows: info.shape[1], columns: columns, base: base)
        } catch {
            throw InferenceError.unsupportedModel("tensor '\(name)': \(error.message)")
        }
    }

    /// A vector of `count` values, dequantized to Float.
    func vector(_ name: String, count: Int) throws(InferenceError) -> [Float] {
        let info = try info(name)
        guard info.elementCount == count else {
            throw InferenceError.invalidModel("tensor '\(name)' has \(info.elementCount) values, expected \(count)")
        }
        guard Dequantization.supports(info.type) else {
            throw InferenceError.unsupportedModel("tensor '\(name)' has unsupported type \(info.type)")
        }
        return file.withBytes(of: info) { raw in
            [Float](unsafeUninitializedCapacity: count) { out, initialized in
                Dequantization.dequantize(info.type, from: raw.baseAddress!, count: count, into: out.baseAddress!)
                initialized = count
            }
        }
    }

    func optionalVector(_ name: String, count: Int) throws(InferenceError) -> [Float]? {
        has(name) ? try vector(name, count: count) : nil
    }
}

/// How an architecture uses the shared machinery.
struct TransformerSpec: Sendable {
    enum Activation: Sendable { case geluTanh, silu }
    var configuration: ModelConfiguration
    var rmsEpsilon: Float
    /// Multiplier of the embedding rows (Gemma: √hidden).
    var embeddingScale: Float?
    /// Multiplier of q·k.
    var attentionScale: Float
    /// Whether llama.cpp's graph multiplies q by ``attentionScale`` before q·k (Gemma), rather than the
    /// scores after it. Results are the same except for q's rounding to half precision, which
    /// ``Linear/Strategy/llamaOrder`` reproduces.
    var scalesQueries = false
    var activation: Activation
    var rope: Ops.RoPEStyle
    /// Per layer: RoPE angle factors and sliding window (0 = full attention).
    var ropeFrequencies: [[Float]]
    var windows: [Int]
    /// Per layer: the RoPE base that `ropeFrequencies` came from, and the frequency factors it was
    /// divided by, for ``Linear/Strategy/llamaOrder``'s angles (empty: that strategy uses
    /// `ropeFrequencies`).
    var ropeBases: [Float] = []
    var ropeFactors: [Float]?
}

/// One transformer block's weights.
struct LayerWeights: @unchecked Sendable {
    // @unchecked: immutable views into the mapped file (see WeightMatrix) plus Float arrays.
    var attentionNorm: [Float]
    var q: WeightMatrix, k: WeightMatrix, v: WeightMatrix, o: WeightMatrix
    var qBias: [Float]?, kBias: [Float]?, vBias: [Float]?
    var qNorm: [Float]?, kNorm: [Float]?
    var postAttentionNorm: [Float]?
    var ffnNorm: [Float]
    var gate: WeightMatrix, up: WeightMatrix, down: WeightMatrix
    var postFFNNorm: [Float]?
}

/// Workspace slots.
enum Slot {
    static let x = 0, h = 1, q = 2, k = 3, v = 4, attn = 5, o = 6, gate = 7, up = 8, logits = 9, last = 10
}

/// The shared forward pass.
final class TransformerCore: Sendable {
    let file: GGUFFile
    let spec: TransformerSpec
    let layers: [LayerWeights]
    let embedding: WeightMatrix
    let outputNorm: [Float]
    let output: WeightMatrix
    /// Dequantized copies of the layers' matrices, when kept (see ``denseWeightBudget``).
    let dense: DenseWeights?

    /// Most bytes of dequantized layer weights a model keeps to speed up prefill: `LMCACHE_DENSE_WEIGHTS`
    /// = `0` (never), `1` (always), or unset (when they fit in 1 GiB; Gemma 3 270M needs 0.4 GiB).
    static let denseWeightBudget: Int = {
        switch ProcessInfo.processInfo.environment["LMCACHE_DENSE_WEIGHTS"] {
        case "0": 0
        case "1": Int.max
        default: 1 << 30
        }
    }()

    init(
        file: GGUFFile,
        spec: TransformerSpec,
        layers: [LayerWeights],
        embedding: WeightMatrix,
        outputNorm: [Float],
        output: WeightMatrix
    ) {
        self.file = file
        self.spec = spec
        let denseBytes = layers.reduce(0) { total, w in
            total + [w.q, w.k, w.v, w.o, w.gate, w.up, w.down].reduce(0) { $0 + $1.denseBytes }
        }
        // Only the Float products (sgemm) read dense copies; the default products read the file's blocks.
        let sgemm = Linear.defaultStrategy == .sgemm || Linear.defaultStrategy == .llamaOrder
        if sgemm && denseBytes > 0 && denseBytes <= Self.denseWeightBudget {
            let dense = DenseWeights()
            self.layers = layers.map { w in
                var w = w
                w.q = dense.densify(w.q)
                w.k = dense.densify(w.k)
                w.v = dense.densify(w.v)
                w.o = dense.densify(w.o)
                w.gate = dense.densify(w.gate)
                w.up = dense.densify(w.up)
                w.down = dense.densify(w.down)
                return w
            }
            self.dense = dense
        } else {
            self.layers = layers
            self.dense = nil
        }
        self.embedding = embedding
        self.outputNorm = outputNorm
        self.output = output
    }

    /// The engine's KV layout: float32 pages (the KV connector stores them as float16 when that is exact).
    var kvLayout: KVLayout {
        KVLayout.engine(
            layers: spec.configuration.layers,
            kvHeads: spec.configuration.kvHeads,
            headDim: spec.configuration.headDim
        )
    }

    func forward(
        _ tokens: [Int32],
        sequence kv: SequenceKV,
        outputs: LogitOutputs,
        workspace ws: Workspace
    ) throws(InferenceError) -> [Float] {
        guard !tokens.isEmpty else { throw InferenceError.invalidInput("no tokens to run") }
        let n = tokens.count
        let first: Int
        switch outputs {
        case .none: first = n
        case .last: first = n - 1
        case .all: first = 0
        }
        return try pass([ForwardPiece(tokens: tokens, sequence: kv)], rowwise: false, logitRows: Array(first..<n), ws)
    }

    /// One decode step of several sequences at once: `tokens[i]` runs at the next position of
    /// `sequences[i]`, and each sequence's logits are exactly those of
    /// `forward([tokens[i]], sequence: sequences[i], outputs: .last, …)`.
    ///
    /// The weights are read once for the whole batch (the int8 products compute each row as the
    /// one-token kernels do), which is what makes decoding several sequences cheaper than one after
    /// the other: decode is bound by reading the weights.
    ///
    /// - Returns: `tokens.count × vocabularySize` logits, row `i` for `sequences[i]`.
    func decode(_ tokens: [Int32], sequences: [SequenceKV], workspace ws: Workspace) throws(InferenceError) -> [Float] {
        guard tokens.count == sequences.count else {
            throw InferenceError.invalidInput("\(tokens.count) tokens for \(sequences.count) sequences")
        }
        return try forward(zip(tokens, sequences).map { ForwardPiece(tokens: [$0], sequence: $1) }, workspace: ws)
    }

    /// Pieces of several sequences in one pass (see ``LanguageModel/forward(_:workspace:)``): rows
    /// computed each as a lone token's when every piece is one token or the arithmetic is
    /// batch-invariant; otherwise one pass per piece.
    func forward(_ pieces: [ForwardPiece], workspace ws: Workspace) throws(InferenceError) -> [Float] {
        guard !pieces.isEmpty else { throw InferenceError.invalidInput("no tokens to run") }
        var ends: [Int] = []
        var rows = 0
        for piece in pieces {
            rows += piece.tokens.count
            if piece.wantsLogits { ends.append(rows - 1) }
        }
        if pieces.count == 1 {
            return try pass(pieces, rowwise: false, logitRows: ends, ws)
        }
        guard rows == pieces.count || Linear.defaultStrategy == .invariant else {
            // The reference arithmetic aligns a batch's products on its positions: one piece at a time.
            var logits: [Float] = []
            for piece in pieces {
                logits += try forward(
                    piece.tokens, sequence: piece.sequence, outputs: piece.wantsLogits ? .last : .none, workspace: ws)
            }
            return logits
        }
        return try pass(pieces, rowwise: true, logitRows: ends, ws)
    }

    /// The layer loop of every pass: `pieces` run at the next positions of their sequences (distinct
    /// ones), their tokens the rows of one batch; returns the logits of the batch's rows `logitRows`
    /// (ascending), row after row.
    ///
    /// `rowwise`: every row is computed as a lone token's (decode steps; any batch with the invariant
    /// arithmetic, where this gives the same bits as the aligned products). Otherwise there is one
    /// piece and the batched products align their blocks on its positions.
    private func pass(
        _ pieces: [ForwardPiece],
        rowwise: Bool,
        logitRows: [Int],
        _ ws: Workspace
    ) throws(InferenceError) -> [Float] {
        let c = spec.configuration
        var groups: [(kv: SequenceKV, first: Int, row: Int, count: Int)] = []
        var rowPositions: [Int] = []
        var rowGroups: [Int] = []
        for (index, piece) in pieces.enumerated() {
            let kv = piece.sequence
            guard !piece.tokens.isEmpty else { throw InferenceError.invalidInput("no tokens to run") }
            guard kv.layout.with(dtype: .float32) == kvLayout.with(dtype: .float32) else {
                throw InferenceError.invalidKV("sequence layout \(kv.layout) is not the model's \(kvLayout)")
            }
            guard !pieces[..<index].contains(where: { $0.sequence === kv }) else {
                throw InferenceError.invalidInput("a sequence appears twice in one pass")
            }
            let p0 = try checkFits(piece.tokens, after: kv)
            groups.append((kv, p0, rowPositions.count, piece.tokens.count))
            rowPositions += p0..<(p0 + piece.tokens.count)
            rowGroups += repeatElement(index, count: piece.tokens.count)
        }
        for group in groups { group.kv.reserve(group.first + group.count, writingFrom: group.first) }

        let n = rowPositions.count
        let d = c.hiddenSize
        let x = ws.buffer(Slot.x, n * d)
        embed(pieces.lazy.flatMap(\.tokens), into: x)
        let rows = (0..<n).map { PassRow(kv: groups[rowGroups[$0]].kv, position: rowPositions[$0]) }
        runLayers(x, rows: rows, rowwise: rowwise, ws)
        for (piece, group) in zip(pieces, groups) { group.kv.append(piece.tokens) }

        // Output head.
        guard let firstRow = logitRows.first else { return [] }
        let m = logitRows.count
        if logitRows.last! - firstRow + 1 != m {
            // Gather the rows (ascending, so each moves towards the front).
            for (to, from) in logitRows.enumerated() where to != from {
                (x + to * d).update(from: x + from * d, count: d)
            }
            return logits(x, rows: m, firstPosition: 0, ws, rowwise: rowwise)
        }
        return logits(x + firstRow * d, rows: m, firstPosition: rowPositions[firstRow], ws, rowwise: rowwise)
    }

    /// The layer loop that every pass runs (prefill, decode, both at once, blending): the rows of
    /// `x` are tokens at `rows`' sequence positions, whose pages are reserved; each layer writes their
    /// keys and values into their sequences and leaves their hidden states in `x`.
    ///
    /// - Parameters:
    ///   - rowwise: every row is computed as a lone token's (decode steps; any batch with the invariant
    ///     arithmetic, where this gives the same bits as the aligned products); otherwise the batched
    ///     products align their blocks on the first row's position when the rows are one run of
    ///     consecutive positions of one sequence, else on position 0.
    ///   - beforeWrite: called with each row's index, layer and final key row just before the key is
    ///     written (from several threads at once; rows are distinct).
    ///   - afterLayer: called after each layer; may drop rows (keeping the rest in order, their states
    ///     moved to the front of `x`), which the later layers then skip.
    func runLayers(
        _ x: UnsafeMutablePointer<Float>,
        rows initial: [PassRow],
        rowwise: Bool,
        _ ws: Workspace,
        beforeWrite: ((_ row: Int, _ layer: Int, _ key: UnsafePointer<Float>) -> Void)? = nil,
        afterLayer: ((_ layer: Int, _ rows: inout [PassRow]) -> Void)? = nil
    ) {
        let c = spec.configuration
        let hd = c.headDim
        let qWidth = c.heads * hd
        let kvWidth = c.kvHeads * hd
        var rows = initial
        for (l, w) in layers.enumerated() {
            let n = rows.count
            let q = ws.buffer(Slot.q, n * qWidth)
            let k = ws.buffer(Slot.k, n * kvWidth)
            let v = ws.buffer(Slot.v, n * kvWidth)
            let attn = ws.buffer(Slot.attn, n * qWidth)
            // Runs of consecutive positions of one sequence: one attention group each.
            var groups: [(row: Int, count: Int)] = []
            for (i, row) in rows.enumerated() {
                if let last = groups.last, rows[i - 1].kv === row.kv, rows[i - 1].position + 1 == row.position {
                    groups[groups.count - 1].count = last.count + 1
                } else {
                    groups.append((i, 1))
                }
            }
            let p0 = rowwise || groups.count > 1 ? 0 : rows[0].position

            // Attention block.
            projectQKV(w, x: x, count: n, firstPosition: p0, ws, decoding: rowwise)
            // Per row: biases, QK norms, RoPE, KV write (rows in parallel for large batches).
            Parallel.forRanges(n, minimumPerPart: 16) { range in
                for i in range {
                    let (qi, ki, vi) = (q + i * qWidth, k + i * kvWidth, v + i * kvWidth)
                    let row = rows[i]
                    projectToken(layer: l, w, q: qi, k: ki, v: vi, position: row.position)
                    beforeWrite?(i, l, ki)
                    row.kv.row(layer: l, kv: 0, position: row.position).update(from: ki, count: kvWidth)
                    row.kv.row(layer: l, kv: 1, position: row.position).update(from: vi, count: kvWidth)
                }
            }
            let batch = groups.map { group in
                let first = rows[group.row]
                let views = first.kv.views(layer: l)
                return AttentionQueries(
                    q: q + group.row * qWidth,
                    count: group.count,
                    firstPosition: first.position,
                    keys: views.keys,
                    values: views.values,
                    out: attn + group.row * qWidth
                )
            }
            let shape = AttentionShape(
                heads: c.heads,
                kvHeads: c.kvHeads,
                headDim: hd,
                window: spec.windows[l],
                scale: spec.attentionScale
            )
            Attention.prefill(batch, shape: shape, scratch: ws.attention)
            attentionOutput(w, x: x, count: n, firstPosition: p0, ws, decoding: rowwise)
            feedForward(w, x: x, count: n, firstPosition: p0, ws, decoding: rowwise)
            afterLayer?(l, &rows)
        }
    }
}

/// One row of a pass: a token at `position` of sequence `kv`.
struct PassRow {
    let kv: SequenceKV
    let position: Int
}

extension TransformerCore {
    /// Throws when a token id is outside the vocabulary.
    func checkVocabulary(_ tokens: some Sequence<Int32>) throws(InferenceError) {
        let size = spec.configuration.vocabularySize
        for t in tokens where t < 0 || Int(t) >= size {
            throw InferenceError.invalidInput("token id \(t) is outside the vocabulary of \(size)")
        }
    }

    /// The scaled embedding rows of `tokens`, one after the other, into `x`.
    func embed(_ tokens: some Sequence<Int32>, into x: UnsafeMutablePointer<Float>) {
        let d = spec.configuration.hiddenSize
        var count = 0
        for t in tokens {
            embedding.dequantizeRows(Int(t)..<(Int(t) + 1), into: x + count * d)
            count += 1
        }
        if let s = spec.embeddingScale { Ops.scale(x, by: s, count: count * d) }
    }

    /// The output head over `rows` rows of hidden states at positions `firstPosition…`, or with
    /// `rowwise` each row as a lone token's.
    func logits(
        _ x: UnsafePointer<Float>,
        rows: Int,
        firstPosition: Int,
        _ ws: Workspace,
        rowwise: Bool = false
    ) -> [Float] {
        let c = spec.configuration
        let d = c.hiddenSize
        let h = ws.buffer(Slot.h, rows * d)
        Ops.rmsNorm(x, weight: outputNorm, count: d, rows: rows, eps: spec.rmsEpsilon, out: h)
        return [Float](unsafeUninitializedCapacity: rows * c.vocabularySize) { out, initialized in
            if rowwise {
                decodeLinear(output, x: h, y: out.baseAddress!, count: rows, ws)
            } else {
                linear(output, x: h, y: out.baseAddress!, count: rows, firstPosition: firstPosition, ws)
            }
            initialized = rows * c.vocabularySize
        }
    }

    /// One token's query, key and value after biases, QK norms, RoPE at `position` and the engine's
    /// half-precision rounding: what the KV rows hold.
    func projectToken(
        layer l: Int,
        _ w: LayerWeights,
        q qi: UnsafeMutablePointer<Float>,
        k ki: UnsafeMutablePointer<Float>,
        v vi: UnsafeMutablePointer<Float>,
        position: Int
    ) {
        let c = spec.configuration
        let hd = c.headDim
        let qWidth = c.heads * hd
        let kvWidth = c.kvHeads * hd
        if let b = w.qBias { Ops.add(qi, b, count: qWidth) }
        if let b = w.kBias { Ops.add(ki, b, count: kvWidth) }
        if let b = w.vBias { Ops.add(vi, b, count: kvWidth) }
        if let qn = w.qNorm { Ops.rmsNorm(qi, weight: qn, count: hd, rows: c.heads, eps: spec.rmsEpsilon, out: qi) }
        if let kn = w.kNorm { Ops.rmsNorm(ki, weight: kn, count: hd, rows: c.kvHeads, eps: spec.rmsEpsilon, out: ki) }
        if Linear.defaultStrategy == .llamaOrder && !spec.ropeBases.isEmpty {
            let dims = 2 * spec.ropeFrequencies[l].count
            for (vector, heads) in [(qi, c.heads), (ki, c.kvHeads)] {
                Ops.ropeLlamaOrder(
                    vector, heads: heads, headDim: hd, dimensions: dims, position: position, base: spec.ropeBases[l],
                    factors: spec.ropeFactors, neox: spec.rope == .neox)
            }
        } else {
            let frequencies = spec.ropeFrequencies[l]
            Ops.rope(qi, heads: c.heads, headDim: hd, position: position, frequencies: frequencies, style: spec.rope)
            Ops.rope(ki, heads: c.kvHeads, headDim: hd, position: position, frequencies: frequencies, style: spec.rope)
        }
        if Ops.emulateHalfPrecision {
            // llama.cpp keeps K and V in half precision and rounds q to half for q·k.
            if spec.scalesQueries && Linear.defaultStrategy == .llamaOrder {
                // It rounds q·scale; kept divided by the scale (a power of two: exact) because attention
                // multiplies the scores by it.
                let scale = spec.attentionScale
                for i in 0..<qWidth { qi[i] *= scale }
                Ops.roundToHalf(qi, count: qWidth)
                for i in 0..<qWidth { qi[i] /= scale }
            } else {
                Ops.roundToHalf(qi, count: qWidth)
            }
            Ops.roundToHalf(ki, count: kvWidth)
            Ops.roundToHalf(vi, count: kvWidth)
        }
    }

    /// Checks that `tokens` are in the vocabulary and fit after `kv`'s tokens, and reserves their pages.
    ///
    /// - Returns: the position of the first token.
    func reserve(_ tokens: [Int32], in kv: SequenceKV) throws(InferenceError) -> Int {
        let p0 = try checkFits(tokens, after: kv)
        kv.reserve(p0 + tokens.count, writingFrom: p0)
        return p0
    }

    /// Checks that `tokens` are in the vocabulary, fit after `kv`'s tokens and attend only to rows it
    /// holds, without reserving anything (a pass checks every piece before it touches any).
    ///
    /// - Returns: the position of the first token.
    func checkFits(_ tokens: [Int32], after kv: SequenceKV) throws(InferenceError) -> Int {
        try checkVocabulary(tokens)
        let p0 = kv.count
        guard p0 + tokens.count <= kv.capacity else {
            throw InferenceError.invalidInput("\(p0 + tokens.count) tokens exceed the context of \(kv.capacity)")
        }
        try checkAttended(kv, from: p0)
        return p0
    }

    /// Throws when a token computed at `position` would attend to rows of `kv` that a cache load left
    /// empty (a sliding-window layer filled only near the end of the loaded prefix).
    func checkAttended(_ kv: SequenceKV, from position: Int) throws(InferenceError) {
        guard kv.canContinue(at: position, windows: spec.windows) else {
            throw InferenceError.invalidKV(
                "the sequence's sliding-window layers hold no keys and values for the window of position "
                    + "\(position) (filled from \(kv.firstFilled.max() ?? 0))"
            )
        }
    }

    /// The attention norm of `count` rows of `x` into the `h` slot, then their queries, keys and values
    /// into the `q`, `k` and `v` slots (before biases, norms and RoPE). `firstPosition` and `decoding`
    /// choose the products as in ``feedForward(_:x:count:firstPosition:_:decoding:)``.
    func projectQKV(
        _ w: LayerWeights,
        x: UnsafePointer<Float>,
        count n: Int,
        firstPosition p0: Int,
        _ ws: Workspace,
        decoding: Bool = false
    ) {
        let c = spec.configuration
        let h = ws.buffer(Slot.h, n * c.hiddenSize)
        let q = ws.buffer(Slot.q, n * c.heads * c.headDim)
        let k = ws.buffer(Slot.k, n * c.kvHeads * c.headDim)
        let v = ws.buffer(Slot.v, n * c.kvHeads * c.headDim)
        Ops.rmsNorm(x, weight: w.attentionNorm, count: c.hiddenSize, rows: n, eps: spec.rmsEpsilon, out: h)
        products([(w.q, q), (w.k, k), (w.v, v)], x: h, count: n, firstPosition: p0, ws, decoding: decoding)
    }

    /// The output projection of the `attn` slot's `count` rows, the post-attention norm, and the
    /// residual into `x`; products chosen as in ``feedForward(_:x:count:firstPosition:_:decoding:)``.
    func attentionOutput(
        _ w: LayerWeights,
        x: UnsafeMutablePointer<Float>,
        count n: Int,
        firstPosition p0: Int,
        _ ws: Workspace,
        decoding: Bool = false
    ) {
        let c = spec.configuration
        let d = c.hiddenSize
        let attn = ws.buffer(Slot.attn, n * c.heads * c.headDim)
        let o = ws.buffer(Slot.o, n * d)
        products([(w.o, o)], x: attn, count: n, firstPosition: p0, ws, decoding: decoding)
        if let pn = w.postAttentionNorm { Ops.rmsNorm(o, weight: pn, count: d, rows: n, eps: spec.rmsEpsilon, out: o) }
        Ops.add(x, o, count: n * d)
    }

    /// The feed-forward block with its residual, for `count` rows of `x` at positions `firstPosition…`
    /// (the positions only align the batched products' blocks). With `decoding`, the rows are tokens of
    /// different sequences, each computed as a one-token step would.
    func feedForward(
        _ w: LayerWeights,
        x: UnsafeMutablePointer<Float>,
        count n: Int,
        firstPosition p0: Int,
        _ ws: Workspace,
        decoding: Bool = false
    ) {
        let c = spec.configuration
        let d = c.hiddenSize
        let f = c.feedForwardSize
        let h = ws.buffer(Slot.h, n * d)
        let o = ws.buffer(Slot.o, n * d)
        let gate = ws.buffer(Slot.gate, n * f)
        let up = ws.buffer(Slot.up, n * f)
        Ops.rmsNorm(x, weight: w.ffnNorm, count: d, rows: n, eps: spec.rmsEpsilon, out: h)
        products([(w.gate, gate), (w.up, up)], x: h, count: n, firstPosition: p0, ws, decoding: decoding)
        switch spec.activation {
        case .geluTanh: Ops.gegluTanh(gate: gate, up: up, count: n * f)
        case .silu: Ops.swiglu(gate: gate, up: up, count: n * f)
        }
        products([(w.down, o)], x: gate, count: n, firstPosition: p0, ws, decoding: decoding)
        if let pn = w.postFFNNorm { Ops.rmsNorm(o, weight: pn, count: d, rows: n, eps: spec.rmsEpsilon, out: o) }
        Ops.add(x, o, count: n * d)
    }

    /// Y = X·Wᵀ for each (W, Y) of `outputs`, over `count` rows of `x`: with `decoding`, each row as a
    /// one-token step of its own sequence computes it; otherwise a single token's matrices share one
    /// pass over `x`, and a batch goes through the position-aligned blocks of ``linear``.
    private func products(
        _ outputs: [(weight: WeightMatrix, y: UnsafeMutablePointer<Float>)],
        x: UnsafePointer<Float>,
        count n: Int,
        firstPosition p0: Int,
        _ ws: Workspace,
        decoding: Bool
    ) {
        if decoding {
            for (w, y) in outputs { decodeLinear(w, x: x, y: y, count: n, ws) }
        } else if n == 1 {
            if Linear.defaultStrategy == .llamaOrder {
                for (w, y) in outputs { oneToken(w, x: x, y: y, ws) }
            } else {
                Linear.matvec(outputs, x: x, scratch: ws.linear)
            }
        } else {
            for (w, y) in outputs { linear(w, x: x, y: y, count: n, firstPosition: p0, ws) }
        }
    }
}

/// Tokens per block of the batched products. Blocks start at multiples of this absolute position, so
/// a token is computed by the same calls whether its batch began at 0 or at a chunk boundary (the
/// cache's 256-token chunks): prefix-from-cache + prefill(rest) is bit-identical to prefill(all).
let linearBlockTokens = 256

/// Y = X·Wᵀ for `count` tokens at positions `firstPosition…`, in position-aligned blocks.
func linear(
    _ w: WeightMatrix,
    x: UnsafePointer<Float>,
    y: UnsafeMutablePointer<Float>,
    count: Int,
    firstPosition: Int,
    _ ws: Workspace
) {
    if Linear.defaultStrategy == .invariant {
        // Every row is computed as a lone token's: no blocks to align.
        Linear.matmul(w, x: x, count: count, y: y, strategy: .invariant, scratch: ws.linear)
        return
    }
    var blocks: [Range<Int>] = []
    var i = 0
    while i < count {
        let n = min(linearBlockTokens - (firstPosition + i) % linearBlockTokens, count - i)
        blocks.append(i..<(i + n))
        i += n
    }
    // A one-token block takes the one-token kernels (as a lone token would).
    for block in blocks where block.count == 1 {
        oneToken(w, x: x + block.lowerBound * w.columns, y: y + block.lowerBound * w.rows, ws)
    }
    let batched = blocks.filter { $0.count > 1 }
    guard !batched.isEmpty else { return }
    if Linear.defaultStrategy == .llamaOrder && Linear.supportsLlamaOrder(w) {
        for block in batched {
            Linear.orderedMatmul(
                w,
                x: x + block.lowerBound * w.columns,
                count: block.count,
                y: y + block.lowerBound * w.rows,
                scratch: ws.linear
            )
        }
    } else if Linear.defaultStrategy != .quantized || !w.usesQuantizedDot {
        Linear.sgemmBlocks(w, x: x, blocks: batched, y: y, scratch: ws.linear)
    } else {
        for block in batched {
            Linear.matmul(
                w,
                x: x + block.lowerBound * w.columns,
                count: block.count,
                y: y + block.lowerBound * w.rows,
                scratch: ws.linear
            )
        }
    }
}

/// y = W·x for one token: the decode kernels, or llama.cpp's one-token kernels with
/// ``Linear/Strategy/llamaOrder``.
private func oneToken(_ w: WeightMatrix, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, _ ws: Workspace) {
    if Linear.defaultStrategy == .llamaOrder && Linear.supportsLlamaOrder(w) {
        Linear.orderedMatmul(w, x: x, count: 1, y: y, scratch: ws.linear)
    } else {
        Linear.matvec([(w, y)], x: x, scratch: ws.linear)
    }
}

/// Y = X·Wᵀ for `count` tokens of different sequences, each row computed exactly as the one-token
/// (decode) kernels compute it, reading the weights once for all rows when the int8 products apply.
private func decodeLinear(
    _ w: WeightMatrix,
    x: UnsafePointer<Float>,
    y: UnsafeMutablePointer<Float>,
    count: Int,
    _ ws: Workspace
) {
    if Linear.defaultStrategy == .llamaOrder && Linear.supportsLlamaOrder(w) {
        for i in 0..<count { oneToken(w, x: x + i * w.columns, y: y + i * w.rows, ws) }
        return
    }
    if count > 1 && w.usesQuantizedDot && !Linear.exactFloat {
        Linear.matmul(w, x: x, count: count, y: y, strategy: .quantized, scratch: ws.linear)
        return
    }
    for i in 0..<count {
        Linear.matvec([(w, y + i * w.rows)], x: x + i * w.columns, scratch: ws.linear)
    }
}

/// Metadata readers shared by the architectures.
extension GGUFFile {
    func hyperparameter(_ arch: String, _ key: String) -> Int? { int("\(arch).\(key)") }
    func hyperparameterFloat(_ arch: String, _ key: String) -> Float? { float("\(arch).\(key)") }

    func requireHyperparameter(_ arch: String, _ key: String) throws(InferenceError) -> Int {
        guard let value = int("\(arch).\(key)"), value > 0 else {
            throw InferenceError.invalidModel("metadata key '\(arch).\(key)' is missing or not a positive integer")
        }
        return value
    }
}
