public import GGUF
public import LMCacheCore

/// Which positions of a forward pass produce logits.
public enum LogitOutputs: Sendable, Hashable {
    /// None (prefill of a prefix whose continuation comes later).
    case none
    /// The last token only (generation).
    case last
    /// Every token (teacher-forced evaluation).
    case all
}

/// Tokens to run at the next positions of a sequence, as part of a pass over several sequences
/// (``LanguageModel/forward(_:workspace:)``).
public struct ForwardPiece {
    /// The tokens (at least one).
    public var tokens: [Int32]
    /// The sequence they extend.
    public var sequence: SequenceKV
    /// Whether the last token's logits are wanted (not for a prompt piece that more pieces follow).
    public var wantsLogits: Bool

    /// A piece of `tokens` after `sequence`'s.
    public init(tokens: [Int32], sequence: SequenceKV, wantsLogits: Bool = true) {
        self.tokens = tokens
        self.sequence = sequence
        self.wantsLogits = wantsLogits
    }
}

/// Hyperparameters of a decoder-only transformer, read from GGUF metadata.
public struct ModelConfiguration: Sendable, Hashable {
    /// The GGUF architecture name (`gemma3`, `llama`, `qwen2`).
    public var architecture: String
    /// Tokens in the vocabulary (rows of the embedding).
    public var vocabularySize: Int
    /// Width of the residual stream (`{arch}.embedding_length`).
    public var hiddenSize: Int
    /// Transformer blocks (`{arch}.block_count`).
    public var layers: Int
    /// Query heads (`{arch}.attention.head_count`).
    public var heads: Int
    /// Key/value heads (`{arch}.attention.head_count_kv`).
    public var kvHeads: Int
    /// Values per head (`{arch}.attention.key_length`).
    public var headDim: Int
    /// Inner width of the feed-forward block (`{arch}.feed_forward_length`).
    public var feedForwardSize: Int
    /// Longest context the model was trained for (`{arch}.context_length`).
    public var contextLength: Int
}

/// A language model that runs forward passes over a sequence's KV memory.
///
/// Models are immutable after loading and can be shared across tasks; the per-sequence state lives
/// in ``SequenceKV`` and the scratch memory in ``Workspace``, one of each per session.
///
/// ```swift
/// let model = try loadModel(from: GGUFFile(contentsOf: path))
/// let kv = model.makeSequence()
/// let workspace = Workspace()
/// let logits = try model.forward([2, 818, 5279], sequence: kv, outputs: .last, workspace: workspace)
/// ```
public protocol LanguageModel: AnyObject, Sendable {
    /// Hyperparameters.
    var configuration: ModelConfiguration { get }

    /// The shape of this model's KV chunks as the cache stores them; its dtype is the lossless export
    /// format (``SequenceKV/exportKV(_:as:)`` default).
    var kvLayout: KVLayout { get }

    /// Identifies the weights (the GGUF file's fingerprint), for cache keys.
    var identity: String { get }

    /// Per layer, the sliding window of its attention in tokens (a query at p sees keys k with
    /// p − k < window), or 0 for full causal attention.
    var attentionWindows: [Int] { get }

    /// Runs `tokens` at positions `sequence.count ..< sequence.count + tokens.count`, appending their keys and
    /// values to `sequence`.
    ///
    /// - Returns: logits, `vocabularySize` floats per output position (`outputs`), row after row.
    /// - Throws: ``InferenceError`` for an empty batch, a token id outside the vocabulary, or a full context.
    func forward(
        _ tokens: [Int32],
        sequence: SequenceKV,
        outputs: LogitOutputs,
        workspace: Workspace
    ) throws(InferenceError) -> [Float]

    /// One decode step of several sequences: `tokens[i]` runs at the next position of `sequences[i]`
    /// (distinct sequences). Row `i` of the result equals
    /// `forward([tokens[i]], sequence: sequences[i], outputs: .last, workspace:)` bit for bit; the batch
    /// only shares the reading of the weights.
    ///
    /// - Returns: `tokens.count × vocabularySize` logits, row after row.
    /// - Throws: ``InferenceError`` as ``forward(_:sequence:outputs:workspace:)``, or when the counts differ.
    func decode(_ tokens: [Int32], sequences: [SequenceKV], workspace: Workspace) throws(InferenceError) -> [Float]

    /// Runs each piece's tokens at the next positions of its sequence (distinct sequences), in one
    /// batched pass where the arithmetic allows: prompt pieces of several requests and decode steps
    /// together. Each piece's keys, values and logits equal those of
    /// ``forward(_:sequence:outputs:workspace:)`` of that piece alone, bit for bit.
    ///
    /// - Returns: the logits of the last token of each piece that ``ForwardPiece/wantsLogits``,
    ///   `vocabularySize` floats each, in order.
    /// - Throws: ``InferenceError`` as ``forward(_:sequence:outputs:workspace:)``, or when a sequence
    ///   appears twice.
    func forward(_ pieces: [ForwardPiece], workspace: Workspace) throws(InferenceError) -> [Float]

    /// A prefill of `tokens` after `sequence`'s tokens in which the rows of the tokens marked in
    /// `plan.cached` already hold loaded KV and are recomputed only as the plan says (blending, see
    /// ``BlendPlan``).
    /// - Returns: the last token's logits.
    /// - Throws: ``InferenceError`` as ``forward(_:sequence:outputs:workspace:)``, for a check layer
    ///   outside the model, or for models that cannot blend.
    func forwardBlend(
        _ tokens: [Int32],
        sequence: SequenceKV,
        plan: BlendPlan,
        workspace: Workspace
    ) throws(InferenceError) -> [Float]

    /// Copies KV computed for `positions.count` tokens starting at position `computedAt` (`bytes`:
    /// layers × {K, V} × tokens × kvHeads × headDim values of `dtype`) into rows `positions` of
    /// `sequence`, keys re-rotated to their new positions; the rows must be reserved. Values do not
    /// depend on the position and are copied as they are.
    /// - Throws: ``InferenceError`` when the bytes do not fit, or for models that cannot blend.
    func importMovedKV(
        _ bytes: UnsafeRawBufferPointer,
        of dtype: KVDType,
        computedAt: Int,
        into sequence: SequenceKV,
        positions: Range<Int>
    ) throws(InferenceError)
}

extension LanguageModel {
    /// Full causal attention in every layer.
    public var attentionWindows: [Int] { Array(repeating: 0, count: configuration.layers) }

    /// One piece after the other (models without a batched path).
    public func forward(_ pieces: [ForwardPiece], workspace: Workspace) throws(InferenceError) -> [Float] {
        var logits: [Float] = []
        for piece in pieces {
            logits += try forward(
                piece.tokens, sequence: piece.sequence, outputs: piece.wantsLogits ? .last : .none, workspace: workspace)
        }
        return logits
    }

    /// One sequence after the other (models without a batched path).
    public func decode(
        _ tokens: [Int32],
        sequences: [SequenceKV],
        workspace: Workspace
    ) throws(InferenceError) -> [Float] {
        guard tokens.count == sequences.count else {
            throw InferenceError.invalidInput("\(tokens.count) tokens for \(sequences.count) sequences")
        }
        var logits: [Float] = []
        for (token, sequence) in zip(tokens, sequences) {
            logits += try forward([token], sequence: sequence, outputs: .last, workspace: workspace)
        }
        return logits
    }

    /// An empty KV memory for this model, in pages of `pageSize` tokens, up to the model's context length.
    public func makeSequence(pageSize: Int = 256, capacity: Int? = nil) -> SequenceKV {
        SequenceKV(layout: kvLayout, pageSize: pageSize, capacity: capacity ?? configuration.contextLength)
    }
}

/// Loads the model in a GGUF file, choosing the implementation from `general.architecture`.
///
/// Weights stay in the memory-mapped file; loading reads only metadata and small norm vectors.
/// - Throws: ``InferenceError`` when the architecture is not supported or tensors are missing or malformed.
public func loadModel(from file: GGUFFile) throws(InferenceError) -> any LanguageModel {
    switch file.architecture {
    case "gemma3":
        return try Gemma3Model(file: file)
    case "llama", "qwen2":
        return try LlamaModel(file: file)
    case let other:
        throw InferenceError.unsupportedModel(
            "architecture '\(other ?? "(none)")' is not supported (gemma3, llama, qwen2)"
        )
    }
}
