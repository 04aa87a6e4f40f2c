// Selective recompute for non-prefix reuse, after CacheBlend (Yao et al., "CacheBlend: Fast Large
// Language Model Serving for RAG with Cached Knowledge Fusion", EuroSys 2025): a prefill in which
// some tokens' KV rows were loaded from the cache, computed at every layer only for the tokens
// whose loaded KV deviates most from what a full prefill would compute.

internal import Kernels
public import LMCacheCore

/// How a blended prefill recomputes.
public struct BlendPlan: Sendable, Hashable {
    /// Per token of the prefill: whether its KV rows (every layer) were loaded from the cache.
    public var cached: [Bool]
    /// Layers at which each computed token's deviation is measured, ascending. Empty: naive reuse,
    /// where only the tokens not found in the cache are computed, at every layer.
    public var checkLayers: [Int]
    /// Per check layer (the last one repeats): the fraction of the cached tokens still computed in
    /// the layers after it, those with the largest deviation.
    public var ratios: [Double]

    /// A plan; `ratios` may be empty only without check layers.
    public init(cached: [Bool], checkLayers: [Int], ratios: [Double]) {
        precondition(!ratios.isEmpty || checkLayers.isEmpty, "a check layer needs a ratio")
        self.cached = cached
        self.checkLayers = checkLayers.sorted()
        self.ratios = ratios
    }
}

// Blending is something a model does: the engine's transformers implement it, other models throw.
extension LanguageModel {
    public func forwardBlend(
        _ tokens: [Int32],
        sequence: SequenceKV,
        plan: BlendPlan,
        workspace: Workspace
    ) throws(InferenceError) -> [Float] {
        throw InferenceError.unsupportedModel("blending needs one of the engine's transformer models")
    }

    public func importMovedKV(
        _ bytes: UnsafeRawBufferPointer,
        of dtype: KVDType,
        computedAt: Int,
        into sequence: SequenceKV,
        positions: Range<Int>
    ) throws(InferenceError) {
        throw InferenceError.unsupportedModel("blending needs one of the engine's transformer models")
    }
}

extension TransformerModel {
    public func forwardBlend(
        _ tokens: [Int32],
        sequence: SequenceKV,
        plan: BlendPlan,
        workspace: Workspace
    ) throws(InferenceError) -> [Float] {
        if let layer = plan.checkLayers.first(where: { $0 >= core.layers.count }) {
            throw InferenceError.invalidInput(
                "blend check layer \(layer) is outside the model's \(core.layers.count) layers"
            )
        }
        return try core.forwardBlend(tokens, sequence: sequence, plan: plan, workspace: workspace)
    }

    public func importMovedKV(
        _ bytes: UnsafeRawBufferPointer,
        of dtype: KVDType,
        computedAt: Int,
        into sequence: SequenceKV,
        positions: Range<Int>
    ) throws(InferenceError) {
        try core.importMovedKV(bytes, of: dtype, computedAt: computedAt, into: sequence, positions: positions)
    }
}


extension TransformerCore {
    /// See ``LanguageModel/importMovedKV(_:of:computedAt:into:positions:)``.
    func importMovedKV(
        _ bytes: UnsafeRawBufferPointer,
        of dtype: KVDType,
        computedAt: Int,
        into sequence: SequenceKV,
        positions: Range<Int>
    ) throws(InferenceError) {
        let layout = sequence.layout
        let row = layout.kvHeads * layout.headDim
        let tokens = positions.count
        let count = layout.layers * 2 * tokens * row
        let stored = KVLayout(layers: layout.layers, kvHeads: layout.kvHeads, headDim: layout.headDim, dtype: dtype)
        guard bytes.count == stored.byteCount(tokens: tokens), dtype == .float32 || dtype == .float16 else {
            throw InferenceError.invalidKV("moved KV of \(bytes.count) bytes does not fit \(stored) for \(tokens) tokens")
        }
        guard positions.upperBound <= sequence.capacity else {
            throw InferenceError.invalidKV("positions \(positions) are beyond the sequence's \(sequence.capacity)")
        }
        sequence.reserve(positions.upperBound, writingFrom: positions.lowerBound)
        let delta = positions.lowerBound - computedAt
        withUnsafeTemporaryAllocation(of: Float.self, capacity: count) { floats in
            let base = floats.baseAddress!
            if dtype == .float32 {
                // Safe: `bytes` holds `count` floats (checked above).
                UnsafeMutableRawPointer(base).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            } else {
                // Safe: `bytes` holds `count` half-precision values, `floats` room for `count` floats.
                Ops.convertFromHalf(bytes.baseAddress!, base, count: count)
            }
            // Layout: layers × {K, V} × tokens × row.
            for layer in 0..<layout.layers {
                rerotateKeys(base + (layer * 2) * tokens * row, rows: tokens, layer: layer, by: delta)
                for kv in 0..<2 {
                    let source = base + (layer * 2 + kv) * tokens * row
                    for j in 0..<tokens {
                        sequence.row(layer: layer, kv: kv, position: positions.lowerBound + j)
                            .update(from: source + j * row, count: row)
                    }
                }
            }
        }
    }

    /// Re-rotates `rows` key rows (each `kvHeads × headDim` floats) of layer `layer` from the
    /// position they were computed at to `delta` positions later, and rounds them as the engine
    /// stores keys. A zero `delta` leaves them untouched, bit for bit.
    func rerotateKeys(_ k: UnsafeMutablePointer<Float>, rows: Int, layer: Int, by delta: Int) {
        guard delta != 0 else { return }
        let c = spec.configuration
        let width = c.kvHeads * c.headDim
        for r in 0..<rows {
            let row = k + r * width
            Ops.rope(
                row,
                heads: c.kvHeads,
                headDim: c.headDim,
                position: delta,
                frequencies: spec.ropeFrequencies[layer],
                style: spec.rope
            )
            if Ops.emulateHalfPrecision { Ops.roundToHalf(row, count: width) }
        }
    }

    /// A prefill of `tokens` after `sequence`'s tokens in which the rows of the tokens marked in
    /// `plan.cached` already hold loaded KV (at every layer, at their positions in the sequence).
    ///
    /// Up to and including each check layer every token is computed; at a check layer each cached
    /// token's deviation (squared distance between its loaded and its computed key row) is measured,
    /// and the layers after it compute only the given fraction of the cached tokens with the largest
    /// deviation, every token not in the cache and the last token. The other tokens keep their
    /// loaded KV. When every token stays computed (ratio 1), the calls are exactly those of
    /// ``forward(_:sequence:outputs:workspace:)``, so the logits and KV are bit-identical to it.
    ///
    /// - Returns: the last token's logits.
    func forwardBlend(
        _ tokens: [Int32],
        sequence kv: SequenceKV,
        plan: BlendPlan,
        workspace ws: Workspace
    ) throws(InferenceError) -> [Float] {
        let c = spec.configuration
        let n = tokens.count
        guard n > 0, plan.cached.count == n else {
            throw InferenceError.invalidInput("a blended prefill needs tokens and one cache flag per token")
        }
        let p0 = try reserve(tokens, in: kv)
        let d = c.hiddenSize
        let kvWidth = c.kvHeads * c.headDim
        let cached = plan.cached

        // Rows of `x` belong to the computed tokens `active` (ascending, always ending with n − 1).
        var active = plan.checkLayers.isEmpty ? (0..<n).filter { !cached[$0] || $0 == n - 1 } : Array(0..<n)
        let x = ws.buffer(Slot.x, n * d)
        embed(active.lazy.map { tokens[$0] }, into: x)

        let deviation = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
        deviation.initialize(repeating: 0)
        defer { deviation.deallocate() }
        var nextCheck = 0
        // The row of `x` each token has in the current layer is its index in `active`.
        let measured = { (layer: Int) in nextCheck < plan.checkLayers.count && plan.checkLayers[nextCheck] == layer }
        runLayers(
            x,
            rows: active.map { PassRow(kv: kv, position: p0 + $0) },
            rowwise: false,
            ws,
            beforeWrite: { row, layer, key in
                // A cached token's deviation at a check layer: the squared distance between its loaded
                // key row (still in the sequence) and the one just computed.
                let t = active[row]
                guard cached[t], measured(layer) else { return }
                let loaded = kv.row(layer: layer, kv: 0, position: p0 + t)
                var sum: Float = 0
                for e in 0..<kvWidth {
                    let diff = key[e] - loaded[e]
                    sum += diff * diff
                }
                deviation[t] = sum
            },
            afterLayer: { layer, rows in
                guard measured(layer) else { return }
                let ratio = plan.ratios[min(nextCheck, plan.ratios.count - 1)]
                nextCheck += 1
                let kept = Self.selection(active, cached: cached, deviation: UnsafeBufferPointer(deviation), ratio: ratio)
                guard kept.count < active.count else { return }
                // `kept` is an ascending subsequence of `active`, so rows only move towards the front.
                var from = 0
                for (to, t) in kept.enumerated() {
                    while active[from] != t { from += 1 }
                    if from != to { (x + to * d).update(from: x + from * d, count: d) }
                }
                active = kept
                rows = kept.map { PassRow(kv: kv, position: p0 + $0) }
            }
        )
        kv.append(tokens)
        return logits(x + (active.count - 1) * d, rows: 1, firstPosition: p0 + n - 1, ws)
    }

    /// The tokens of `active` computed after a check: the uncached ones, the last one, and the
    /// `ratio` fraction (rounded up) of the cached ones with the largest deviation; ascending.
    static func selection(
        _ active: [Int],
        cached: [Bool],
        deviation: UnsafeBufferPointer<Float>,
        ratio: Double
    ) -> [Int] {
        let last = cached.count - 1
        let candidates = active.filter { cached[$0] && $0 != last }
        let keep = min(candidates.count, Int((ratio * Double(candidates.count)).rounded(.up)))
        let chosen = Set(
            candidates.sorted { deviation[$0] > deviation[$1] || (deviation[$0] == deviation[$1] && $0 < $1) }.prefix(
                keep
            )
        )
        return active.filter { !cached[$0] || $0 == last || chosen.contains($0) }
    }
}
