public import Inference
public import LMCacheCore
internal import LMCacheStorage
public import Tokenizers

/// How blending splits prompts and how much it recomputes (`blend_*` configuration keys).
public struct BlendOptions: Sendable, Hashable {
    /// The separator's token ids (`blend_special_str`, tokenized); segments lie between occurrences.
    public var separator: [Int32]
    /// Layers at which deviations are measured (`blend_check_layers`, default `[1]`). Empty: naive
    /// reuse, where cached tokens are never recomputed.
    public var checkLayers: [Int]
    /// The fraction of cached tokens recomputed after each check layer (`blend_recompute_ratios`,
    /// default `[0.15]`; the last one repeats).
    public var recomputeRatios: [Double]
    /// Segments shorter than this are neither stored nor loaded as segments (`blend_min_tokens`,
    /// default 256).
    public var minTokens: Int

    /// Options with LMCache's defaults and the given separator.
    public init(separator: [Int32], checkLayers: [Int] = [1], recomputeRatios: [Double] = [0.15], minTokens: Int = 256)
    {
        self.separator = separator
        self.checkLayers = checkLayers
        self.recomputeRatios = recomputeRatios
        self.minTokens = minTokens
    }

    /// The options of `configuration`, with `blend_special_str` tokenized by `tokenizer`.
    public init(configuration: LMCacheConfiguration, tokenizer: any Tokenizer) {
        self.init(
            separator: Self.separatorTokens(configuration.blendSpecialString, tokenizer: tokenizer),
            checkLayers: configuration.blendCheckLayers,
            recomputeRatios: configuration.blendRecomputeRatios,
            minTokens: configuration.blendMinTokens
        )
    }

    /// The token ids of `separator` as they appear inside a prompt: without the tokens of leading or
    /// trailing whitespace, which merge with the neighbouring text (`" # # "` followed by a word is
    /// tokenized with the word's leading space, not with a lone space token).
    public static func separatorTokens(_ separator: String, tokenizer: any Tokenizer) -> [Int32] {
        var ids = tokenizer.encode(separator, addSpecial: false, parseSpecial: false)
        let blank = { (id: Int32) in tokenizer.decode([id]).allSatisfy(\.isWhitespace) }
        while let last = ids.last, ids.count > 1, blank(last) { ids.removeLast() }
        while let first = ids.first, ids.count > 1, blank(first) { ids.removeFirst() }
        return ids
    }
}

/// Non-prefix reuse (CacheBlend): KV of text that the cache holds wherever it appears in a prompt.
///
/// A prompt is split into segments at ``BlendOptions/separator`` (see ``SegmentKeyer``). After a
/// prefill, each segment's chunks are stored under keys of the segment's own tokens, together with
/// the position each chunk was computed at. Before a prefill, every stored chunk of the prompt's
/// segments is loaded into the sequence at its new position, its keys re-rotated (RoPE) by the
/// position difference (values do not depend on the position), and the prefill recomputes, after
/// the check layers, only the cached tokens whose loaded KV deviates most plus every token the
/// cache lacked (see `BlendPlan`). The leading chunks that an ordinary prefix lookup finds are
/// loaded exactly first, as ``KVConnector`` does; only the rest is blended.
///
/// Blending trades exactness for speed: unlike prefix reuse, its output can differ from a full
/// prefill's, except with a recompute ratio of 1, which computes every token at every layer and
/// matches a full prefill bit for bit.
///
/// ```swift
/// let blender = BlendConnector(prefix: connector, options: BlendOptions(configuration: config, tokenizer: tokenizer))
/// let lookup = await blender.lookup(prompt)
/// let (logits, reused) = try lookup.prefill(model: model, sequence: sequence, workspace: workspace)
/// lookup.save(from: sequence)
/// ```
public final class BlendConnector: KVCacheConnector {
    /// The prefix connector: storage, model identity, stored layout and chunk size.
    public let prefix: KVConnector
    /// How prompts are split and how much is recomputed.
    public let options: BlendOptions

    /// A blender over `prefix`'s storage and keys.
    public init(prefix: KVConnector, options: BlendOptions) {
        self.prefix = prefix
        self.options = options
    }

    /// The segment keyer for tenant `salt`.
    public func keyer(salt: String? = nil) -> SegmentKeyer {
        SegmentKeyer(
            model: prefix.model,
            layout: prefix.layout,
            chunkSize: prefix.chunkSize,
            saveUnfullChunk: prefix.saveUnfullChunk,
            salt: salt
        )
    }

    /// The segments of `tokens` that are long enough to store and load.
    public func segments(of tokens: [Int32]) -> [Range<Int>] {
        SegmentKeyer.segments(of: tokens, separator: options.separator).filter { $0.count >= options.minTokens }
    }

    /// Finds the cached prefix of `tokens` and every cached chunk of its segments after that prefix.
    ///
    /// - Complexity: one prefix lookup, then two tier lookups per segment chunk.
    public func lookup(_ tokens: [Int32], salt: String? = nil) async -> BlendLookup {
        let prefixLookup = await prefix.lookup(tokens, salt: salt)
        let prefixEnd = prefix.loadableTokens(prefixLookup)
        let keyer = keyer(salt: salt)
        var chunks: [TokenChunk] = []
        var hits: [SegmentHit] = []
        for segment in segments(of: tokens) {
            for chunk in keyer.chunks(for: tokens, segment: segment) {
                chunks.append(chunk)
                guard chunk.range.lowerBound >= prefixEnd, chunk.range.upperBound < tokens.count else { continue }
                guard
                    let record = await prefix.storage.get(
                        keyer.positionKey(for: chunk.key),
                        tokens: SegmentPositionRecord.tokens
                    ),
                    let position = record.withUnsafeBytes({ SegmentPositionRecord.decode($0) }),
                    let kv = await prefix.storage.get(
                        keyer.kvKey(for: chunk.key, position: position),
                        tokens: tokens[chunk.range]
                    ),
                    kv.layout == prefix.layout
                else { continue }
                hits.append(SegmentHit(range: chunk.range, storedPosition: position, chunk: kv))
            }
        }
        return BlendLookup(connector: self, prefix: prefixLookup, salt: salt, chunks: chunks, hits: hits)
    }

    /// Prefills `lookup.tokens` into `sequence` (which must be empty): the cached prefix loaded
    /// exactly, then a blended prefill of the rest over the segment chunks found (a plain prefill when
    /// there are none).
    ///
    /// - Returns: the last token's logits and the number of prompt tokens whose KV came from the cache.
    /// - Throws: ``InferenceError`` when the sequence is not empty, a chunk does not fit, or the model
    ///   is not one of the engine's transformer architectures.
    public func prefill(
        _ lookup: BlendLookup,
        model: any LanguageModel,
        sequence: SequenceKV,
        workspace: Workspace
    ) throws(InferenceError) -> (logits: [Float], reused: Int) {
        try prefill(lookup, model: model, sequence: sequence, workspace: workspace, checkLayers: options.checkLayers)
    }

    /// ``prefill(_:model:sequence:workspace:)`` with other check layers (empty: naive reuse) and
    /// ratios than the options', for measurements.
    package func prefill(
        _ lookup: BlendLookup,
        model: any LanguageModel,
        sequence: SequenceKV,
        workspace: Workspace,
        checkLayers: [Int],
        ratios: [Double]? = nil
    ) throws(InferenceError) -> (logits: [Float], reused: Int) {
        let tokens = lookup.prefix.tokens
        let loaded = try prefix.load(lookup.prefix, into: sequence)
        let rest = Array(tokens[loaded...])
        let hits = lookup.hits.filter { $0.range.lowerBound >= loaded }
        guard !hits.isEmpty else {
            return (try model.forward(rest, sequence: sequence, outputs: .last, workspace: workspace), loaded)
        }
        guard sequence.layout == prefix.engineLayout, loaded + rest.count <= sequence.capacity else {
            throw InferenceError.invalidKV("the sequence cannot hold the blended prompt")
        }
        sequence.reserve(tokens.count, writingFrom: loaded)
        var cached = [Bool](repeating: false, count: rest.count)
        for hit in hits {
            guard hit.chunk.layout == prefix.layout else {
                throw InferenceError.invalidKV("cached segment chunk layout \(hit.chunk.layout) is not \(prefix.layout)")
            }
            try hit.chunk.withUnsafeBytes { bytes throws(InferenceError) in
                try model.importMovedKV(
                    bytes, of: prefix.layout.dtype, computedAt: hit.storedPosition, into: sequence, positions: hit.range)
            }
            for t in hit.range { cached[t - loaded] = true }
        }
        let plan = BlendPlan(cached: cached, checkLayers: checkLayers, ratios: ratios ?? options.recomputeRatios)
        let logits = try model.forwardBlend(rest, sequence: sequence, plan: plan, workspace: workspace)
        return (logits, loaded + hits.reduce(0) { $0 + $1.range.count })
    }

    /// Stores the prompt's prefix chunks as ``KVConnector/save(_:from:)`` does, and each segment chunk
    /// that was not loaded and whose tokens `sequence` holds, with its position.
    ///
    /// - Returns: the number of segment chunks stored.
    @discardableResult
    public func save(_ lookup: BlendLookup, from sequence: SequenceKV) -> Int {
        prefix.save(lookup.prefix, from: sequence)
        let keyer = keyer(salt: lookup.salt)
        let loaded = Set(lookup.hits.map(\.range.lowerBound))
        let tokens = lookup.prefix.tokens
        var stored = 0
        for chunk in lookup.chunks where !loaded.contains(chunk.range.lowerBound) {
            guard chunk.range.upperBound <= sequence.count,
                sequence.tokens[chunk.range].elementsEqual(tokens[chunk.range]),
                let kv = prefix.exportChunk(
                    key: keyer.kvKey(for: chunk.key, position: chunk.range.lowerBound),
                    range: chunk.range,
                    tokens: Array(tokens[chunk.range]),
                    from: sequence
                )
            else { continue }
            let record = SegmentPositionRecord.encode(chunk.range.lowerBound)
            prefix.storage.store(kv)
            prefix.storage.store(
                record.withUnsafeBytes { bytes in
                    KVChunk(
                        key: keyer.positionKey(for: chunk.key),
                        tokens: SegmentPositionRecord.tokens,
                        layout: SegmentPositionRecord.layout,
                        copying: bytes
                    )
                }
            )
            stored += 1
        }
        return stored
    }
}

/// One segment chunk found in the cache.
public struct SegmentHit: Sendable {
    /// The chunk's positions in the prompt.
    public let range: Range<Int>
    /// The position of its first token when its KV was computed.
    public let storedPosition: Int
    /// The KV, pinned while this value lives.
    public let chunk: KVChunk
}

/// What the cache holds of one prompt for blending: its prefix lookup and its cached segment chunks.
public struct BlendLookup: CachedPrompt {
    /// The connector that made this lookup, and prefills and saves it.
    public let connector: BlendConnector
    /// The ordinary prefix lookup of the prompt (its ``CacheLookup/tokens`` are the prompt).
    public let prefix: CacheLookup
    /// The tenant salt the keys were made with.
    public let salt: String?
    /// Every keyed chunk of the prompt's segments, in order.
    public let chunks: [TokenChunk]
    /// The segment chunks found, after the loadable prefix.
    public let hits: [SegmentHit]

    /// The prompt.
    public var tokens: [Int32] { prefix.tokens }

    /// Blending is approximate (but with a recompute ratio of 1).
    public var isExact: Bool { false }

    /// The exact prefix that a blended prefill loads first.
    public var loadableTokens: Int { prefix.loadableTokens }

    /// Loads the exact prefix only (``prefill(model:sequence:workspace:)`` blends the rest).
    public func load(into sequence: SequenceKV) throws(InferenceError) -> Int {
        try prefix.load(into: sequence)
    }

    /// See ``BlendConnector/prefill(_:model:sequence:workspace:)``.
    public func prefill(
        model: any LanguageModel,
        sequence: SequenceKV,
        workspace: Workspace
    ) throws(InferenceError) -> (logits: [Float], reused: Int) {
        try connector.prefill(self, model: model, sequence: sequence, workspace: workspace)
    }

    /// See ``BlendConnector/save(_:from:)``.
    public func save(from sequence: SequenceKV) {
        connector.save(self, from: sequence)
    }

    /// Generated tokens are stored as prefix chunks (`save_decode_cache`).
    public func saveDecoded(from sequence: SequenceKV) {
        prefix.saveDecoded(from: sequence)
    }
}

extension BlendConnector {
    /// The blender that `configuration` asks for over `prefix`, or `nil` when `enable_blending` is off.
    public convenience init?(prefix: KVConnector, configuration: LMCacheConfiguration, tokenizer: any Tokenizer) {
        guard configuration.enableBlending else { return nil }
        self.init(prefix: prefix, options: BlendOptions(configuration: configuration, tokenizer: tokenizer))
    }
}
