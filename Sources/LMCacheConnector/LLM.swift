internal import GGUF
public import Inference
public import LMCacheCore
public import LMCacheStorage
internal import Tokenizers

/// Batch generation in one process, with the KV cache on by default: the counterpart of vLLM's
/// `LLM(model:).generate(prompts, sampling_params)`.
///
/// Prompts run one after another through a ``GenerationEngine``; each prompt's cached prefix is loaded
/// and its new chunks are stored, so prompts that share text (a system prompt, a document asked several
/// questions) compute that text once. Slower tiers (disk) are written behind while ``generate(_:maxTokens:sampling:stop:salt:)``
/// runs, and flushed before it returns.
///
/// ```swift
/// let llm = try LLM(modelPath: "/root/.cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf")
/// let document = try String(contentsOfFile: "report.txt", encoding: .utf8)
/// let answers = try await llm.generate(
///     [document + "\nQ: Who wrote it?\nA:", document + "\nQ: When?\nA:"], maxTokens: 32)
/// for answer in answers { print(answer.text, answer.cachedTokens) }   // the second loads the document
/// ```
public final class LLM: Sendable {
    /// One prompt's outcome.
    public struct Completion: Sendable, Hashable {
        /// The prompt.
        public var prompt: String
        /// The generated text (cut before a stop string).
        public var text: String
        /// The generated token ids.
        public var tokens: [Int32]
        /// Why generation stopped.
        public var finishReason: FinishReason
        /// Tokens of the prompt.
        public var promptTokens: Int
        /// Prompt tokens loaded from the cache instead of computed.
        public var cachedTokens: Int
    }

    /// The engine prompts run on.
    public let engine: GenerationEngine
    /// The cache's tiers, or `nil` when the cache is off.
    public let storage: StorageManager?

    /// Loads the GGUF model at `modelPath`, with the cache `configuration` describes (LMCache's keys:
    /// `chunk_size`, `max_local_cpu_size`, `local_disk`, …), or without a cache when `cache` is false.
    ///
    /// - Parameters:
    ///   - modelPath: a GGUF file.
    ///   - configuration: the cache's configuration (default: a 5 GiB CPU tier, chunks of 256 tokens).
    ///   - cache: whether to use the cache.
    ///   - name: the model's name in chunk keys (default: the file name without `.gguf`).
    ///   - prefault: whether the CPU tier's memory is touched up front (by default it is faulted in as
    ///     it fills, so an idle process holds only what it stores).
    ///   - threads: CPU threads for the engine, for the whole process (``EngineThreads``; default: as
    ///     ``EngineThreads/defaultCount``).
    /// - Throws: when the file cannot be read, its model or tokenizer is not supported, or a tier cannot be made.
    public init(
        modelPath: String,
        configuration: LMCacheConfiguration = LMCacheConfiguration(),
        cache: Bool = true,
        name: String? = nil,
        prefault: Bool = false,
        threads: Int? = nil
    ) throws {
        if let threads { try EngineThreads.set(threads) }
        let file = try GGUFFile(contentsOf: modelPath)
        let model = try loadModel(from: file)
        let tokenizer = try makeTokenizer(from: file)
        let fileName = modelPath.split(separator: "/").last.map(String.init) ?? modelPath
        let modelName = name ?? (fileName.hasSuffix(".gguf") ? String(fileName.dropLast(5)) : fileName)
        if cache {
            let cache = try EngineCache(
                configuration: configuration, model: model, tokenizer: tokenizer, name: modelName, prefault: prefault)
            storage = cache.storage
            engine = GenerationEngine(model: model, tokenizer: tokenizer, connector: cache.connector)
        } else {
            storage = nil
            engine = GenerationEngine(model: model, tokenizer: tokenizer)
        }
    }

    /// Generates a completion of each prompt, in order.
    ///
    /// - Parameters:
    ///   - prompts: prompt texts (special-token text such as `<start_of_turn>` is recognised; `<bos>` is added).
    ///   - maxTokens: most tokens per completion.
    ///   - sampling: greedy by default.
    ///   - stop: stop strings.
    ///   - salt: a tenant salt for the cache keys.
    /// - Returns: one completion per prompt, in the same order.
    /// - Throws: ``InferenceError`` for an empty or too long prompt.
    public func generate(
        _ prompts: [String],
        maxTokens: Int = 64,
        sampling: SamplingParameters = .greedy,
        stop: [String] = [],
        salt: String? = nil
    ) async throws -> [Completion] {
        let engine = self.engine
        let work: @Sendable () async throws -> [Completion] = {
            var completions: [Completion] = []
            completions.reserveCapacity(prompts.count)
            for prompt in prompts {
                let tokens = engine.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
                let result = try await engine.generate(
                    GenerationRequest(prompt: tokens, maxTokens: maxTokens, sampling: sampling, stop: stop, salt: salt)
                )
                completions.append(
                    Completion(
                        prompt: prompt,
                        text: result.text,
                        tokens: result.tokens,
                        finishReason: result.finishReason,
                        promptTokens: result.promptTokens,
                        cachedTokens: result.cachedTokens
                    )
                )
            }
            return completions
        }
        guard let storage, !storage.slowerTiers.isEmpty else { return try await work() }
        // Write-behind to the slower tiers runs alongside, and is flushed before returning.
        return try await storage.withWriteBehind(work).result
    }
}
