public import Tokenizers

/// What a server needs of an engine: requests in, tokens out, its limits and its load.
/// ``GenerationEngine`` is the engine; tests of the HTTP layer run the server over a stand-in that
/// answers at once and fails on demand.
public protocol ServingEngine: AnyObject, Sendable {
    /// The tokenizer prompts are encoded with and tokens decoded with.
    var tokenizer: any Tokenizer { get }
    /// The model's architecture (`gemma3`, `llama`, `qwen2`), which picks its chat template.
    var architecture: String { get }
    /// The most tokens a sequence can hold.
    var contextLength: Int { get }
    /// How requests share the engine.
    var limits: SchedulerLimits { get }
    /// Requests running and waiting right now.
    var load: (running: Int, waiting: Int) { get }
    /// Requests stopped because they were cancelled, since the start.
    var cancelledRequests: Int { get }
    /// Prompt tokens copied from other requests' sequences instead of computed, since the start.
    var copiedPromptTokens: Int { get }
    /// Bytes of KV pages of finished requests kept mapped for the next requests.
    var freeKVPageBytes: Int { get }
    /// Whether requests go through a KV cache.
    var usesCache: Bool { get }

    /// Generates a completion; see ``GenerationEngine/generate(_:onToken:)``.
    func generate(
        _ request: GenerationRequest,
        onToken: @escaping @Sendable (Int32, String) -> Bool
    ) async throws -> GenerationResult

    /// Cancels every request and refuses new ones; see ``GenerationEngine/cancelAll()``.
    func cancelAll()
}

extension GenerationEngine: ServingEngine {
    public var architecture: String { model.configuration.architecture }

    public var usesCache: Bool { connector != nil }
}
