internal import Dispatch
internal import LMCacheCore
internal import Synchronization
public import Tokenizers

/// One completion to generate.
public struct GenerationRequest: Sendable, Hashable {
    /// The prompt's token ids (already templated and tokenized).
    public var prompt: [Int32]
    /// Most tokens to generate.
    public var maxTokens: Int
    /// How tokens are chosen.
    public var sampling: SamplingParameters
    /// Stop when the text contains one of these (the text is cut before it).
    public var stop: [String]
    /// The tenant salt of the cache keys (`nil`: the shared, unsalted namespace).
    public var salt: String?

    /// A request; greedy, no stop strings and no tenant by default.
    public init(
        prompt: [Int32],
        maxTokens: Int,
        sampling: SamplingParameters = .greedy,
        stop: [String] = [],
        salt: String? = nil
    ) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
        self.salt = salt
    }
}

/// A model, its tokenizer and (optionally) the cache, running one sequence at a time on a dedicated
/// thread, so that long prefills never block the caller's executor.
///
/// Each request goes through the KV connector: its cached prefix is looked up and fetched (on the
/// caller's task), then on the engine's thread loaded, the rest prefilled, the new chunks saved right
/// after the first token, and the continuation decoded. Requests are served in arrival order, one at a
/// time (no batching across sequences yet).
///
/// ```swift
/// let engine = GenerationEngine(model: model, tokenizer: tokenizer, connector: connector)
/// let result = try await engine.generate(GenerationRequest(prompt: tokenizer.encode("Hi"), maxTokens: 8))
/// print(result.text, result.cachedTokens)
/// ```
public final class GenerationEngine: Sendable {
    /// The model.
    public let model: any LanguageModel
    /// Its tokenizer.
    public let tokenizer: any Tokenizer
    /// The cache, or `nil` when it is off.
    public let connector: KVConnector?
    /// Segment reuse (CacheBlend) over ``connector``'s storage, when blending is on.
    public let blender: BlendConnector?
    private let queue = DispatchQueue(label: "lmcache.engine")
    private let worker: Worker

    /// An engine over `model`; `connector` turns the cache on.
    public init(
        model: any LanguageModel, tokenizer: any Tokenizer, connector: KVConnector? = nil, blender: BlendConnector? = nil
    ) {
        self.model = model
        self.tokenizer = tokenizer
        self.connector = connector ?? blender?.prefix
        self.blender = blender
        self.worker = Worker(session: InferenceSession(model: model))
    }

    /// The most tokens a sequence can hold.
    public var contextLength: Int { model.configuration.contextLength }

    /// Generates a completion, calling `onToken` with each new token and its text as soon as it exists.
    ///
    /// - Parameters:
    ///   - request: the prompt and settings.
    ///   - onToken: called on the engine's thread; return `false` to stop early (a client went away).
    /// - Returns: the tokens, text and finish reason, with how many prompt tokens came from the cache.
    /// - Throws: ``InferenceError`` for an empty or too long prompt or invalid tokens; `CancellationError`
    ///   when the task is cancelled before the request starts.
    public func generate(
        _ request: GenerationRequest,
        onToken: @escaping @Sendable (Int32, String) -> Bool = { _, _ in true }
    ) async throws -> GenerationResult {
        guard !request.prompt.isEmpty else { throw InferenceError.invalidInput("the prompt has no tokens") }
        guard request.prompt.count < contextLength else {
            throw InferenceError.invalidInput(
                "the prompt has \(request.prompt.count) tokens; the model's context is \(contextLength)"
            )
        }
        let blend: BlendCache? =
            if let blender { BlendCache(connector: blender, lookup: await blender.lookup(request.prompt, salt: request.salt)) } else { nil }
        let lookup: CacheLookup? =
            if let connector, blend == nil { await connector.lookup(request.prompt, salt: request.salt) } else { nil }
        try Task.checkCancellation()
        let maxTokens = min(request.maxTokens, contextLength - request.prompt.count)
        let worker = self.worker
        let connector = self.connector
        let tokenizer = self.tokenizer
        let cancelled = CancellationFlag()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                queue.async {
                    guard !cancelled.isSet else {
                        continuation.resume(throwing: CancellationError())
                        return
                    }
                    let cache = blend.map(PromptCache.init(blending:)) ?? connector.flatMap { connector in
                        lookup.map { PromptCache(connector: connector, lookup: $0) }
                    }
                    continuation.resume(
                        with: Result { () throws(InferenceError) -> GenerationResult in
                            try worker.run(request, maxTokens: maxTokens, tokenizer: tokenizer, cache: cache) {
                                !cancelled.isSet && onToken($0, $1)
                            }
                        }
                    )
                }
            }
        } onCancel: {
            cancelled.set()
        }
    }
}

/// The engine's session; used only on the engine's serial queue.
///
/// `@unchecked Sendable`: every access happens inside a block on `GenerationEngine.queue`, which is
/// serial, so the non-Sendable session is never touched by two threads at once.
private final class Worker: @unchecked Sendable {
    let session: InferenceSession

    init(session: InferenceSession) { self.session = session }

    func run(
        _ request: GenerationRequest,
        maxTokens: Int,
        tokenizer: any Tokenizer,
        cache: PromptCache?,
        onToken: (Int32, String) -> Bool
    ) throws(InferenceError) -> GenerationResult {
        session.sequence.truncate(to: 0)
        return try session.generate(
            prompt: request.prompt,
            maxTokens: maxTokens,
            sampling: request.sampling,
            stopStrings: request.stop,
            tokenizer: tokenizer,
            cache: cache,
            onToken: onToken
        )
    }
}

/// A flag set once, read from any thread.
private final class CancellationFlag: Sendable {
    private let value = Atomic(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
