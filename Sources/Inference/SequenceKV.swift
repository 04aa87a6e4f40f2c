#if canImport(Glibc)
internal import Glibc
#endif
package import Kernels
public import LMCacheCore
internal import Synchronization

/// The engine's KV memory for one sequence, in pages of `pageSize` tokens.
///
/// A page holds every layer's keys and values for its tokens: per layer, K as
/// `pageSize × kvHeads × headDim` floats followed by V in the same shape. Pages are allocated as the
/// sequence grows and are never moved, so attention reads them in place.
///
/// Sequences share full pages of a common prefix: ``copyPrefix(of:count:)`` hands the other sequence's
/// full pages over instead of copying them (many requests on one system prompt hold it once, and their
/// attention reads the same memory). A shared page is copied before either holder writes to it
/// (copy on write): every writer names the positions it writes with ``reserve(_:writingFrom:)``.
///
/// Pages come from the kernel zeroed, or from ``freePages``, where another sequence's pages went when it
/// let go of them (with that sequence's rows still in them: every row is written before it is read).
///
/// The cache layer moves whole chunks in and out with ``exportKV(_:)`` and ``importKV(_:tokens:at:)``,
/// in the layout that ``KVLayout`` describes; a prefix loaded that way followed by a prefill of the
/// rest gives the same logits as a prefill of everything.
///
/// ```swift
/// let kv = model.makeSequence()
/// _ = try model.forward([2, 818, 5279], sequence: kv, outputs: .last, workspace: workspace)
/// let bytes = try kv.exportKV(0..<3)          // layers × {K,V} × 3 × kvHeads × headDim floats
/// let copy = model.makeSequence()
/// try copy.importKV(bytes, tokens: kv.tokens, at: 0)
/// ```
public final class SequenceKV {
    /// The shape of the stored keys and values.
    public let layout: KVLayout
    /// Tokens per page.
    public let pageSize: Int
    /// The most tokens the sequence may hold (the model's context length).
    public let capacity: Int
    /// The tokens whose keys and values are stored, in order; `tokens.count` is the next position.
    public private(set) var tokens: [Int32] = []
    /// Per layer, the first position whose keys and values the layer holds. All 0, but after a cache
    /// load that filled the sliding-window layers only where the next token's window reaches (see
    /// ``assumeTokens(_:partialLayers:from:)``): rows before it hold nothing, or another request's
    /// bytes, and are never exported or attended to (``canContinue(at:windows:)``).
    public private(set) var firstFilled: [Int]

    /// The pages, in position order; another sequence may hold some of them too.
    private var pages: [KVPage] = []

    /// Where new pages come from first and where pages go when no sequence holds them any more (`nil`:
    /// straight from and back to the kernel).
    package var freePages: FreeKVPages?

    /// Number of stored tokens.
    public var count: Int { tokens.count }

    /// An empty sequence.
    /// - Precondition: `pageSize` and `capacity` are positive.
    public init(layout: KVLayout, pageSize: Int = 256, capacity: Int) {
        precondition(pageSize > 0 && capacity > 0, "page size and capacity must be positive")
        precondition(layout.dtype == .float32, "the engine keeps keys and values as float32")
        self.layout = layout
        self.pageSize = pageSize
        self.capacity = capacity
        self.firstFilled = Array(repeating: 0, count: layout.layers)
    }

    private var pageFloats: Int { layout.layers * 2 * pageSize * layout.rowElements }

    /// Makes sure pages exist for positions `0..<tokenCount`, without making any of them writable.
    private func allocatePages(upTo tokenCount: Int) {
        while pages.count * pageSize < tokenCount {
            pages.append(KVPage(floats: pageFloats, from: freePages))
        }
    }

    /// Makes sure pages exist for positions `0..<tokenCount` and that the rows from `start` on may be
    /// written: a page holding such rows that another sequence shares is replaced by a page of this
    /// sequence's own, with the rows before `start` copied into it.
    ///
    /// Every write into the pages goes through positions named here first.
    package func reserve(_ tokenCount: Int, writingFrom start: Int) {
        allocatePages(upTo: tokenCount)
        guard start < tokenCount else { return }
        for index in (max(start, 0) / pageSize)..<((tokenCount + pageSize - 1) / pageSize)
        where !isKnownUniquelyReferenced(&pages[index]) {
            let own = KVPage(floats: pageFloats, from: freePages)
            let keep = start - index * pageSize
            if keep > 0 {
                let row = layout.rowElements
                for part in 0..<(layout.layers * 2) {
                    let offset = part * pageSize * row
                    (own.base + offset).update(from: pages[index].base + offset, count: keep * row)
                }
            }
            pages[index] = own
        }
    }

    /// Pages shared with another sequence (see ``copyPrefix(of:count:)``).
    package var sharedPageCount: Int {
        var shared = 0
        for index in pages.indices where !isKnownUniquelyReferenced(&pages[index]) { shared += 1 }
        return shared
    }

    /// Bytes of page memory this sequence holds (pages shared with other sequences included).
    public var allocatedBytes: Int { pages.count * pageFloats * MemoryLayout<Float>.size }

    /// Records that `newTokens` now have keys and values at positions `count...`.
    package func append(_ newTokens: [Int32]) {
        tokens.append(contentsOf: newTokens)
    }

    /// Pointer to K (`kv` = 0) or V (1) of layer `layer` in page `page`.
    @inline(__always)
    private func base(page: Int, layer: Int, kv: Int) -> UnsafeMutablePointer<Float> {
        pages[page].base + (layer * 2 + kv) * pageSize * layout.rowElements
    }

    /// The row of K (`kv` = 0) or V (1) for `position` in `layer`; pages must be reserved.
    @inline(__always)
    package func row(layer: Int, kv: Int, position: Int) -> UnsafeMutablePointer<Float> {
        base(page: position / pageSize, layer: layer, kv: kv) + (position % pageSize) * layout.rowElements
    }

    /// Paged views of layer `layer`'s keys and values for the attention kernels.
    package func views(layer: Int) -> (keys: KVPages, values: KVPages) {
        let k = (0..<pages.count).map { base(page: $0, layer: layer, kv: 0) }
        let v = (0..<pages.count).map { base(page: $0, layer: layer, kv: 1) }
        return (
            KVPages(pages: k, pageSize: pageSize, rowStride: layout.rowElements),
            KVPages(pages: v, pageSize: pageSize, rowStride: layout.rowElements)
        )
    }

    /// Forgets tokens from `newCount` on (their memory is reused by later tokens).
    /// - Precondition: `newCount <= count`.
    public func truncate(to newCount: Int) {
        precondition(newCount >= 0 && newCount <= count, "cannot truncate to \(newCount) of \(count) tokens")
        tokens.removeLast(count - newCount)
        forgetRows(from: newCount)
    }

    /// Records that positions from `position` on are about to be rewritten in every layer: a layer
    /// that held nothing before `position` then holds nothing before it either, and then everything.
    private func forgetRows(from position: Int) {
        for layer in firstFilled.indices where firstFilled[layer] > position {
            firstFilled[layer] = position
        }
    }

    /// Whether tokens can be computed from `position` on after the first `position` tokens: every
    /// layer holds the rows that such a token attends to (in a layer with window `w > 0`, the positions
    /// from `position − w + 1`; with full attention, all). False when a cache load left a
    /// sliding-window layer's earlier rows empty and `position` lies too close to them.
    /// - Precondition: `windows` has one entry per layer; `position <= count`.
    public func canContinue(at position: Int, windows: [Int]) -> Bool {
        precondition(windows.count == firstFilled.count, "\(windows.count) windows for \(firstFilled.count) layers")
        for (layer, first) in firstFilled.enumerated() where first > 0 {
            let window = windows[layer]
            let needed = window > 0 ? max(0, position - window + 1) : 0
            if min(first, position) > needed { return false }
        }
        return true
    }

    /// Throws when a layer of `layers` (all when `nil`) holds nothing for part of `range`.
    private func checkFilled(_ range: Range<Int>, layers: [Int]?) throws(InferenceError) {
        guard !range.isEmpty else { return }
        for layer in layers ?? Array(firstFilled.indices) where firstFilled[layer] > range.lowerBound {
            throw InferenceError.invalidKV(
                "layer \(layer) holds no keys and values before position \(firstFilled[layer]) "
                    + "(a cache load filled only the window the next token sees), so \(range) cannot be exported"
            )
        }
    }

    /// The keys and values of `range`, as `layers × {K, V} × tokens × kvHeads × headDim` float32 bytes.
    ///
    /// - Throws: ``InferenceError`` when `range` is not within the stored tokens.
    /// - Complexity: O(range.count × layers × kvHeads × headDim).
    public func exportKV(_ range: Range<Int>) throws(InferenceError) -> [UInt8] {
        let size = layout.byteCount(tokens: range.count)
        var error: InferenceError?
        let bytes = [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            do throws(InferenceError) {
                try exportKV(range, into: UnsafeMutableRawBufferPointer(buffer))
            } catch let caught {
                error = caught
                buffer.initialize(repeating: 0)
            }
            initialized = size
        }
        if let error { throw error }
        return bytes
    }

    /// Writes the keys and values of `range` into `buffer`, in the layout of ``exportKV(_:)``.
    ///
    /// - Throws: ``InferenceError`` when `range` is not within the stored tokens or `buffer` is not
    ///   exactly `layout.byteCount(tokens: range.count)` bytes.
    /// - Complexity: O(range.count × layers × kvHeads × headDim).
    public func exportKV(_ range: Range<Int>, into buffer: UnsafeMutableRawBufferPointer) throws(InferenceError) {
        try exportKV(range, as: .float32, into: buffer)
    }

    /// ``exportKV(_:into:)`` as elements of `dtype` (float16 values are rounded to nearest even on the
    /// way out of the pages; exact for keys and values the engine already rounded to half precision).
    package func exportKV(
        _ range: Range<Int>,
        as dtype: KVDType,
        into buffer: UnsafeMutableRawBufferPointer
    ) throws(InferenceError) {
        guard range.lowerBound >= 0, range.upperBound <= count else {
            throw InferenceError.invalidKV("export range \(range) is outside the \(count) stored tokens")
        }
        let target = layout.with(dtype: dtype)
        guard buffer.count == target.byteCount(tokens: range.count) else {
            throw InferenceError.invalidKV("\(buffer.count) bytes cannot hold \(range.count) tokens of \(target)")
        }
        try checkFilled(range, layers: nil)
        guard !range.isEmpty, let base = buffer.baseAddress else { return }
        copyRows(range, buffer: base, export: true, dtype: dtype)
    }

    /// Stores keys and values for `tokens` at positions `start ..< start + tokens.count` from bytes in the
    /// ``exportKV(_:)`` layout, replacing what was there and dropping any later tokens.
    ///
    /// - Throws: ``InferenceError`` when `start` is past the stored tokens, the byte count does not match
    ///   `tokens.count` in this layout, or the sequence would exceed its capacity.
    public func importKV(_ bytes: [UInt8], tokens newTokens: [Int32], at start: Int) throws(InferenceError) {
        let failure: InferenceError? = bytes.withUnsafeBytes { raw in
            do throws(InferenceError) {
                try importKV(raw, tokens: newTokens, at: start)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    /// Stores keys and values for `tokens` at positions `start ..< start + tokens.count` from `bytes` in the
    /// ``exportKV(_:)`` layout (for example a cached chunk's bytes), replacing what was there and dropping
    /// any later tokens.
    ///
    /// - Throws: ``InferenceError`` when `start` is past the stored tokens, the byte count does not match
    ///   `tokens.count` in this layout, or the sequence would exceed its capacity.
    /// - Complexity: O(tokens.count × layers × kvHeads × headDim).
    public func importKV(
        _ bytes: UnsafeRawBufferPointer,
        tokens newTokens: some Collection<Int32>,
        at start: Int
    ) throws(InferenceError) {
        try importKV(bytes, of: .float32, tokens: newTokens, at: start)
    }

    /// ``importKV(_:tokens:at:)`` from `bytes` holding elements of `dtype` (float16 values are widened
    /// on the way into the pages, exactly).
    package func importKV(
        _ bytes: UnsafeRawBufferPointer,
        of dtype: KVDType,
        tokens newTokens: some Collection<Int32>,
        at start: Int
    ) throws(InferenceError) {
        guard start >= 0, start <= count else {
            throw InferenceError.invalidKV("import at \(start) would leave a gap after \(count) stored tokens")
        }
        let source = layout.with(dtype: dtype)
        guard bytes.count == source.byteCount(tokens: newTokens.count) else {
            throw InferenceError.invalidKV(
                "\(bytes.count) bytes do not hold \(newTokens.count) tokens of \(source) "
                    + "(\(source.byteCount(tokens: newTokens.count)) bytes)"
            )
        }
        guard start + newTokens.count <= capacity else {
            throw InferenceError.invalidKV(
                "import of \(newTokens.count) tokens at \(start) exceeds capacity \(capacity)"
            )
        }
        let range = start..<(start + newTokens.count)
        reserve(range.upperBound, writingFrom: start)
        if let base = bytes.baseAddress, !range.isEmpty {
            // Safe: the byte count was checked against the layout above; import only reads through the pointer.
            copyRows(range, buffer: UnsafeMutableRawPointer(mutating: base), export: false, dtype: dtype)
        }
        tokens.removeLast(count - start)
        forgetRows(from: start)
        tokens.append(contentsOf: newTokens)
    }

    /// Makes this sequence hold the first `count` tokens of `source` with their keys and values. The
    /// pages that `count` fills whole are shared with `source` (see ``reserve(_:writingFrom:)``), the
    /// rest copied row by row (no conversion); rows this sequence already holds for the same leading
    /// tokens are kept. A layer that `source` holds only from some position on is held from there on
    /// here too.
    ///
    /// Exact only when both sequences were computed with the same arithmetic, as every sequence of one
    /// model is.
    ///
    /// - Throws: ``InferenceError`` when `source` is this sequence, has another layout, holds fewer
    ///   than `count` tokens, or `count` exceeds the capacity.
    /// - Complexity: O(pages + copied tokens × layers × kvHeads × headDim), fewer than `pageSize` tokens
    ///   copied when both sequences have the same page size.
    package func copyPrefix(of source: SequenceKV, count newCount: Int) throws(InferenceError) {
        guard source !== self, source.layout == layout else {
            throw InferenceError.invalidKV("cannot copy KV from \(source === self ? "the sequence itself" : "\(source.layout)")")
        }
        guard newCount >= 0, newCount <= source.count, newCount <= capacity else {
            throw InferenceError.invalidKV("cannot copy \(newCount) tokens of a sequence of \(source.count)")
        }
        var common = 0
        let limit = min(count, newCount)
        while common < limit && tokens[common] == source.tokens[common] { common += 1 }
        // Full pages are taken over: every row of them is written in `source` (or lies before where a
        // layer is held, as it does here afterwards).
        let sharedPages = source.pageSize == pageSize ? newCount / pageSize : 0
        pages = Array(source.pages[..<sharedPages]) + pages.dropFirst(sharedPages)
        let copied = sharedPages * pageSize
        var starts: [Int] = []
        for layer in 0..<layout.layers {
            let sourceFirst = min(source.firstFilled[layer], newCount)
            // Rows this sequence holds for the common tokens stay when both hold the layer from 0.
            let start = firstFilled[layer] == 0 && sourceFirst == 0 ? common : sourceFirst
            starts.append(max(start, copied))
            firstFilled[layer] = sourceFirst
        }
        reserve(newCount, writingFrom: starts.min() ?? newCount)
        let row = layout.rowElements
        for (layer, start) in starts.enumerated() {
            for kv in 0..<2 {
                var t = start
                while t < newCount {
                    let n = min(pageSize - t % pageSize, source.pageSize - t % source.pageSize, newCount - t)
                    self.row(layer: layer, kv: kv, position: t)
                        .update(from: source.row(layer: layer, kv: kv, position: t), count: n * row)
                    t += n
                }
            }
        }
        tokens = Array(source.tokens[..<newCount])
    }

    /// Writes the keys and values of `layers` (in that order) for `range` into `buffer`: the
    /// ``exportKV(_:into:)`` layout restricted to those layers.
    ///
    /// - Throws: ``InferenceError`` when `range` is not within the stored tokens, a layer does not exist, or
    ///   `buffer` is not exactly `layers.count × 2 × range.count` rows.
    public func exportKV(
        _ range: Range<Int>,
        layers: [Int],
        into buffer: UnsafeMutableRawBufferPointer
    ) throws(InferenceError) {
        try exportKV(range, layers: layers, as: .float32, into: buffer)
    }

    /// ``exportKV(_:layers:into:)`` as elements of `dtype`, as ``exportKV(_:as:into:)`` converts.
    package func exportKV(
        _ range: Range<Int>,
        layers: [Int],
        as dtype: KVDType,
        into buffer: UnsafeMutableRawBufferPointer
    ) throws(InferenceError) {
        guard range.lowerBound >= 0, range.upperBound <= count else {
            throw InferenceError.invalidKV("export range \(range) is outside the \(count) stored tokens")
        }
        try checkLayers(layers, bytes: buffer.count, tokens: range.count, elementSize: dtype.size)
        try checkFilled(range, layers: layers)
        guard !range.isEmpty, let base = buffer.baseAddress else { return }
        copyRows(range, buffer: base, export: true, layers: layers, dtype: dtype)
    }

    /// Writes the keys and values of `layers` for positions `range` from `bytes` (the layout of
    /// ``exportKV(_:layers:into:)``), without changing which tokens the sequence holds: the caller
    /// completes the other layers, or knows they are never read (positions outside a layer's window),
    /// and then records the tokens with ``assumeTokens(_:partialLayers:from:)``.
    ///
    /// - Throws: ``InferenceError`` when a layer does not exist, the byte count does not match, or
    ///   `range` exceeds the capacity.
    public func importKV(
        _ bytes: UnsafeRawBufferPointer,
        layers: [Int],
        positions range: Range<Int>
    ) throws(InferenceError) {
        try importKV(bytes, of: .float32, layers: layers, positions: range)
    }

    /// ``importKV(_:layers:positions:)`` from `bytes` holding elements of `dtype` (float16 values are
    /// widened on the way into the pages, exactly).
    package func importKV(
        _ bytes: UnsafeRawBufferPointer,
        of dtype: KVDType,
        layers: [Int],
        positions range: Range<Int>
    ) throws(InferenceError) {
        try checkLayers(layers, bytes: bytes.count, tokens: range.count, elementSize: dtype.size)
        guard range.lowerBound >= 0, range.upperBound <= capacity else {
            throw InferenceError.invalidKV("import of positions \(range) exceeds capacity \(capacity)")
        }
        reserve(range.upperBound, writingFrom: range.lowerBound)
        if let base = bytes.baseAddress, !range.isEmpty {
            // Safe: the byte count was checked above; import only reads through the pointer.
            copyRows(range, buffer: UnsafeMutableRawPointer(mutating: base), export: false, layers: layers, dtype: dtype)
        }
    }

    /// Records that the sequence holds exactly `tokens`, whose keys and values the caller has written
    /// with ``importKV(_:layers:positions:)``: every layer for every position, but `partialLayers`,
    /// which hold them only from position `start` on (a cache load fills a sliding-window layer only
    /// where the next token's window reaches).
    /// - Throws: ``InferenceError`` when `tokens` exceed the capacity or a layer does not exist.
    public func assumeTokens(
        _ newTokens: [Int32],
        partialLayers: [Int] = [],
        from start: Int = 0
    ) throws(InferenceError) {
        guard newTokens.count <= capacity else {
            throw InferenceError.invalidKV("\(newTokens.count) tokens exceed capacity \(capacity)")
        }
        if let bad = partialLayers.first(where: { !firstFilled.indices.contains($0) }) {
            throw InferenceError.invalidKV("layer \(bad) does not exist in \(layout)")
        }
        allocatePages(upTo: newTokens.count)
        tokens = newTokens
        for layer in firstFilled.indices { firstFilled[layer] = 0 }
        let first = min(max(start, 0), newTokens.count)
        for layer in partialLayers { firstFilled[layer] = first }
    }

    private func checkLayers(
        _ layers: [Int],
        bytes: Int,
        tokens: Int,
        elementSize: Int = MemoryLayout<Float>.size
    ) throws(InferenceError) {
        if let bad = layers.first(where: { !(0..<layout.layers).contains($0) }) {
            throw InferenceError.invalidKV("layer \(bad) does not exist in \(layout)")
        }
        let expected = layers.count * 2 * tokens * layout.rowElements * elementSize
        guard bytes == expected else {
            throw InferenceError.invalidKV(
                "\(bytes) bytes do not hold \(tokens) tokens of \(layers.count) layers (\(expected) bytes)"
            )
        }
    }

    /// Copies rows of `range` between the pages and a buffer in the export layout (of `layers`, or all),
    /// whose elements are `dtype`: float16 elements are widened into the pages or narrowed out of them.
    private func copyRows(
        _ range: Range<Int>,
        buffer: UnsafeMutableRawPointer,
        export: Bool,
        layers: [Int]? = nil,
        dtype: KVDType = .float32
    ) {
        precondition(dtype != .bfloat16, "KV pages convert to and from float16 and float32 only")
        let row = layout.rowElements
        var offset = 0
        for layer in layers ?? Array(0..<layout.layers) {
            for kv in 0..<2 {
                var t = range.lowerBound
                // Copy page runs at a time.
                while t < range.upperBound {
                    let n = min(pageSize - t % pageSize, range.upperBound - t)
                    let pagePtr = self.row(layer: layer, kv: kv, position: t)
                    switch (export, dtype) {
                    case (true, .float16): Ops.convertToHalf(pagePtr, buffer + offset, count: n * row)
                    case (false, .float16): Ops.convertFromHalf(buffer + offset, pagePtr, count: n * row)
                    case (true, _):
                        (buffer + offset).assumingMemoryBound(to: Float.self).update(from: pagePtr, count: n * row)
                    case (false, _):
                        pagePtr.update(from: (buffer + offset).assumingMemoryBound(to: Float.self), count: n * row)
                    }
                    offset += n * row * dtype.size
                    t += n
                }
            }
        }
    }
}

/// One page of a sequence's KV memory, freed when the last sequence holding it lets go.
private final class KVPage {
    let base: UnsafeMutablePointer<Float>
    let floats: Int
    let free: FreeKVPages?

    init(floats: Int, from free: FreeKVPages?) {
        self.floats = floats
        self.free = free
        self.base = free?.take(floats: floats) ?? Self.allocatePage(floats: floats)
    }

    deinit {
        if free?.give(base, floats: floats) != true { Self.freePage(base, floats: floats) }
    }

    /// A page of zeros. On Linux it is mapped from the kernel, which hands out zeroed memory on first
    /// touch: a page (9.4 MB for Gemma 3 270M) costs only the rows written, where clearing it in place
    /// cost a warm 8k-token request ~300 MB of writes, most of them to sliding-window layers that a
    /// cache hit never fills.
    fileprivate static func allocatePage(floats: Int) -> UnsafeMutablePointer<Float> {
        #if canImport(Glibc)
        let bytes = floats * MemoryLayout<Float>.size
        guard let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            mapped != MAP_FAILED
        else {
            // As a failed heap allocation would: the process cannot continue without the memory.
            fatalError("out of memory: cannot map a KV page of \(bytes) bytes (errno \(errno))")
        }
        return mapped.bindMemory(to: Float.self, capacity: floats)
        #else
        let page = UnsafeMutablePointer<Float>.allocate(capacity: floats)
        page.initialize(repeating: 0, count: floats)
        return page
        #endif
    }

    fileprivate static func freePage(_ page: UnsafeMutablePointer<Float>, floats: Int) {
        #if canImport(Glibc)
        munmap(page, floats * MemoryLayout<Float>.size)
        #else
        page.deallocate()
        #endif
    }
}

/// KV pages that no sequence holds, kept mapped for the next sequences that need pages, up to
/// ``limit`` bytes.
///
/// A page's first write costs a page fault per 4 KiB, and a warm request loads tens of megabytes of
/// KV into new pages (an 8k-token hit on Gemma 3 270M: 18 ms of faults against 4 ms of copying), so
/// the engine recycles the pages of finished requests instead of unmapping them. A recycled page
/// keeps its old rows; that is safe because a sequence writes every row before it reads it
/// (attention reads only the positions it holds, see ``SequenceKV/firstFilled``), which builds with
/// internal checks verify: they fill recycled pages with NaN.
///
/// Thread-safe: the last holder of a page may let go of it on any thread.
package final class FreeKVPages: Sendable {
    private struct State {
        /// Base addresses of free pages of `floats` floats, the most recently freed last.
        var pages: [UInt] = []
        var floats = 0
        var misses = 0
    }

    /// The most bytes of pages the list keeps.
    package let limit: Int
    private let state = Mutex(State())

    /// An empty list that keeps at most `limit` bytes of pages.
    package init(limit: Int) {
        self.limit = max(0, limit)
    }

    deinit {
        state.withLock { state in
            for address in state.pages {
                KVPage.freePage(UnsafeMutablePointer(bitPattern: address)!, floats: state.floats)
            }
        }
    }

    /// Pages now in the list.
    package var count: Int { state.withLock { $0.pages.count } }

    /// Pages asked of the list when it had none (which were then mapped), since it was made.
    package var misses: Int { state.withLock { $0.misses } }

    /// Bytes of the pages now in the list.
    package var bytes: Int { state.withLock { $0.pages.count * $0.floats * MemoryLayout<Float>.size } }

    /// A free page of `floats` floats, or `nil` when the list has none of that size.
    fileprivate func take(floats: Int) -> UnsafeMutablePointer<Float>? {
        let address = state.withLock { state -> UInt? in
            let page = state.floats == floats ? state.pages.popLast() : nil
            if page == nil { state.misses += 1 }
            return page
        }
        guard let page = address.flatMap({ UnsafeMutablePointer<Float>(bitPattern: $0) }) else { return nil }
        #if LMCACHE_INTERNAL_CHECKS
        // Checks builds poison every recycled row: a read of a row no one wrote makes NaN logits, which
        // every test comparing outputs with and without the cache would catch.
        page.update(repeating: .nan, count: floats)
        #endif
        return page
    }

    /// Keeps `page` for reuse; `false` when the list is full or holds pages of another size (the caller
    /// unmaps it).
    fileprivate func give(_ page: UnsafeMutablePointer<Float>, floats: Int) -> Bool {
        state.withLock { state in
            if state.pages.isEmpty { state.floats = floats }
            let pageBytes = floats * MemoryLayout<Float>.size
            guard state.floats == floats, (state.pages.count + 1) * pageBytes <= limit else { return false }
            state.pages.append(UInt(bitPattern: page))
            return true
        }
    }
}

@available(*, unavailable)
extension SequenceKV: Sendable {}
