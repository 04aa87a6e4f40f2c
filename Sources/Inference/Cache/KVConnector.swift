internal import Kernels
public import LMCacheCore
public import LMCacheStorage

/// The seam between the engine and the cache: before a prefill, find and load the cached prefix of a
/// prompt; after it, store the prompt's new chunks.
///
/// Modelled on vLLM's KV connector, in three steps:
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
/// run with a cache hit computes exactly the logits and tokens of a run without one. The
/// engine computes its matrix products in blocks that start at multiples of 256 absolute positions, so
/// a load always ends on such a boundary (whole chunks when `chunk_size` is a multiple of 256, the
/// default) and at least one prompt token is always computed, to produce the logits.
///
/// ```swift
/// let connector = KVConnector(storage: manager, model: identity, layout: model.kvLayout)
/// let hit = await connector.lookup(prompt)
/// let session = InferenceSession(model: model)
/// let (logits, loaded) = try session.prefill(prompt, cache: hit, connector: connector)
/// ```
public final class KVConnector: Sendable {
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

    /// Positions at which a load may end so that the engine's prefill of the rest is bit-identical to a
    /// prefill of the whole prompt.
    package static var loadAlignment: Int { linearBlockTokens }

    /// The lossless dtype for stored chunks: float16 when the engine keeps K/V at half precision.
    public static var losslessDType: KVDType { Ops.emulateHalfPrecision ? .float16 : .float32 }

    /// A connector over `storage` for a model with identity `model` and engine KV layout `layout`.
    /// - Precondition: `layout.dtype` is float32 (the engine's) and `chunkSize > 0`.
    public init(
        storage: StorageManager,
        model: ModelIdentity,
        layout: KVLayout,
        chunkSize: Int = 256,
        saveUnfullChunk: Bool = false
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
            model: ModelIdentity(name: name, fingerprint: model.identity),
            layout: model.kvLayout,
            chunkSize: configuration.chunkSize,
            saveUnfullChunk: configuration.saveUnfullChunk
        )
    }

    /// The keyer for tenant `salt` (`nil`: no tenant).
    public func keyer(salt: String? = nil) -> ChunkKeyer {
        ChunkKeyer(model: model, layout: layout, chunkSize: chunkSize, saveUnfullChunk: saveUnfullChunk, salt: salt)
    }

    /// Finds the cached prefix of `tokens` for tenant `salt` and fetches its chunks from the tiers (a hit
    /// in a slower tier is promoted into the CPU tier).
    ///
    /// - Complexity: one key per chunk; one lookup per tier; one copy per chunk only for slower tiers.
    public func lookup(_ tokens: [Int32], salt: String? = nil) async -> CacheLookup {
        let chunks = keyer(salt: salt).chunks(for: tokens)
        let available = chunks.isEmpty ? 0 : await storage.lookup(chunks.map(\.key))
        let loaded = available == 0 ? [] : await storage.retrieve(Array(chunks[..<available]), tokens: tokens)
        return CacheLookup(tokens: tokens, salt: salt, chunks: chunks, hits: loaded)
    }

    /// How many leading tokens of `lookup.tokens` ``load(_:into:)`` loads: the hit, cut so that at
    /// least one token is left to compute and so that it ends on the engine's block boundary.
    public func loadableTokens(_ lookup: CacheLookup) -> Int {
        let cap = min(lookup.hitTokens, lookup.tokens.count - 1)
        guard cap > 0 else { return 0 }
        return cap / Self.loadAlignment * Self.loadAlignment
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
        for (chunk, hit) in zip(lookup.chunks, lookup.hits) where chunk.range.lowerBound < target {
            guard hit.layout == layout else {
                throw InferenceError.invalidKV("cached chunk layout \(hit.layout) is not the connector's \(layout)")
            }
            try hit.withUnsafeBytes { bytes throws(InferenceError) in
                if layout.dtype == .float32 {
                    try sequence.importKV(bytes, tokens: hit.tokens, at: chunk.range.lowerBound)
                    return
                }
                let count = bytes.count / layout.dtype.size
                try withUnsafeTemporaryAllocation(of: Float.self, capacity: count) { floats throws(InferenceError) in
                    // Safe: `bytes` holds `count` half-precision values, `floats` room for `count` floats.
                    Ops.convertFromHalf(bytes.baseAddress!, floats.baseAddress!, count: count)
                    try sequence.importKV(
                        UnsafeRawBufferPointer(floats),
                        tokens: hit.tokens,
                        at: chunk.range.lowerBound
                    )
                }
            }
        }
        sequence.truncate(to: target)
        return target
    }

    /// Stores the chunks of `lookup` that the cache lacked and whose tokens `sequence` now holds.
    ///
    /// Each chunk is exported into a new heap buffer and passed to ``StorageManager/store(_:)``, which
    /// copies it into the CPU tier and queues it for the slower tiers; this call never waits for I/O.
    ///
    /// - Returns: the number of chunks stored.
    /// - Complexity: O(stored tokens × layers × kvHeads × headDim) bytes copied.
    @discardableResult
    public func save(_ lookup: CacheLookup, from sequence: SequenceKV) -> Int {
        var stored = 0
        for chunk in lookup.chunks.dropFirst(lookup.hits.count) {
            guard chunk.range.upperBound <= sequence.count,
                sequence.tokens[chunk.range].elementsEqual(lookup.tokens[chunk.range])
            else { break }
            guard
                let kv = exportChunk(
                    key: chunk.key, range: chunk.range, tokens: Array(lookup.tokens[chunk.range]), from: sequence)
            else { break }
            storage.store(kv)
            stored += 1
        }
        return stored
    }

    /// The KV of `range` of `sequence` as a chunk under `key`, in the stored layout; `nil` when the
    /// sequence cannot export it.
    package func exportChunk(key: CacheKey, range: Range<Int>, tokens: [Int32], from sequence: SequenceKV) -> KVChunk? {
        let storageObject: HeapChunkStorage
        do {
            storageObject = try HeapChunkStorage(count: layout.byteCount(tokens: tokens.count)) {
                buffer throws(InferenceError) in
                if layout.dtype == .float32 {
                    try sequence.exportKV(range, into: buffer)
                    return
                }
                let count = buffer.count / layout.dtype.size
                try withUnsafeTemporaryAllocation(of: Float.self, capacity: count) {
                    floats throws(InferenceError) in
                    try sequence.exportKV(range, into: UnsafeMutableRawBufferPointer(floats))
                    // Safe: `floats` holds `count` floats, `buffer` room for `count` half-precision values.
                    Ops.convertToHalf(floats.baseAddress!, buffer.baseAddress!, count: count)
                }
            }
        } catch {
            return nil
        }
        return KVChunk(key: key, tokens: tokens, layout: layout, storage: storageObject)
    }
}

/// What the cache holds of one prompt: its chunk keys and the leading chunks found, pinned in memory
/// for as long as this value lives.
public struct CacheLookup: Sendable {
    /// The prompt.
    public let tokens: [Int32]
    /// The tenant salt the keys were made with.
    public let salt: String?
    /// Every keyed chunk of the prompt, in order.
    public let chunks: [TokenChunk]
    /// The leading chunks found in the tiers, in order (a prefix of ``chunks``).
    public let hits: [KVChunk]

    /// Tokens covered by ``hits``.
    public var hitTokens: Int { hits.reduce(0) { $0 + $1.tokens.count } }

    /// Bytes of KV in ``hits``.
    public var hitBytes: Int { hits.reduce(0) { $0 + $1.byteCount } }

    /// A lookup that found nothing (a cache that is off, or a miss).
    public static func miss(_ tokens: [Int32], salt: String? = nil) -> CacheLookup {
        CacheLookup(tokens: tokens, salt: salt, chunks: [], hits: [])
    }
}
