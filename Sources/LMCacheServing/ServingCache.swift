public import Inference
public import LMCacheConnector
public import LMCacheCore
internal import LMCacheRemote
internal import LMCacheStorage
internal import LMCacheTLS
public import Logging
public import ServiceLifecycle
public import Tokenizers

/// A configuration that a serving cache cannot be built from; the description says why and which
/// key to set.
public struct ServingCacheError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ message: String) { description = message }
}

/// The KV cache of a serving process, built once from configuration: the engine's cache (its tiers,
/// remote ones over TLS where the configuration asks, and the connector) and its peers (the P2P
/// tier, the chunk server peers fetch from, the controller agent), with the services to run beside
/// the HTTP server.
///
/// Built in two steps, so that a configuration that cannot work fails before a model loads:
///
/// ```swift
/// let plan = try ServingCache.Plan(configuration: config, logger: logger)  // peers' settings, TLS files
/// let serving = try plan.build(model: model, tokenizer: tokenizer, name: "gemma-3-270m")
/// let engine = GenerationEngine(model: model, tokenizer: tokenizer, connector: serving.cache.connector)
/// let server = OpenAIServer(engine: engine, storage: serving.cache.storage, configuration: …)
/// try await server.run(services: serving.services)  // one ServiceGroup: storage, peers, HTTP
/// ```
public struct ServingCache: Sendable {
    /// The tiers and the connector the engine takes.
    public let cache: EngineCache
    /// The peers' services (with `enable_p2p`, the chunk server and the agent; with `enable_controller`
    /// alone, the agent), to run beside the HTTP server; empty without either.
    public let services: [any Service]

    /// What can be checked and set up before a model loads.
    public struct Plan: Sendable {
        public let configuration: LMCacheConfiguration
        let peers: PeerSharing?
        let logger: Logger

        /// Checks `configuration`'s peer settings and sets up their TLS.
        /// - Throws: ``ServingCacheError`` for P2P or controller settings that cannot work (a missing
        ///   `controller_url` or `lmcache_instance_id`, no CPU tier, unusable certificate files).
        public init(configuration: LMCacheConfiguration, logger: Logger) throws {
            self.configuration = configuration
            self.peers = try PeerSharing(configuration: configuration, logger: logger)
            self.logger = logger
        }

        /// The cache for `model`, named `name` in chunk keys (see
        /// ``EngineCache/init(configuration:model:tokenizer:name:prefault:remoteTier:additionalTiers:logger:)``):
        /// the remote tier of `remote_url` is made with TLS where the configuration asks for it.
        /// - Throws: `StorageError` when a tier cannot be made, `InferenceError` when a blend check
        ///   layer is outside the model.
        public func build(
            model: any LanguageModel,
            tokenizer: any Tokenizer,
            name: String,
            prefault: Bool = false
        ) throws -> ServingCache {
            let (configuration, logger) = (self.configuration, self.logger)
            let cache = try EngineCache(
                configuration: configuration,
                model: model,
                tokenizer: tokenizer,
                name: name,
                prefault: prefault,
                remoteTier: { url in
                    try makeRemoteTier(
                        url: url, configuration: configuration, security: { try TLS.client($0) }, logger: logger)
                },
                additionalTiers: peers?.tier.map { [$0] } ?? [],
                logger: logger
            )
            let services = peers.flatMap { peers in cache.storage.cpu.map { peers.services(cpu: $0) } } ?? []
            return ServingCache(cache: cache, services: services)
        }
    }
}
