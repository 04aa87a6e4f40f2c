internal import Foundation
public import Tokenizers

/// Why generation stopped.
public enum FinishReason: String, Sendable, Hashable, Codable {
    /// `maxTokens` were generated.
    case length
    /// The model produced an end-of-generation token.
    case endOfSequence = "eos"
    /// The text reached one of the stop strings.
    case stopString = "stop"
}

/// The outcome of ``InferenceSession/generate(prompt:maxTokens:sampling:stopStrings:tokenizer:onToken:)``.
public struct GenerationResult: Sendable, Hashable {
    /// Generated token ids (the end-of-generation token, when one ended the run, is not included).
    public var tokens: [Int32]
    /// Their text, cut before a stop string when one matched.
    public var text: String
    /// Why generation stopped.
    public var finishReason: FinishReason
    /// Tokens of the prompt.
    public var promptTokens: Int = 0
    /// Prompt tokens whose keys and values were loaded from the cache instead of computed.
    public var cachedTokens: Int = 0

    /// A result (for engines other than ``GenerationEngine`` behind a ``ServingEngine``).
    public init(
        tokens: [Int32],
        text: String,
        finishReason: FinishReason,
        promptTokens: Int = 0,
        cachedTokens: Int = 0
    ) {
        self.tokens = tokens
        self.text = text
        self.finishReason = finishReason
        self.promptTokens = promptTokens
        self.cachedTokens = cachedTokens
    }
}

/// One sequence being run on a model: its KV memory, scratch memory, and a generation loop.
///
/// A session is used by one task at a time. A cache connector fills ``sequence`` with
/// ``SequenceKV/importKV(_:tokens:at:)`` before calling ``prefill(_:)`` with the tokens that were not cached.
///
/// ```swift
/// let session = InferenceSession(model: model)
/// let result = try session.generate(prompt: tokenizer.encode("Hello"), maxTokens: 16, tokenizer: tokenizer)
/// ```
public final class InferenceSession {
    /// The model.
    public let model: any LanguageModel
    /// The KV memory of the sequence.
    public let sequence: SequenceKV
    /// Scratch memory.
    public let workspace = Workspace()

    /// A session with an empty sequence (pages of `pageSize` tokens).
    public init(model: any LanguageModel, pageSize: Int = 256) {
        self.model = model
        self.sequence = model.makeSequence(pageSize: pageSize)
    }

    /// Runs `tokens` after what the sequence holds and returns the logits of the last one.
    /// - Throws: ``InferenceError`` for invalid tokens or a full context.
    public func prefill(_ tokens: [Int32]) throws(InferenceError) -> [Float] {
        try model.forward(tokens, sequence: sequence, outputs: .last, workspace: workspace)
    }

    /// Prefills `prompt` into the (empty) sequence through the cache: loads what `cache` found, computes the
    /// rest, and returns the logits of the last prompt token with the number of tokens loaded.
    ///
    /// New chunks are not saved here; call ``CachedPrompt/save(from:)`` when convenient (``generate``
    /// saves them right after the first token).
    /// - Throws: ``InferenceError`` when the sequence is not empty, for invalid tokens or a full context.
    public func prefill(
        _ prompt: [Int32],
        cache: some CachedPrompt
    ) throws(InferenceError) -> (logits: [Float], loaded: Int) {
        guard cache.tokens == prompt else {
            throw InferenceError.invalidInput("the cache lookup is of another prompt")
        }
        let prefilled = try cache.prefill(model: model, sequence: sequence, workspace: workspace)
        return (prefilled.logits, prefilled.reused)
    }

    /// Generates up to `maxTokens` tokens after `prompt` (appended to what the sequence already holds).
    ///
    /// - Parameters:
    ///   - prompt: tokens to run first (at least one: the tokens not already in the sequence).
    ///   - maxTokens: most tokens to generate.
    ///   - sampling: greedy by default.
    ///   - stopStrings: stop when the generated text contains one of these (the text is cut before it).
    ///   - tokenizer: turns tokens into text and says which tokens end generation; without one, only
    ///     `maxTokens` stops the run and `text` is empty.
    ///   - cache: the prompt's cache: its hit is loaded instead of computed (the sequence must then be
    ///     empty), and its new chunks are saved right after the first token is produced.
    ///   - onToken: called with each generated token and its new text; return `false` to stop.
    /// - Throws: ``InferenceError`` for invalid tokens or a full context.
    public func generate(
        prompt: [Int32],
        maxTokens: Int,
        sampling: SamplingParameters = .greedy,
        stopStrings: [String] = [],
        tokenizer: (any Tokenizer)? = nil,
        cache: (any CachedPrompt)? = nil,
        onToken: (Int32, String) -> Bool = { _, _ in true }
    ) throws(InferenceError) -> GenerationResult {
        guard !prompt.isEmpty else { throw InferenceError.invalidInput("the prompt has no tokens") }
        var stream = TokenStream(
            maxTokens: maxTokens,
            sampling: sampling,
            stopStrings: stopStrings,
            tokenizer: tokenizer
        )
        var logits: [Float]
        var loaded = 0
        if let cache {
            (logits, loaded) = try prefill(prompt, cache: cache)
        } else {
            logits = try prefill(prompt)
        }
        // Saved after the first token, so that storing never delays it.
        var pendingSave = cache
        defer {
            pendingSave?.save(from: sequence)
            cache?.saveDecoded(from: sequence)
        }
        while let (next, piece) = stream.accept(logits) {
            let keepGoing = onToken(next, piece)
            if let save = pendingSave {
                save.save(from: sequence)
                pendingSave = nil
            }
            if !keepGoing { stream.stop() }
            if stream.isFinished { break }
            logits = try model.forward([next], sequence: sequence, outputs: .last, workspace: workspace)
        }
        return stream.result(promptTokens: prompt.count, cachedTokens: loaded)
    }
}

@available(*, unavailable)
extension InferenceSession: Sendable {}
