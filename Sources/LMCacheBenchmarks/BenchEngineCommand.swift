import ArgumentParser
import Foundation
import GGUF
import Inference
import Kernels
import LMCacheCommandSupport

/// `lmcache bench engine`: prefill and decode speed of the built-in engine.
struct BenchEngineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine",
        abstract: "Prefill and decode speed of the built-in CPU engine on a model file.",
        discussion: """
            Prefill runs --prompt-tokens tokens into an empty sequence; decode then generates \
            --decode-tokens tokens one at a time at that depth. Figures are medians over --runs runs. \
            The prompt is a fixed pseudo-random token sequence (speed does not depend on the text). \
            --threads (or LMCACHE_THREADS) sets the thread count (default: the CPUs the process may use). Decode reads every weight once per \
            token, so the JSON also gives the weight bytes read per second of decode (decode_weight_gb_s) \
            against a plain parallel read of as many bytes of the model file, measured in the same run \
            (plain_read_gb_s, best of 5 passes): their ratio is how close decode comes to memory speed.
            """
    )

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Prompt length in tokens (the decode depth).")
    var promptTokens = 512

    @Option(help: "Tokens to decode per run.")
    var decodeTokens = 32

    @Option(help: "Runs to take the median of.")
    var runs = 3

    @Flag(help: "Print one JSON object.")
    var json = false

    func validate() throws {
        guard promptTokens > 0 else { throw ValidationError("--prompt-tokens must be positive") }
        guard decodeTokens > 0 else { throw ValidationError("--decode-tokens must be positive") }
        guard runs > 0 else { throw ValidationError("--runs must be positive") }
    }

    func run() async throws {
        let (file, model, loadSeconds) = try modelArguments.load()
        guard promptTokens + decodeTokens <= model.configuration.contextLength else {
            throw ValidationError("--prompt-tokens + --decode-tokens exceed the context of \(model.configuration.contextLength)")
        }
        var state: UInt64 = 12345
        let prompt: [Int32] = [2] + (1..<promptTokens).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int32((state >> 33) % 20_000) + 100
        }
        let workspace = Workspace()
        var prefill: [Double] = []
        var decode: [Double] = []
        for _ in 0..<runs {
            let sequence = model.makeSequence()
            let t0 = monotonicSeconds()
            var logits = try model.forward(prompt, sequence: sequence, outputs: .last, workspace: workspace)
            let t1 = monotonicSeconds()
            for _ in 0..<decodeTokens {
                logits = try model.forward([Sampler.argmax(logits)], sequence: sequence, outputs: .last, workspace: workspace)
            }
            let t2 = monotonicSeconds()
            prefill.append(Double(promptTokens) / (t1 - t0))
            decode.append(Double(decodeTokens) / (t2 - t1))
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let weightBytes = Self.weightBytesPerToken(file)
        let plainRead = file.withFileBytes { bytes in
            let start = file.tensors.map(\.offset).min() ?? 0
            let count = min(weightBytes, bytes.count - start)
            return MemoryBandwidth.plainReadRate(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + count)]))
        }
        let decodeRate = median(decode) * Double(weightBytes)
        let threads = EngineThreads.count
        if json {
            try printJSON([
                "prefill_tok_s": median(prefill),
                "decode_tok_s": median(decode),
                "prompt_tokens": promptTokens,
                "decode_tokens": decodeTokens,
                "threads": threads,
                "runs": runs,
                "load_ms": loadSeconds * 1000,
                "decode_weight_bytes": weightBytes,
                "decode_weight_gb_s": decodeRate / 1e9,
                "plain_read_gb_s": plainRead / 1e9,
                "decode_read_ratio": plainRead > 0 ? decodeRate / plainRead : 0,
                "model": modelArguments.model,
                "cpu": CPUDescription.model,
                "isa": KernelISA.best.description,
                "arithmetic": Linear.arithmeticIdentity,
            ])
        } else {
            print("\(CPUDescription.model) (kernels: \(KernelISA.best), arithmetic \(Linear.arithmeticIdentity))")
            print(String(format: "prefill %.1f tok/s (%d tokens), decode %.1f tok/s at depth %d, %d threads, load %.0f ms",
                         median(prefill), promptTokens, median(decode), promptTokens, threads, loadSeconds * 1000))
            print(String(format: "decode reads %.1f GB/s of weights (%.0f MB per token); a plain read: %.1f GB/s (%.2f×)",
                         decodeRate / 1e9, Double(weightBytes) / 1e6, plainRead / 1e9,
                         plainRead > 0 ? decodeRate / plainRead : 0))
        }
    }

    /// Bytes of weights one decode step reads: every tensor, except that the embedding table is only
    /// looked up (one row) when the model has a separate output head.
    static func weightBytesPerToken(_ file: GGUFFile) -> Int {
        let all = file.tensors.reduce(0) { $0 + $1.byteCount }
        guard file.tensor(named: "output.weight") != nil, let embedding = file.tensor(named: "token_embd.weight") else {
            return all
        }
        return all - embedding.byteCount
    }
}

/// The CPU's model name, recorded beside figures (they do not travel between machines).
enum CPUDescription {
    static var model: String {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return "unknown" }
        for line in text.split(separator: "\n") where line.hasPrefix("model name") {
            if let colon = line.firstIndex(of: ":") {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return "unknown"
    }

    /// The CPU flags that choose kernel paths (AVX2, FMA, F16C, the AVX-512 family), as
    /// `/proc/cpuinfo` names them.
    static var flags: [String] {
        let relevant: Set = ["avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16"]
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
        else { return [] }
        return line.split(separator: " ").map(String.init).filter { relevant.contains($0) }
    }
}
