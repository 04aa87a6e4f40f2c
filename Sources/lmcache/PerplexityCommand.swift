import ArgumentParser
import Foundation
import Inference
import LMCacheCommandSupport
import Tokenizers

/// `lmcache perplexity`: teacher-forced evaluation of a text file.
struct PerplexityCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Teacher-forced evaluation of a text file: perplexity and the argmax at every position.",
        discussion: """
            The file is tokenized with BOS and run through the model in one sequence (up to --max-tokens \
            tokens). Position i predicts token i + 1: perplexity is exp of the mean negative log-likelihood \
            of tokens 1…n−1. argmax_ids[i] is the most likely token after token_ids[0…i], so engines can be \
            compared position by position.
            """
    )

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Text file to evaluate.")
    var file: String

    @Option(help: "Evaluate at most this many tokens (0: the whole file, up to the context length).")
    var maxTokens = 0

    @Option(help: "Tokens per forward pass.")
    var batch = 256

    @Flag(help: "Print one JSON object: perplexity, token_ids, argmax_ids, nll.")
    var json = false

    @Option(help: "With --json, also print the K largest logits of every position (top_logits: [[id, logit]…] per position, the logits as Float values).")
    var topLogits = 0

    func validate() throws {
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must not be negative") }
        guard batch > 0 else { throw ValidationError("--batch must be positive") }
        guard topLogits >= 0 else { throw ValidationError("--top-logits must not be negative") }
    }

    func run() async throws {
        let (gguf, model, _) = try modelArguments.load()
        let tokenizer = try makeTokenizer(from: gguf)
        guard let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read \(file)")
        }
        var ids = tokenizer.encode(String(decoding: data, as: UTF8.self), addSpecial: true, parseSpecial: false)
        let limit = min(maxTokens > 0 ? maxTokens : ids.count, model.configuration.contextLength)
        if ids.count > limit { ids.removeLast(ids.count - limit) }
        guard ids.count >= 2 else { throw ValidationError("\(file) has fewer than 2 tokens") }

        let vocab = model.configuration.vocabularySize
        let sequence = model.makeSequence()
        let workspace = Workspace()
        var argmaxIDs: [Int32] = []
        var top: [[[Double]]] = []
        var nll = 0.0
        let start = monotonicSeconds()
        var position = 0
        while position < ids.count {
            let end = min(ids.count, position + batch)
            let logits = try model.forward(Array(ids[position..<end]), sequence: sequence, outputs: .all, workspace: workspace)
            for i in position..<end {
                let row = logits[((i - position) * vocab)..<((i - position + 1) * vocab)]
                argmaxIDs.append(Sampler.argmax(row))
                if topLogits > 0 { top.append(Self.largest(topLogits, of: row).map { [Double($0.id), Double($0.logit)] }) }
                if i + 1 < ids.count {
                    let m = row.max()!
                    var sum = 0.0
                    for v in row { sum += exp(Double(v - m)) }
                    nll += (log(sum) + Double(m)) - Double(row[row.startIndex + Int(ids[i + 1])])
                }
            }
            position = end
        }
        let seconds = monotonicSeconds() - start
        let perplexity = exp(nll / Double(ids.count - 1))
        if json {
            try printJSON([
                "perplexity": perplexity,
                "tokens": ids.count,
                "token_ids": ids.map(Int.init),
                "argmax_ids": argmaxIDs.map(Int.init),
                "seconds": seconds,
            ].merging(topLogits > 0 ? ["top_logits": top] : [:]) { $1 })
        } else {
            print(String(format: "perplexity %.4f over %d tokens (%.1f tok/s)", perplexity, ids.count, Double(ids.count) / seconds))
        }
    }

    /// The `count` largest logits of `row` with their token ids, largest first (ties: lower id first).
    static func largest(_ count: Int, of row: ArraySlice<Float>) -> [(id: Int, logit: Float)] {
        var best: [(id: Int, logit: Float)] = []
        best.reserveCapacity(count + 1)
        for index in row.indices {
            let value = row[index]
            guard best.count < count || value > best[best.count - 1].logit else { continue }
            let slot = best.firstIndex { $0.logit < value } ?? best.count
            best.insert((index - row.startIndex, value), at: slot)
            if best.count > count { best.removeLast() }
        }
        return best
    }
}
