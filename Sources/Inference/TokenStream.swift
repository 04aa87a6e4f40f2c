internal import Foundation
public import Tokenizers

/// The token-by-token part of one generation: sampling, end of generation, text, stop strings and the
/// token limit. The engine feeds it the logits after each step; it says what the next token is, or
/// that the generation is over.
///
/// ```swift
/// var stream = TokenStream(maxTokens: 16, sampling: .greedy, stopStrings: ["\n"], tokenizer: tokenizer)
/// while let (token, piece) = stream.accept(logits) { print(piece, terminator: ""); logits = step(token) }
/// let result = stream.result(promptTokens: prompt.count, cachedTokens: 0)
/// ```
public struct TokenStream: Sendable {
    /// Most tokens to generate.
    public let maxTokens: Int
    /// Stop strings (empty strings are ignored).
    public let stopStrings: [String]
    private var sampler: Sampler
    private let tokenizer: (any Tokenizer)?
    private var decoder: StreamingDecoder?
    /// The tokens generated so far.
    public private(set) var tokens: [Int32] = []
    /// Their text so far (cut before a stop string once one matched).
    public private(set) var text = ""
    /// Why the generation ended, once it has.
    public private(set) var finishReason: FinishReason?

    /// A stream; without a tokenizer only `maxTokens` ends it and the text stays empty.
    public init(maxTokens: Int, sampling: SamplingParameters, stopStrings: [String], tokenizer: (any Tokenizer)?) {
        self.maxTokens = maxTokens
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        self.sampler = Sampler(sampling)
        self.tokenizer = tokenizer
        self.decoder = tokenizer.map { StreamingDecoder(tokenizer: $0) }
        if maxTokens <= 0 { finishReason = .length }
    }

    /// Whether the generation is over.
    public var isFinished: Bool { finishReason != nil }

    /// Chooses the next token from `logits` (the row after the last token run).
    ///
    /// - Returns: the token and its new text, to report and to run next; `nil` when the generation ended
    ///   without a token to report (an end-of-generation token, a stop string, or the limit already
    ///   reached). After a returned token, ``isFinished`` says whether it was the last one.
    public mutating func accept(_ logits: some Collection<Float>) -> (token: Int32, piece: String)? {
        guard finishReason == nil else { return nil }
        let next = sampler.sample(logits)
        if let tokenizer, tokenizer.isEndOfGeneration(next) {
            finishReason = .endOfSequence
            return nil
        }
        tokens.append(next)
        let piece = decoder?.append(next) ?? ""
        text += piece
        if let stop = stopStrings.first(where: { text.contains($0) }) {
            text = String(text[..<text.range(of: stop)!.lowerBound])
            finishReason = .stopString
            return nil
        }
        if tokens.count >= maxTokens { finishReason = .length }
        return (next, piece)
    }

    /// Ends the generation early (the consumer went away); the reason is `length`, as when a limit is hit.
    public mutating func stop() {
        if finishReason == nil { finishReason = .length }
    }

    /// The outcome; text held back for an incomplete character is added unless a stop string ended it.
    public mutating func result(promptTokens: Int, cachedTokens: Int) -> GenerationResult {
        let reason = finishReason ?? .length
        if reason != .stopString, var decoder {
            text += decoder.finish()
            self.decoder = decoder
        }
        return GenerationResult(
            tokens: tokens,
            text: text,
            finishReason: reason,
            promptTokens: promptTokens,
            cachedTokens: cachedTokens
        )
    }
}
