public import Inference
internal import Kernels
public import LMCacheCore
public import LMCacheStorage

/// Prefix reuse through the cache's tiers: before a prefill, find and load the cached prefix of a
/// prompt; after it, store the prompt's new chunks.
///
/// The engine's ``KVCacheConnector``, in three steps:
///
/// 1. **Lookup** (``lookup(_:salt:)``, async): the prompt's chunk keys, how many leading chunks some tier
///    holds, and those chunks, pinned while the returned ``CacheLookup`` lives.
/// 2. **Load** (``load(_:into:)``): the hit chunks are copied into an empty ``SequenceKV``; the caller
///    then prefills only the rest of the prompt.
/// 3. **Save** (``save(_:from:)``): the prompt's full chunks that were not loaded are exported from the
///    sequence and handed to ``StorageManager/store(_:)``, which writes the CPU tier at once and the
///    slower tiers behind.
///
/// Chunks are stored losslessly: as float16 when the engine rounds every stored key and value to half
/// precision (its default, following llama.cpp; half the bytes of float32), as float32 otherwise. So a
/// run with a cache hit computes exactly the logits and tokens of a run without one. With the engine's
/// batch-invariant arithmetic (its default) a load may end at any token (``PrefillSplit/alignment``); with the
/// reference modes it ends on a multiple of 256 positions. At least one prompt token is always
/// computed, to produce the logits.
///
/// ```swift
/// let connector = KVConnector(storage: manager, model: identity, layout: model.kvLayout)
/// let hit = await connector.lookup(prompt)
/// let session = InferenceSession(model: model)
/// let (logits, loaded) = try session.prefill(prompt, cache: hit)
/// hit.save(from: session.sequence)
/// ```
public final class KVConnector: KVCacheConnector {
    /// Where chunks are kept.
    public let storage: StorageManager
    /// The model whose KV this connector moves; part of every key.
    public let model: ModelIdentity
    /// The layout of stored chunks (float16 or float32, see above); part of every key.
    public let layout: KVLayout
    /// The engine's KV layout (float32).
    public let engineLayout: KVLayout
    /// Tokens per chunk (`chunk_size`).
    public let chunkSize: Int
    /// Whether a prompt's trailing partial chunk is stored too (`save_unfull_chunk`).
    public let saveUnfullChunk: Bool
    /// Whether the KV of generated tokens is stored too, after a generation (`save_decode_cache`).
    public let saveDecodeCache: Bool
    /// How chunks are split between full-attention and sliding-window layers (`window_aware_loading`),
    /// or `nil` when each chunk is one object of all layers.
    public let layerGroups: LayerGroups?

    /// The lossless dtype for stored chunks: float16 when the engine keeps K/V at half precision.
    public static var losslessDType: KVDType { Ops.emulateHalfPrecision ? .float16 : .float32 }

    /// A connector over `storage` for a model with identity `model` and engine KV layout `layout`.
    /// - Precondition: `layout.dtype` is float32 (the engine's) and `chunkSize > 0`.
    public init(
        storage: StorageManager,
        model: ModelIdentity,
        layout: KVLayout,
        chunkSize: Int = 256,
        saveUnfullChunk: Bool = false,
        saveDecodeCache: Bool = false,
        attentionWindows: [Int]? = nil
    ) {
        precondition(layout.dtype == .float32, "the engine's KV is float32")
        precondition(chunkSize > 0, "chunkSize must be positive")
        self.storage = storage
        self.model = model
        self.engineLayout = layout
        self.layout = KVLayout(
            layers: layout.layers,
            kvHeads: layout.kvHeads,
            headDim: layout.headDim,
            dtype: Self.losslessDType
        )
        self.chunkSize = chunkSize
        self.saveUnfullChunk = saveUnfullChunk
        self.saveDecodeCache = saveDecodeCache
        self.layerGroups = attentionWindows.flatMap { LayerGroups(windows: $0) }
    }

    /// A connector for `model`, named `name` in keys, with `chunk_size` and `save_unfull_chunk` from
    /// `configuration`.
    public convenience init(
        storage: StorageManager,
        model: any LanguageModel,
        name: String,
        configuration: LMCacheConfiguration
    ) {
        self.init(
            storage: storage,
            // The arithmetic is part of the identity: KV computed otherwise is never loaded as if
            // exact. So are lossy serdes: KV that went through one is only loaded by their users.
            model: ModelIdentity(
                name: name,
                fingerprint: "\(model.identity)/\(Linear.arithmeticIdentity)"
                    + (configuration.lossySerdeIdentity.map { "/serde.\($0)" } ?? "")
            ),
            layout: model.kvLayout,
            chunkSize: configuration.chunkSize,
            saveUnfullChunk: configuration.saveUnfullChunk,
            saveDecodeCache: configuration.saveDecodeCache,
            attentionWindows: configuration.windowAwareLoading ? model.attentionWindows : nil
        )
    }

    /// The keyer for tenant `salt` (`nil`: no tenant): of whole chunks, or of their full-attention part
    /// when chunks are split (``layerGroups``).
    public func keyer(salt: String? = nil) -> ChunkKeyer {
        guard let groups = layerGroups else {
            return ChunkKeyer(
                model: model,
                layout: layout,
                chunkSize: chunkSize,
                saveUnfullChunk: saveUnfullChunk,
                salt: salt
            )
        }
        return ChunkKeyer(
            model: model,
            layout: layout(of: groups.full),
            chunkSize: chunkSize,
            saveUnfullChunk: saveUnfullChunk,
            salt: salt,
            part: groups.partName(groups.full)
        )
    }

    /// The keyer of the sliding-window part of split chunks, or `nil` when chunks are not split.
    public func windowedKeyer(salt: String? = nil) -> ChunkKeyer? {
        layerGroups.map { windowedKeyer($0, salt: salt) }
    }

    private func windowedKeyer(_ groups: LayerGroups, salt: String?) -> ChunkKeyer {
        ChunkKeyer(
            model: model,
            layout: layout(of: groups.windowed),
            chunkSize: chunkSize,
            saveUnfullChunk: saveUnfullChunk,
            salt: salt,
            part: groups.partName(groups.windowed)
        )
    }

    /// The stored layout of the given layers' KV.
    func layout(of layers: [Int]) -> KVLayout {
        KVLayout(layers: layers.count, kvHeads: layout.kvHeads, headDim: layout.headDim, dtype: layout.dtype)
    }

    /// Finds the cached prefix of `tokens` for tenant `salt` and fetches the chunks that a load uses
    /// from the tiers (a hit in a slower tier is promoted into the CPU tier).
    ///
    /// With split chunks (``layerGroups``), the full-attention part is fetched for every chunk of the
    /// hit and the sliding-window part only for the chunks that the first computed token's window
    /// reaches; when such a part is missing, the hit is shortened to end before it.
    ///
    /// - Complexity: one key per chunk; one lookup per tier; one copy per chunk only for slower tiers.
    public func lookup(_ tokens: [Int32], salt: String? = nil) async -> CacheLookup {
        let chunks = keyer(salt: salt).chunks(for: tokens)
        let available = chunks.isEmpty ? 0 : await storage.lookup(chunks.map(\.key))
        guard let groups = layerGroups else {
            // Only the chunks a load uses are fetched.
            let target =
                available == 0
                ? 0 : Self.loadTarget(hitTokens: chunks[available - 1].range.upperBound, promptTokens: tokens.count)
            let needed = chunks.prefix { $0.range.lowerBound < target }.count
            let loaded = needed == 0 ? [] : await storage.retrieve(Array(chunks[..<needed]), tokens: tokens)
            return CacheLookup(connector: self, tokens: tokens, salt: salt, chunks: chunks, hits: loaded)
        }
        let windowedChunks = windowedKeyer(groups, salt: salt).chunks(for: tokens)
        var usable = available
        while usable > 0 {
            let target = Self.loadTarget(hitTokens: chunks[usable - 1].range.upperBound, promptTokens: tokens.count)
            guard target > 0 else { break }
            let needed = chunks.prefix { $0.range.lowerBound < target }.count
            // The first position that a query at `target` (the first computed token) sees in a windowed layer.
            let firstVisible = max(0, target - groups.window + 1)
            let windowStart = chunks[..<needed].firstIndex { $0.range.upperBound > firstVisible } ?? needed
            let windowHits = await storage.retrieve(Array(windowedChunks[windowStart..<needed]), tokens: tokens)
            guard windowHits.count == needed - windowStart else {
                usable = windowStart + windowHits.count
                continue
            }
            let hits = await storage.retrieve(Array(chunks[..<needed]), tokens: tokens)
            guard hits.count == needed else {
                usable = hits.count
                continue
            }
            return CacheLookup(
                connector: self,
                tokens: tokens,
                salt: salt,
                chunks: chunks,
                hits: hits,
                windowedChunks: windowedChunks,
                windowHits: windowHits,
                windowStart: windowStart
            )
        }
        return CacheLookup(
            connector: self,
            tokens: tokens,
            salt: salt,
            chunks: chunks,
            hits: [],
            windowedChunks: windowedChunks,
            windowHits: [],
            windowStart: 0
        )
    }

    /// Where a load of a `hitTokens`-token hit of a `promptTokens`-token prompt ends: at least one token
    /// is left to compute, and the end is a multiple of ``PrefillSplit/alignment``.
    static func loadTarget(hitTokens: Int, promptTokens: Int) -> Int {
        let cap = min(hitTokens, promptTokens - 1)
        return cap > 0 ? cap / PrefillSplit.alignment * PrefillSplit.alignment : 0
    }

    /// How many leading tokens of `lookup.tokens` ``load(_:into:)`` loads: the hit, cut so that at
    /// least one token is left to compute and so that it ends on a multiple of ``PrefillSplit/alignment``.
    public func loadableTokens(_ lookup: CacheLookup) -> Int {
        Self.loadTarget(hitTokens: lookup.hitTokens, promptTokens: lookup.tokens.count)
    }

    /// Copies the loadable part of `lookup`'s hit into `sequence`, which must be empty.
    ///
    /// - Returns: the number of tokens loaded; the caller prefills `lookup.tokens[loaded...]`.
    /// - Throws: ``InferenceError`` when `sequence` is not empty or a chunk does not fit its layout.
    /// - Complexity: O(loaded tokens × layers × kvHeads × headDim) bytes copied.
    public func load(_ lookup: CacheLookup, into sequence: SequenceKV) throws(InferenceError) -> Int {
        guard sequence.count == 0 else {
            throw InferenceError.invalidKV("a cache load needs an empty sequence, not one of \(sequence.count) tokens")
        }
        let target = loadableTokens(lookup)
        guard target > 0 else { return 0 }
        guard sequence.layout == engineLayout else {
            throw InferenceError.invalidKV("sequence layout \(sequence.layout) is not the model's \(engineLayout)")
        }
        guard let groups = layerGroups else {
            for (chunk, hit) in zip(lookup.chunks, lookup.hits) where chunk.range.lowerBound < target {
                try check(hit, layout)
                try hit.withUnsafeBytes { bytes throws(InferenceError) in
                    try sequence.importKV(bytes, of: layout.dtype, tokens: hit.tokens, at: chunk.range.lowerBound)
                }
            }
            sequence.truncate(to: target)
            return target
        }
        for (chunk, hit) in zip(lookup.chunks, lookup.hits) where chunk.range.lowerBound < target {
            try check(hit, layout(of: groups.full))
            try hit.withUnsafeBytes { bytes throws(InferenceError) in
                try sequence.importKV(bytes, of: layout.dtype, layers: groups.full, positions: chunk.range)
            }
        }
        for (offset, hit) in lookup.windowHits.enumerated() {
            try check(hit, layout(of: groups.windowed))
            let range = lookup.windowedChunks[lookup.windowStart + offset].range
            try hit.withUnsafeBytes { bytes throws(InferenceError) in
                try sequence.importKV(bytes, of: layout.dtype, layers: groups.windowed, positions: range)
            }
        }
        // The sliding-window layers hold only the window of the first token to compute.
        let windowedFrom =
            lookup.windowHits.isEmpty ? target : lookup.windowedChunks[lookup.windowStart].range.lowerBound
        try sequence.assumeTokens(Array(lookup.tokens[..<target]), partialLayers: groups.windowed, from: windowedFrom)
        return target
    }

    private func check(_ hit: KVChunk, _ expected: KVLayout) throws(InferenceError) {
        guard hit.layout == expected else {
            throw InferenceError.invalidKV("cached chunk layout \(hit.layout) is not the connector's \(expected)")
        }
    }

    /// Stores the chunks of `lookup` that the cache lacked and whose tokens `sequence` now holds (but
    /// those the CPU tier holds by now, stored by another request).
    ///
    /// Each chunk is exported into a new heap buffer and passed to ``StorageManager/store(_:)``, which
    /// copies it into the CPU tier and queues it for the slower tiers; this call never waits for I/O.
    ///
    /// - Returns: the number of chunks stored.
    /// - Complexity: O(stored tokens × layers × kvHeads × headDim) bytes copied.
    @discardableResult
    public func save(_ lookup: CacheLookup, from sequence: SequenceKV) -> Int {
        save(lookup, from: sequence, skipping: lookup.hits.count)
    }

    /// After a generation from `lookup`'s prompt, with ``saveDecodeCache`` on: stores the full chunks of
    /// the prompt followed by the generated tokens that `sequence` holds, beyond the prompt's own full
    /// chunks. Does nothing when ``saveDecodeCache`` is off.
    ///
    /// With the batch-invariant arithmetic (the default) a decoded token's keys and values are those a
    /// prefill of the same text computes, so loading these chunks is exact; with the reference modes
    /// (`LMCACHE_MATMUL=sgemm`, `llamacpp`) they differ from a prefill's in float rounding.
    ///
    /// - Returns: the number of chunks stored.
    @discardableResult
    public func saveDecoded(_ lookup: CacheLookup, from sequence: SequenceKV) -> Int {
        guard saveDecodeCache, sequence.count > lookup.tokens.count, sequence.tokens.starts(with: lookup.tokens) else {
            return 0
        }
        let tokens = sequence.tokens
        let extended = CacheLookup(
            connector: self,
            tokens: tokens,
            salt: lookup.salt,
            chunks: keyer(salt: lookup.salt).chunks(for: tokens),
            hits: [],
            windowedChunks: layerGroups.map { windowedKeyer($0, salt: lookup.salt).chunks(for: tokens) } ?? []
        )
        return save(extended, from: sequence, skipping: lookup.tokens.count / chunkSize)
    }

    private func save(_ lookup: CacheLookup, from sequence: SequenceKV, skipping: Int) -> Int {
        var stored = 0
        for (index, chunk) in lookup.chunks.enumerated().dropFirst(skipping) {
            guard chunk.range.upperBound <= sequence.count,
                sequence.tokens[chunk.range].elementsEqual(lookup.tokens[chunk.range])
            else { break }
            let tokens = Array(lookup.tokens[chunk.range])
            let parts: [(key: CacheKey, layers: [Int]?)]
            if let groups = layerGroups, index < lookup.windowedChunks.count {
                parts = [(chunk.key, groups.full), (lookup.windowedChunks[index].key, groups.windowed)]
            } else {
                parts = [(chunk.key, nil)]
            }
            // A chunk the CPU tier holds already (stored by the request whose KV this one copied or
            // took over) is not exported again.
            if let cpu = storage.cpu, parts.allSatisfy({ cpu.contains($0.key) }) { continue }
            var exported: [KVChunk] = []
            for (key, layers) in parts {
                guard let object = try? export(chunk.range, layers: layers, from: sequence) else { break }
                exported.append(KVChunk(key: key, tokens: tokens, layout: object.layout, storage: object.storage))
            }
            guard exported.count == parts.count else { break }
            // The windowed part first: a chunk whose full-attention part is found is then complete.
            for chunk in exported.reversed() { storage.store(chunk) }
            stored += 1
        }
        return stored
    }

    /// The KV of `range` of `sequence`, all layers, as a chunk under `key` in the stored layout; `nil`
    /// when the sequence cannot export it.
    package func exportChunk(key: CacheKey, range: Range<Int>, tokens: [Int32], from sequence: SequenceKV) -> KVChunk? {
        guard let object = try? export(range, layers: nil, from: sequence) else { return nil }
        return KVChunk(key: key, tokens: tokens, layout: object.layout, storage: object.storage)
    }

    /// `range`'s KV of `layers` (all when `nil`) in the stored layout, in a new heap buffer.
    private func export(
        _ range: Range<Int>,
        layers: [Int]?,
        from sequence: SequenceKV
    ) throws(InferenceError) -> (layout: KVLayout, storage: HeapChunkStorage) {
        let stored = layers.map { layout(of: $0) } ?? layout
        let object = try HeapChunkStorage(count: stored.byteCount(tokens: range.count)) {
            buffer throws(InferenceError) in
            if let layers {
                try sequence.exportKV(range, layers: layers, as: stored.dtype, into: buffer)
            } else {
                try sequence.exportKV(range, as: stored.dtype, into: buffer)
            }
        }
        return (stored, object)
    }
}

/// How a model's layers are split between stored objects: the layers with full attention, whose KV a
/// prefix hit needs for every cached position, and the sliding-window layers, whose KV it needs only
/// for the positions that the first computed token's window reaches.
public struct LayerGroups: Sendable, Hashable {
    /// Layers with full causal attention.
    public let full: [Int]
    /// Layers with a sliding window.
    public let windowed: [Int]
    /// The largest window of the windowed layers, tokens.
    public let window: Int

    /// The split of a model whose layers have `windows` (0: full attention), or `nil` when there is
    /// nothing to split (no windowed layer, or no full-attention layer).
    public init?(windows: [Int]) {
        full = windows.indices.filter { windows[$0] == 0 }
        windowed = windows.indices.filter { windows[$0] > 0 }
        window = windows.max() ?? 0
        guard !full.isEmpty, !windowed.isEmpty else { return nil }
    }

    /// The part name of `layers` in chunk keys.
    func partName(_ layers: [Int]) -> String {
        "layers:" + layers.map(String.init).joined(separator: ",")
    }
}

/// What the cache holds of one prompt: its chunk keys and the leading chunks found, pinned in memory
/// for as long as this value lives.
public struct CacheLookup: CachedPrompt {
    /// The connector that made this lookup, and loads and saves it.
    public let connector: KVConnector
    /// The prompt.
    public let tokens: [Int32]
    /// The tenant salt the keys were made with.
    public let salt: String?
    /// Every keyed chunk of the prompt, in order (of the full-attention part when chunks are split).
    public let chunks: [TokenChunk]
    /// The leading chunks found in the tiers, in order (a prefix of ``chunks``).
    public let hits: [KVChunk]
    /// With split chunks: every chunk's key of its sliding-window part (else empty).
    public let windowedChunks: [TokenChunk]
    /// With split chunks: the sliding-window parts loaded, of chunks `windowStart ..< hits.count`.
    public let windowHits: [KVChunk]
    /// The index of the chunk of the first of ``windowHits``.
    public let windowStart: Int

    init(
        connector: KVConnector,
        tokens: [Int32],
        salt: String?,
        chunks: [TokenChunk],
        hits: [KVChunk],
        windowedChunks: [TokenChunk] = [],
        windowHits: [KVChunk] = [],
        windowStart: Int = 0
    ) {
        self.connector = connector
        self.tokens = tokens
        self.salt = salt
        self.chunks = chunks
        self.hits = hits
        self.windowedChunks = windowedChunks
        self.windowHits = windowHits
        self.windowStart = windowStart
    }

    /// Tokens covered by ``hits``.
    public var hitTokens: Int { hits.reduce(0) { $0 + $1.tokens.count } }

    /// Bytes of KV fetched for this prompt: ``hits`` and ``windowHits``.
    public var hitBytes: Int { (hits + windowHits).reduce(0) { $0 + $1.byteCount } }

    /// Prefix reuse is exact.
    public var isExact: Bool { true }

    /// See ``KVConnector/loadableTokens(_:)``.
    public var loadableTokens: Int { connector.loadableTokens(self) }

    /// See ``KVConnector/load(_:into:)``.
    public func load(into sequence: SequenceKV) throws(InferenceError) -> Int {
        try connector.load(self, into: sequence)
    }

    /// See ``KVConnector/save(_:from:)``.
    public func save(from sequence: SequenceKV) {
        connector.save(self, from: sequence)
    }

    /// See ``KVConnector/saveDecoded(_:from:)``.
    public func saveDecoded(from sequence: SequenceKV) {
        connector.saveDecoded(self, from: sequence)
    }
}
