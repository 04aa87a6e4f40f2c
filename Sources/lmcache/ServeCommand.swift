import ArgumentParser
import Foundation
import GGUF
import Inference
import LMCacheCommandSupport
import LMCacheConnector
import LMCacheCore
import LMCacheServing
import Logging
import OpenAIServer
import Tokenizers

/// `lmcache serve [MODEL]`: the OpenAI-compatible server on the built-in engine, with the KV cache on.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a GGUF model through an OpenAI-compatible HTTP API, with the KV cache on.",
        discussion: """
            Routes: POST /v1/completions, POST /v1/chat/completions (stream: true for server-sent events), GET \
            /v1/models, GET /health, GET /metrics. A request's cache_salt field, or its X-Tenant-Id header, \
            keeps its cached KV apart from other tenants'. The cache is configured as for every command \
            (--config FILE, LMCACHE_* variables, --set key=value). Requests run together (continuous batching): \
            up to --max-num-seqs at once, prompts computed in pieces of --max-num-batched-tokens between decode \
            steps (at most --long-prefill-token-threshold of one prompt while others decode), and their \
            reserved KV positions within --max-kv-tokens; up to --max-queued-requests more wait, and the rest \
            get 503 with Retry-After. A request without max_tokens generates at most \
            --max-tokens-default tokens; one that runs past --request-timeout is cancelled (504). A request \
            whose client closes its connection is cancelled (streamed or not). On SIGTERM or SIGINT the server \
            stops accepting connections, lets running requests go on for --shutdown-grace seconds (a second \
            signal ends the grace at once), cancels the rest (their clients get 503), waits up to 10 s for them \
            to end and up to 2 s for the cache's write-behind, then exits: at most grace + 12 s.
            """
    )

    @Argument(help: "GGUF model file (default: the Gemma 3 270M file that scripts/fetch-model installs).")
    var model: String?

    @Option(help: "Address to bind.")
    var host = "127.0.0.1"

    @Option(help: "Port to bind (0: any free port).")
    var port = 8000

    @OptionGroup var cacheArguments: CacheArguments

    @Option(help: "The model's name in the API (default: the file name without .gguf).")
    var servedModelName: String?

    @Option(
        name: .customLong("max-model-len"),
        help: "Longest prompt plus completion, tokens (default: the model's context)."
    )
    var maxModelLength: Int?

    @Option(name: .customLong("max-num-seqs"), help: "Most requests running at once; more wait in arrival order.")
    var maxSequences = SchedulerLimits().maxSequences

    @Option(
        name: .customLong("max-num-batched-tokens"),
        help:
            "Most prompt tokens computed in one step before running requests decode their next token (multiple of 256)."
    )
    var prefillChunkTokens = SchedulerLimits().prefillChunkTokens

    @Option(
        name: .customLong("max-kv-tokens"),
        help:
            "KV positions running requests may reserve together (prompt + max_tokens each); a request runs alone whatever it needs."
    )
    var maxKVTokens = SchedulerLimits().maxKVTokens

    @Option(
        name: .customLong("kept-kv-tokens"),
        help:
            "KV positions of finished requests kept in the engine's memory for prompts that start with the same tokens (reused at any token, without a copy); 0 keeps none."
    )
    var keptKVTokens = SchedulerLimits().keptKVTokens

    @Option(
        name: .customLong("long-prefill-token-threshold"),
        help:
            "Most tokens of one prompt computed in a step while other requests decode, so that their tokens keep coming; 0: up to --max-num-batched-tokens."
    )
    var longPrefillTokens = SchedulerLimits().longPrefillTokens

    @Option(
        help: """
            CPU threads for the engine (default: LMCACHE_THREADS, else the CPUs this process may use: \
            its affinity mask capped by its cgroup CPU quota, so a container limited to one CPU gets one).
            """
    )
    var threads: Int?

    @Flag(
        help:
            "Touch the CPU tier's whole budget at start (max_local_cpu_size), so that no store pays for page faults; by default its memory grows with use."
    )
    var prefault = false

    @Flag(help: "Serve without the KV cache (every prompt is computed).")
    var noCache = false

    @Option(
        name: .customLong("max-tokens-default"),
        help: """
            Most tokens generated for a request without max_tokens (or max_completion_tokens): chat completions \
            generate up to this many, completions up to OpenAI's 16 (or this, if smaller).
            """
    )
    var maxTokensDefault = OpenAIServer.Configuration(modelName: "").maxTokensDefault

    @Option(
        name: .customLong("max-queued-requests"),
        help: "Most requests waiting on top of the --max-num-seqs running ones; more get 503 with Retry-After."
    )
    var maxQueuedRequests = OpenAIServer.Configuration(modelName: "").maxQueuedRequests

    @Option(
        name: .customLong("request-timeout"),
        help: "Seconds a request may take, queueing included, before it is cancelled and answered 504 (0: no limit)."
    )
    var requestTimeout = 0.0

    @Option(
        name: .customLong("shutdown-grace"),
        help: "Seconds running requests may go on after SIGTERM or SIGINT before they are cancelled."
    )
    var shutdownGrace = 5.0

    func validate() throws {
        guard (0...65_535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        if let maxModelLength, maxModelLength < 2 { throw ValidationError("--max-model-len must be at least 2") }
        guard shutdownGrace >= 0, shutdownGrace.isFinite else {
            throw ValidationError("--shutdown-grace must be a number of seconds, at least 0")
        }
        if maxTokensDefault < 1 {
            throw ValidationError("--max-tokens-default must be at least 1, not \(maxTokensDefault)")
        }
        if maxQueuedRequests < 0 {
            throw ValidationError("--max-queued-requests must not be negative, not \(maxQueuedRequests)")
        }
        guard requestTimeout >= 0, requestTimeout <= 1e6 else {
            throw ValidationError("--request-timeout must be a number of seconds from 0 (no limit) to 1000000")
        }
        if let problem = limits.problem {
            throw ValidationError(
                "\(problem) (--max-num-seqs, --max-num-batched-tokens, --max-kv-tokens, --kept-kv-tokens, "
                    + "--long-prefill-token-threshold)")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, not \(threads)") }
        if prefillChunkTokens % 256 != 0 {
            throw ValidationError("--max-num-batched-tokens must be a multiple of 256, not \(prefillChunkTokens)")
        }
    }

    var limits: SchedulerLimits {
        SchedulerLimits(
            maxSequences: maxSequences, prefillChunkTokens: prefillChunkTokens, maxKVTokens: maxKVTokens,
            keptKVTokens: keptKVTokens, longPrefillTokens: longPrefillTokens)
    }

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.serve")
        // Before any tier or server is built: their swift-metrics counters then appear in /metrics.
        PrometheusBackend.bootstrap()
        let path = model ?? ModelArguments.defaultModelPath
        guard FileManager.default.fileExists(atPath: path) else {
            throw CommandFailure(
                model == nil
                    ? "the default model is not installed at \(path): run scripts/fetch-model (it installs it from PyPI), or pass a GGUF file"
                    : "model file \(path) does not exist"
            )
        }
        if let threads { try EngineThreads.set(threads) }
        let loaded = try cacheArguments.load(logger: logger)
        // Checked before the model loads: a P2P configuration that cannot work fails at once.
        let plan: ServingCache.Plan?
        do {
            plan = noCache ? nil : try ServingCache.Plan(configuration: loaded.configuration, logger: logger)
        } catch let error as ServingCacheError {
            throw CommandFailure(error.description)
        }
        let file = try GGUFFile(contentsOf: path)
        let languageModel = try loadModel(from: file)
        let tokenizer = try makeTokenizer(from: file)
        let name = servedModelName ?? URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent
        let serving: ServingCache?
        do {
            serving = try plan?.build(model: languageModel, tokenizer: tokenizer, name: name, prefault: prefault)
        } catch let error as InferenceError {
            throw ValidationError(error.message)
        }
        let cache = serving?.cache
        let engine = GenerationEngine(model: languageModel, tokenizer: tokenizer, connector: cache?.connector, limits: limits)
        let server = OpenAIServer(
            engine: engine,
            storage: cache?.storage,
            configuration: .init(
                host: host,
                port: port,
                modelName: name,
                maxModelLength: maxModelLength,
                shutdownGrace: .milliseconds(Int((shutdownGrace * 1000).rounded())),
                maxTokensDefault: maxTokensDefault,
                maxQueuedRequests: maxQueuedRequests,
                requestTimeout: requestTimeout > 0 ? .seconds(requestTimeout) : nil
            ),
            logger: logger
        )
        let host = self.host
        let threads = EngineThreads.count
        let cacheState =
            noCache
            ? "off" : "on (chunk_size \(loaded.configuration.chunkSize)\(cache?.blender == nil ? "" : ", blending"))"
        try await server.run(services: serving?.services ?? []) { port in
            logger.info("serving \(name) on http://\(host):\(port)/v1 with the KV cache \(cacheState), \(threads == 1 ? "1 thread" : "\(threads) threads")")
        }
    }
}
