internal import Kernels

/// The seam between the engine and a KV cache, after vLLM's KV connector: lookup ▶ load ▶ save.
///
/// 1. **Lookup** (async, before the request runs): what the cache holds of the prompt, fetched from
///    its tiers and pinned while the returned ``CachedPrompt`` lives.
/// 2. **Load**: ``CachedPrompt/load(into:)`` copies the hit into the prompt's empty sequence; the
///    engine computes the rest. A blending connector's lookup instead prefills the whole prompt
///    itself (``CachedPrompt/isExact`` is `false`).
/// 3. **Save** (after the first token): ``CachedPrompt/save(from:)`` hands the KV the cache lacked
///    back to it; this never waits for I/O.
///
/// The engine knows nothing else of the cache: its tiers, keys and formats live behind this protocol,
/// in the `LMCacheConnector` target (`KVConnector` for prefix reuse, `BlendConnector` for reuse of
/// text anywhere in a prompt).
///
/// ```swift
/// let hit = await connector.lookup(prompt, salt: nil)
/// let session = InferenceSession(model: model)
/// let (logits, loaded) = try session.prefill(prompt, cache: hit)
/// hit.save(from: session.sequence)
/// ```
public protocol KVCacheConnector: Sendable {
    /// What a lookup returns.
    associatedtype Lookup: CachedPrompt

    /// Finds what the cache holds of `tokens` for tenant `salt` (`nil`: no tenant) and fetches the KV
    /// that a load uses.
    func lookup(_ tokens: [Int32], salt: String?) async -> Lookup
}

/// What a cache lookup found of one prompt, and how it gets into and out of a sequence.
public protocol CachedPrompt: Sendable {
    /// The prompt.
    var tokens: [Int32] { get }

    /// Whether the reuse is exact: ``load(into:)`` copies the KV of the first ``loadableTokens``
    /// tokens, which the engine may equally compute or copy from another sequence, and the rest of the
    /// prompt is computed as without a cache. `false`: the KV comes from ``prefill(model:sequence:workspace:)``
    /// only, approximate (blending), and is never shared with other requests.
    var isExact: Bool { get }

    /// How many leading tokens ``load(into:)`` loads (fewer than ``tokens``: the last one is computed,
    /// for the logits; a multiple of ``PrefillSplit/alignment``).
    var loadableTokens: Int { get }

    /// Copies the KV of the first ``loadableTokens`` tokens into `sequence`, which must be empty.
    /// - Returns: the number of tokens loaded.
    func load(into sequence: SequenceKV) throws(InferenceError) -> Int

    /// Fills the empty `sequence` with the prompt's KV, loading what the cache holds and computing the
    /// rest, and returns the last token's logits with the number of tokens whose KV came from the cache.
    func prefill(
        model: any LanguageModel,
        sequence: SequenceKV,
        workspace: Workspace
    ) throws(InferenceError) -> (logits: [Float], reused: Int)

    /// Stores the KV of the prompt that the cache lacked and `sequence` now holds.
    func save(from sequence: SequenceKV)

    /// After a generation: stores what the connector keeps of the generated tokens' KV, if anything.
    func saveDecoded(from sequence: SequenceKV)
}

extension CachedPrompt {
    /// Loads the hit, then computes the rest of the prompt in one forward pass.
    public func prefill(
        model: any LanguageModel,
        sequence: SequenceKV,
        workspace: Workspace
    ) throws(InferenceError) -> (logits: [Float], reused: Int) {
        let loaded = try load(into: sequence)
        let logits = try model.forward(Array(tokens[loaded...]), sequence: sequence, outputs: .last, workspace: workspace)
        return (logits, loaded)
    }
}

/// Where a prefill may be split (a cache load's end, a prompt piece's end) so that the KV and logits
/// equal those of one prefill of the whole prompt.
public enum PrefillSplit {
    /// Any position (1) with the batch-invariant arithmetic, the engine's default; else a multiple of
    /// the engine's blocks (`LMCACHE_MATMUL=sgemm`, `llamacpp`).
    public static var alignment: Int { Linear.defaultStrategy == .invariant ? 1 : linearBlockTokens }
}
