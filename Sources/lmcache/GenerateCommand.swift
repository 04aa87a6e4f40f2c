import ArgumentParser
import Foundation
import Inference
import LMCacheCommandSupport
import Tokenizers

/// `lmcache generate`: continue a prompt with the built-in engine.
struct GenerateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt with the built-in CPU engine.",
        discussion: """
            Greedy by default; --temperature above 0 samples (with --top-k / --top-p), reproducibly for a \
            given --seed. Generation stops after --max-tokens, at the model's end-of-generation tokens, or \
            at a --stop string.
            """
    )

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "The prompt text (special-token text such as <start_of_turn> is recognised).")
    var prompt: String

    @Option(help: "Most tokens to generate.")
    var maxTokens = 64

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Keep only the k most likely tokens when sampling (0: all).")
    var topK = 0

    @Option(help: "Keep the most likely tokens up to this total probability when sampling.")
    var topP: Float = 1

    @Option(help: "Seed of the sampler's random generator.")
    var seed: UInt64 = 0

    @Option(help: "Stop when the text contains this string (repeatable).")
    var stop: [String] = []

    @Flag(help: "Print one JSON object: prompt_ids, generated_ids, text, finish_reason, timings.")
    var json = false

    func validate() throws {
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must not be negative") }
        guard temperature >= 0 else { throw ValidationError("--temperature must not be negative") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
    }

    func run() async throws {
        let (file, model, loadSeconds) = try modelArguments.load()
        let tokenizer = try makeTokenizer(from: file)
        let promptIDs = tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
        let session = InferenceSession(model: model)
        let sampling = SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed)
        let start = monotonicSeconds()
        var firstToken: Double?
        let result = try session.generate(
            prompt: promptIDs, maxTokens: maxTokens, sampling: sampling, stopStrings: stop, tokenizer: tokenizer
        ) { _, piece in
            if firstToken == nil { firstToken = monotonicSeconds() }
            if !json {
                FileHandle.standardOutput.write(Data(piece.utf8))
            }
            return true
        }
        let end = monotonicSeconds()
        if json {
            let decodeSeconds = end - (firstToken ?? end)
            try printJSON([
                "prompt_ids": promptIDs.map(Int.init),
                "generated_ids": result.tokens.map(Int.init),
                "text": result.text,
                "finish_reason": result.finishReason.rawValue,
                "load_ms": loadSeconds * 1000,
                "prefill_ms": ((firstToken ?? end) - start) * 1000,
                "decode_tok_s": result.tokens.count > 1 ? Double(result.tokens.count - 1) / decodeSeconds : 0,
            ])
        } else {
            print()
        }
    }
}
