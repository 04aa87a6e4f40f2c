// Scaled dot-product attention over a paged KV memory, causal, with an optional sliding window,
// and grouped-query heads (several query heads share one KV head).
//
// Mask semantics (as llama.cpp's standard sliding window): the query at position p sees keys at
// positions k with k ≤ p and, when `window` > 0, p − k < window.

internal import CKernels
internal import COpenBLAS
internal import Foundation

/// One layer's keys or values in pages of `pageSize` tokens; token t of the sequence is row
/// `t % pageSize` of page `t / pageSize`, and each row holds `kvHeads × headDim` floats.
package struct KVPages: @unchecked Sendable {
    // @unchecked: a view of page memory owned by the sequence's KV store, which outlives the call.
    package var pages: [UnsafeMutablePointer<Float>]
    package var pageSize: Int
    package var rowStride: Int

    package init(pages: [UnsafeMutablePointer<Float>], pageSize: Int, rowStride: Int) {
        self.pages = pages
        self.pageSize = pageSize
        self.rowStride = rowStride
    }

    /// The row of token `t`.
    @inline(__always)
    package func row(_ t: Int) -> UnsafeMutablePointer<Float> {
        pages[t / pageSize] + (t % pageSize) * rowStride
    }

    /// Calls `body` with the page pointers as C's `const float *const *`, read in place (same layout).
    @inline(__always)
    func withPageTable<R>(_ body: (UnsafePointer<UnsafePointer<Float>?>?) -> R) -> R {
        pages.withUnsafeBufferPointer { $0.withMemoryRebound(to: UnsafePointer<Float>?.self) { body($0.baseAddress) } }
    }
}

/// The queries of one sequence for ``Attention/prefill(_:shape:scratch:)``: `count` tokens at positions
/// `firstPosition…` whose keys and values are already in `keys`/`values`.
package struct AttentionQueries: @unchecked Sendable {
    // @unchecked: views of memory owned by the caller for the duration of the call.
    /// `count × heads × headDim` floats.
    package var q: UnsafePointer<Float>
    package var count: Int
    package var firstPosition: Int
    package var keys: KVPages
    package var values: KVPages
    /// `count × heads × headDim` floats.
    package var out: UnsafeMutablePointer<Float>

    package init(
        q: UnsafePointer<Float>,
        count: Int,
        firstPosition: Int,
        keys: KVPages,
        values: KVPages,
        out: UnsafeMutablePointer<Float>
    ) {
        self.q = q
        self.count = count
        self.firstPosition = firstPosition
        self.keys = keys
        self.values = values
        self.out = out
    }
}

/// Shapes shared by the attention calls of one layer.
package struct AttentionShape: Sendable {
    package var heads: Int
    package var kvHeads: Int
    package var headDim: Int
    /// Sliding window in tokens; 0 for full causal attention.
    package var window: Int
    /// Multiplier of q·k.
    package var scale: Float

    package init(heads: Int, kvHeads: Int, headDim: Int, window: Int, scale: Float) {
        precondition(heads % kvHeads == 0, "query heads must be a multiple of KV heads")
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.window = window
        self.scale = scale
    }

    /// First key position visible to a query at `position`.
    @inline(__always)
    package func firstKey(for position: Int) -> Int {
        window > 0 ? max(0, position - window + 1) : 0
    }
}

/// Reusable buffers for attention, one per worker thread.
package final class AttentionScratch {
    private var buffers: [(UnsafeMutablePointer<Float>, Int)] = []

    package init() {}

    deinit { for (b, _) in buffers { b.deallocate() } }

    /// Buffer `worker` with room for `count` floats (contents undefined).
    package func floats(worker: Int = 0, _ count: Int) -> UnsafeMutablePointer<Float> {
        while buffers.count <= worker { buffers.append((.allocate(capacity: 1), 1)) }
        if buffers[worker].1 >= count { return buffers[worker].0 }
        buffers[worker].0.deallocate()
        buffers[worker] = (.allocate(capacity: count), count)
        return buffers[worker].0
    }
}

@available(*, unavailable)
extension AttentionScratch: Sendable {}

/// Attention kernels.
package enum Attention {
    /// Attention of one query token at `position` over keys `firstKey(position)...position`.
    ///
    /// - Parameters:
    ///   - q: `heads × headDim` floats.
    ///   - out: `heads × headDim` floats.
    package static func decode(
        q: UnsafePointer<Float>,
        position: Int,
        keys: KVPages,
        values: KVPages,
        shape: AttentionShape,
        out: UnsafeMutablePointer<Float>,
        scratch: AttentionScratch
    ) {
        let lo = shape.firstKey(for: position)
        let n = position - lo + 1
        let hd = shape.headDim
        let group = shape.heads / shape.kvHeads
        let scores = scratch.floats(n * shape.heads)
        let body: (Int) -> Void = { h in
            let g = h / group
            let qh = q + h * hd
            let s = scores + h * n
            for t in 0..<n {
                s[t] = Linear.dot(qh, keys.row(lo + t) + g * hd, hd) * shape.scale
            }
            Ops.softmax(s, count: n)
            let o = out + h * hd
            o.update(repeating: 0, count: hd)
            for t in 0..<n {
                axpy(s[t], values.row(lo + t) + g * hd, o, hd)
            }
        }
        // Threads pay off only once the context is long enough.
        if n * shape.heads >= 2048 {
            Parallel.forEachJob(shape.heads) { h, _ in body(h) }
        } else {
            for h in 0..<shape.heads { body(h) }
        }
    }

    /// y += a·x over `count` floats.
    @inline(__always)
    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        let av = SIMD8<Float>(repeating: a)
        var i = 0
        // Safe: loads and stores stay within count floats.
        while i + 8 <= count {
            let xv = UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self)
            let yv = UnsafeRawPointer(y + i).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(y + i).storeBytes(of: yv + av * xv, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            y[i] += a * x[i]
            i += 1
        }
    }

    /// Attention of `count` query tokens at positions `firstPosition ..< firstPosition + count`, whose keys
    /// and values are already in `keys`/`values`, over all visible keys.
    ///
    /// - Parameters:
    ///   - q: `count × heads × headDim` floats.
    ///   - out: `count × heads × headDim` floats.
    package static func prefill(
        q: UnsafePointer<Float>,
        count: Int,
        firstPosition: Int,
        keys: KVPages,
        values: KVPages,
        shape: AttentionShape,
        out: UnsafeMutablePointer<Float>,
        scratch: AttentionScratch
    ) {
        prefill(
            [AttentionQueries(q: q, count: count, firstPosition: firstPosition, keys: keys, values: values, out: out)],
            shape: shape,
            scratch: scratch
        )
    }

    /// Attention of the queries of several sequences (one layer of a batched decode step), their jobs
    /// spread over the threads together. Each query is computed exactly as by a call of its own.
    package static func prefill(_ batch: [AttentionQueries], shape: AttentionShape, scratch: AttentionScratch) {
        if Linear.defaultStrategy == .invariant {
            invariantRows(batch, shape: shape, scratch: scratch)
            return
        }
        _ = Parallel.configureBLAS
        let hd = shape.headDim
        let rowWidth = shape.heads * hd
        let group = shape.heads / shape.kvHeads
        // With one KV head, the heads of consecutive tokens form one matrix (rows `hd` apart).
        let stacked = shape.kvHeads == 1
        let rowsPerToken = stacked ? shape.heads : 1
        // Query tiles are aligned to absolute positions (multiples of `tile`), so a token is computed
        // with the same sgemm shapes whether its batch started at 0 or at a later tile boundary: a prefix
        // loaded from the cache (whole chunks) followed by a prefill of the rest is bit-identical to a
        // prefill of everything.
        let tile = max(1, 256 / rowsPerToken)
        var tiles: [(item: Int, start: Int, count: Int)] = []
        var maxWidth = 0
        for (item, queries) in batch.enumerated() {
            var i0 = 0
            while i0 < queries.count {
                let absolute = queries.firstPosition + i0
                let nq = min(tile - absolute % tile, queries.count - i0)
                tiles.append((item, i0, nq))
                i0 += nq
            }
            maxWidth = max(maxWidth, tile + (shape.window > 0 ? shape.window : queries.firstPosition + queries.count))
        }
        let headSteps = shape.heads / rowsPerToken
        let roundProbabilities = Ops.emulateHalfPrecision
        // llama.cpp's summation order for q·k and P·V (see Linear.Strategy.llamaOrder), one row at a
        // time through eight lanes per output; its operands are half-precision values.
        let ordered = roundProbabilities && Linear.defaultStrategy == .llamaOrder
        let scoreFloats = tile * rowsPerToken * maxWidth
        let buffers = (0..<Parallel.threadCount).map {
            scratch.floats(worker: $0, scoreFloats + (ordered ? 32 * hd : 0))
        }
        // Jobs are (query tile, head or head stack); each worker uses its own score buffer and calls
        // single-threaded sgemm.
        Parallel.forEachJob(tiles.count * headSteps) { job, worker in
            let (item, i0, nq) = tiles[job / headSteps]
            let queries = batch[item]
            let firstPosition = queries.firstPosition
            let keys = queries.keys
            let values = queries.values
            let h = (job % headSteps) * rowsPerToken
            let pFirst = firstPosition + i0
            let pLast = firstPosition + i0 + nq - 1
            let lo = shape.firstKey(for: pFirst)
            let hi = pLast + 1
            let width = hi - lo
            let m = nq * rowsPerToken
            let scores = buffers[worker]
            let g = h / group
            let a = queries.q + i0 * rowWidth + h * hd
            let lda = stacked ? hd : rowWidth
            let o = queries.out + i0 * rowWidth + h * hd
            // llama.cpp computes a batch of one token with its row dot, not its batched kernels.
            let oneToken: Int32 = queries.count == 1 ? 1 : 0
            if ordered {
                for r in 0..<m {
                    forEachPageSpan(lo..<hi, pageSize: keys.pageSize) { page, offset, start, n in
                        lmc_scores_ordered(
                            a + r * lda, keys.pages[page] + offset * keys.rowStride + g * hd, Int64(keys.rowStride),
                            Int64(n), Int64(hd), shape.scale, oneToken, scores + r * width + (start - lo))
                    }
                }
            } else {
                // S = scale · Q Kᵀ, one sgemm per page the key range touches.
                forEachPageSpan(lo..<hi, pageSize: keys.pageSize) { page, offset, start, n in
                cblas_sgemm(
                    CblasRowMajor,
                    CblasNoTrans,
                    CblasTrans,
                    Int32(m),
                    Int32(n),
                    Int32(hd),
                    shape.scale,
                    a,
                    Int32(lda),
                    keys.pages[page] + offset * keys.rowStride + g * hd,
                    Int32(keys.rowStride),
                    0,
                    scores + (start - lo),
                    Int32(width)
                )
                }
            }
            // Mask and softmax each row.
            for r in 0..<m {
                let p = firstPosition + i0 + r / rowsPerToken
                let first = shape.firstKey(for: p)
                let s = scores + r * width
                let visibleLo = first - lo
                let visibleHi = p - lo + 1
                if visibleLo > 0 { s.update(repeating: 0, count: visibleLo) }
                if roundProbabilities {
                    // llama.cpp's row of scores is indexed by KV cell, one cell per position here.
                    Ops.softmax(s + visibleLo, count: visibleHi - visibleLo, rowPosition: first)
                    Ops.roundToHalf(s + visibleLo, count: visibleHi - visibleLo)
                } else {
                    Ops.softmax(s + visibleLo, count: visibleHi - visibleLo)
                }
                if visibleHi < width { (s + visibleHi).update(repeating: 0, count: width - visibleHi) }
            }
            if ordered {
                let lanes = scores + scoreFloats
                for r in 0..<m {
                    lanes.update(repeating: 0, count: 32 * hd)
                    forEachPageSpan(lo..<hi, pageSize: values.pageSize) { page, offset, start, n in
                        lmc_values_ordered_accumulate(
                            scores + r * width + (start - lo), values.pages[page] + offset * values.rowStride + g * hd,
                            Int64(values.rowStride), Int64(n), Int64(start), Int64(hd), oneToken, lanes)
                    }
                    lmc_values_ordered_finish(lanes, Int64(hd), oneToken, o + r * lda)
                }
                return
            }
            // O = P V.
            var firstSpan = true
            forEachPageSpan(lo..<hi, pageSize: values.pageSize) { page, offset, start, n in
                cblas_sgemm(
                    CblasRowMajor,
                    CblasNoTrans,
                    CblasNoTrans,
                    Int32(m),
                    Int32(hd),
                    Int32(n),
                    1,
                    scores + (start - lo),
                    Int32(width),
                    values.pages[page] + offset * values.rowStride + g * hd,
                    Int32(values.rowStride),
                    firstSpan ? 0 : 1,
                    o,
                    Int32(lda)
                )
                firstSpan = false
            }
        }
    }

    /// Attention of every query row of `batch` computed on its own (`lmc_attend`, Attention.c): scores,
    /// softmax and weighted values of one (token, head) depend only on that query, its position and the
    /// keys and values, never on the other rows, the batch, the thread count or the instruction set
    /// (``Linear/Strategy/invariant``).
    package static func invariantRows(_ batch: [AttentionQueries], shape: AttentionShape, scratch: AttentionScratch) {
        let hd = shape.headDim
        let rowWidth = shape.heads * hd
        let group = shape.heads / shape.kvHeads
        let tokens = batch.reduce(0) { $0 + $1.count }
        // With one KV head the heads of consecutive tokens are one run of query vectors `hd` apart, so a
        // block of tokens is one call and each key is read once per block; otherwise one call per token
        // and KV head. Blocks of up to 16 tokens, fewer when the batch is short, so that every thread
        // gets one (a question of 12 tokens after 7,000 cached ones took one thread for all its
        // attention). The blocks only share loads: the results are the same for any split.
        let tokensPerJob = shape.kvHeads == 1 ? max(1, min(16, (tokens + Parallel.threadCount - 1) / Parallel.threadCount)) : 1
        // A job: `count` tokens from `token` of batch item `item`, heads `heads` of KV head `kvHead`'s group.
        var jobs: [(item: Int, token: Int, count: Int, kvHead: Int, heads: Range<Int>)] = []
        var widest = 1
        // Fewer calls than threads (a decode step of one sequence deep in its context): the heads of a
        // token are split between jobs, so every thread reads keys and values. Each query vector's
        // result does not depend on which vectors share its call.
        let headParts = tokens * shape.kvHeads < Parallel.threadCount ? min(group, Parallel.threadCount) : 1
        for (item, queries) in batch.enumerated() {
            var i = 0
            while i < queries.count {
                let n = headParts > 1 ? 1 : min(tokensPerJob, queries.count - i)
                for g in 0..<shape.kvHeads {
                    for part in 0..<headParts {
                        jobs.append((item, i, n, g, (group * part / headParts)..<(group * (part + 1) / headParts)))
                    }
                }
                i += n
            }
            let last = queries.firstPosition + queries.count - 1
            widest = max(widest, last - shape.firstKey(for: last) + 1)
        }
        let vectors = tokensPerJob * group
        // Rounded to an even count, so that the Int64 bounds after it are 8-byte aligned.
        let scratchFloats = (Int(lmc_attend_scratch_floats(Int64(vectors), Int64(widest))) + 1) / 2 * 2
        let buffers = (0..<Parallel.threadCount).map { scratch.floats(worker: $0, scratchFloats + 4 * vectors) }
        Parallel.forEachJob(jobs.count) { job, worker in
            let (item, i0, n, g, heads) = jobs[job]
            let queries = batch[item]
            // All heads of the group (one KV head: a run of vectors across tokens), or some heads of one token.
            let perToken = heads.count
            let m = n * perToken
            let buffer = buffers[worker]
            // Each query vector's key range, as Int64 positions after the scratch.
            let bounds = UnsafeMutableRawPointer(buffer + scratchFloats).bindMemory(to: Int64.self, capacity: 2 * m)
            for i in 0..<n {
                let position = queries.firstPosition + i0 + i
                for j in 0..<perToken {
                    bounds[i * perToken + j] = Int64(shape.firstKey(for: position))
                    bounds[m + i * perToken + j] = Int64(position)
                }
            }
            queries.keys.withPageTable { keyPages in
                queries.values.withPageTable { valuePages in
                    let keys = lmc_kv_view(
                        pages: keyPages, page_size: Int64(queries.keys.pageSize),
                        row_stride: Int64(queries.keys.rowStride), offset: Int64(g * hd))
                    let values = lmc_kv_view(
                        pages: valuePages, page_size: Int64(queries.values.pageSize),
                        row_stride: Int64(queries.values.rowStride), offset: Int64(g * hd))
                    // Query vector (token i, head g·group + j) is at q + i·rowWidth + (g·group + j)·hd: with one
                    // KV head and whole groups, or one token per call, each vector is hd floats after the last.
                    let first = i0 * rowWidth + (g * group + heads.lowerBound) * hd
                    lmc_attend(
                        queries.q + first, Int64(hd), Int64(m), bounds, bounds + m, keys, values, Int64(hd),
                        shape.scale, queries.out + first, Int64(hd), buffer)
                }
            }
        }
    }

    /// Calls `body(page, offsetInPage, firstToken, tokenCount)` for each page piece of `range`.
    @inline(__always)
    static func forEachPageSpan(_ range: Range<Int>, pageSize: Int, _ body: (Int, Int, Int, Int) -> Void) {
        var t = range.lowerBound
        while t < range.upperBound {
            let page = t / pageSize
            let offset = t % pageSize
            let n = min(pageSize - offset, range.upperBound - t)
            body(page, offset, t, n)
            t += n
        }
    }
}
