public import Inference
public import LMCacheCore
public import LMCacheStorage
public import Logging
public import Tokenizers

/// The KV cache of one engine, built once from configuration: its tiers (a ``StorageManager``) and
/// the connector the engine takes: prefix reuse (``KVConnector``), with blending on top
/// (``BlendConnector``) when `enable_blending` is on.
///
/// ``storage`` is a `Service`: its owner runs it (its write-behind to the slower tiers) for as long as
/// the engine serves, in the program's `ServiceGroup` (as `OpenAIServer.run(services:)` does) or around
/// a piece of work with ``StorageManager/withWriteBehind(flushTimeout:_:)``. A serving process builds
/// its cache and peers with `LMCacheServing`'s `ServingCache`.
///
/// ```swift
/// let cache = try EngineCache(configuration: config, model: model, tokenizer: tokenizer, name: "gemma-3-270m")
/// let engine = GenerationEngine(model: model, tokenizer: tokenizer, connector: cache.connector)
/// ```
public struct EngineCache: Sendable {
    /// The tiers.
    public let storage: StorageManager
    /// Prefix reuse over ``storage``.
    public let prefix: KVConnector
    /// Segment reuse on top of ``prefix``, when blending is on.
    public let blender: BlendConnector?

    /// What the engine takes: the blender when blending is on, else the prefix connector.
    public var connector: any KVCacheConnector {
        if let blender { blender } else { prefix }
    }

    /// The cache over `storage` for `model`, named `name` in chunk keys, with `configuration`'s
    /// chunking and blending settings.
    /// - Throws: ``InferenceError/invalidInput(_:)`` when a blend check layer is outside the model.
    public init(
        storage: StorageManager,
        model: any LanguageModel,
        tokenizer: any Tokenizer,
        name: String,
        configuration: LMCacheConfiguration
    ) throws(InferenceError) {
        let prefix = KVConnector(storage: storage, model: model, name: name, configuration: configuration)
        let blender = BlendConnector(prefix: prefix, configuration: configuration, tokenizer: tokenizer)
        if let blender, let layer = blender.options.checkLayers.first(where: { $0 >= model.configuration.layers }) {
            throw InferenceError.invalidInput(
                "blend_check_layers: layer \(layer) is outside the model's \(model.configuration.layers) layers"
            )
        }
        self.storage = storage
        self.prefix = prefix
        self.blender = blender
    }

    /// The cache `configuration` describes: its tiers (see
    /// ``StorageManager/init(configuration:prefault:remoteTier:additionalTiers:logger:)``) and connector.
    /// - Throws: ``StorageError`` when a tier cannot be made, ``InferenceError`` as above.
    public init(
        configuration: LMCacheConfiguration,
        model: any LanguageModel,
        tokenizer: any Tokenizer,
        name: String,
        prefault: Bool = false,
        remoteTier: ((RemoteURL) throws -> any StorageTier)? = nil,
        additionalTiers: [any StorageTier] = [],
        logger: Logger = Logger(label: "lmcache.storage")
    ) throws {
        let storage = try StorageManager(
            configuration: configuration,
            prefault: prefault,
            remoteTier: remoteTier,
            additionalTiers: additionalTiers,
            logger: logger
        )
        try self.init(storage: storage, model: model, tokenizer: tokenizer, name: name, configuration: configuration)
    }
}
