internal import GGUF
package import Inference
package import LMCacheConnector
package import LMCacheCore
package import Tokenizers

extension TestModel {
    /// The test model and its tokenizer, loaded once per test process (loading maps the file). Fails
    /// (never skips) when the file is missing.
    package static let shared: Result<(any LanguageModel, any Tokenizer), any Error> = Result {
        let file = try GGUFFile(contentsOf: requirePath())
        return (try loadModel(from: file), try makeTokenizer(from: file))
    }

    /// The shared test model.
    package static func model() throws -> any LanguageModel { try shared.get().0 }

    /// A fresh cache for the test model over a new CPU-only tier of 64 MiB (not pre-faulted), chunks
    /// of 256 tokens unless `configure` says otherwise, named `gemma-3-270m` in keys.
    package static func cache(_ configure: (inout LMCacheConfiguration) -> Void = { _ in }) throws -> EngineCache {
        let (model, tokenizer) = try shared.get()
        var configuration = LMCacheConfiguration()
        configuration.maxLocalCPUSize = 0.0625
        configure(&configuration)
        return try EngineCache(configuration: configuration, model: model, tokenizer: tokenizer, name: "gemma-3-270m")
    }

    /// A prefix connector over a fresh ``cache(_:)``.
    package static func connector(
        chunkSize: Int = 256,
        windowAware: Bool = true,
        saveDecodeCache: Bool = false
    ) throws -> KVConnector {
        try cache {
            $0.chunkSize = chunkSize
            $0.windowAwareLoading = windowAware
            $0.saveDecodeCache = saveDecodeCache
        }.prefix
    }
}
