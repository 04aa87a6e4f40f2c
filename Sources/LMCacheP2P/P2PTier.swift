public import LMCacheCore
public import LMCacheRemote
public import LMCacheStorage
public import LMCacheWire
public import Logging
import Metrics
import Synchronization

/// The P2P tier: chunks that another instance computed, found through the controller and fetched
/// from that instance over `lm://`.
///
/// The storage manager searches it after the local tiers. A batched ``contains(_:)-(_:[CacheKey])``
/// is one controller lookup: the answer names the live peer holding the longest leading run of
/// the keys, and the tier remembers that route for the ``get(_:)`` calls that follow. `get`
/// fetches the chunk from the peer and decodes it as a ``KVChunkFrame``, which checks the key,
/// the token count and a checksum over the header, tokens and KV bytes (the storage manager then
/// checks the token ids themselves and promotes the chunk into the CPU tier).
///
/// **Failures are misses, bounded in time.** A peer that is gone refuses the connection at once;
/// one that stalls or whose link is down costs at most ``Options/peer``'s connect or request
/// timeout, after which the peer's connections back off and answer misses at once. A peer that
/// no longer has the chunk answers a miss. In each case the tier tells the controller to forget
/// that the peer holds the key, so the map corrects itself. The tier never stores: `put` declines.
public final class P2PTier: StorageTier {
    /// Settings of the tier.
    public struct Options: Sendable {
        /// Connections to each peer and their timeouts. Defaults: 2 connections, connect 1 s,
        /// request 2 s, backoff 200 ms to 5 s.
        public var peer: LMServerTier.Options
        /// Routes remembered between a lookup and the fetches that follow it. Default 4096.
        public var maximumRoutes: Int = 4096

        /// The defaults.
        public init() {
            peer = LMServerTier.Options()
            peer.connections = 2
            peer.connectTimeout = .seconds(1)
            peer.requestTimeout = .seconds(2)
            peer.minimumBackoff = .milliseconds(200)
            peer.maximumBackoff = .seconds(5)
        }
    }

    public let name = "p2p"
    /// This instance's id: the controller never answers with it.
    public let instanceID: String
    private let controller: ControllerClient
    private let options: Options
    private let logger: Logger
    private let state = Mutex(State())
    private let hits = Counter(label: "lmcache.storage.hits", dimensions: [("tier", "p2p")])
    private let misses = Counter(label: "lmcache.storage.misses", dimensions: [("tier", "p2p")])
    private let corrections = Counter(label: "lmcache.p2p.stale_entries")

    /// Where a key was last found, and the connections to each peer.
    struct State {
        var routes: [CacheKey: Route] = [:]
        var peers: [String: LMServerTier] = [:]
    }

    /// A peer that holds a key, by the controller's last answer.
    struct Route: Hashable, Sendable {
        var instanceID: String
        var host: String
        var port: Int
    }

    /// Creates the tier.
    public init(
        instanceID: String,
        controller: ControllerClient,
        options: Options = Options(),
        logger: Logger = Logger(label: "lmcache.p2p")
    ) {
        self.instanceID = instanceID
        self.controller = controller
        self.options = options
        self.logger = logger
    }

    // MARK: StorageTier

    /// Whether some live peer holds `key`.
    public func contains(_ key: CacheKey) async -> Bool {
        await contains([key]).first ?? false
    }

    /// For each key, whether it lies in the leading run that one peer holds: one controller
    /// lookup. All `false` when the controller cannot be reached.
    public func contains(_ keys: [CacheKey]) async -> [Bool] {
        var result = [Bool](repeating: false, count: keys.count)
        guard let route = await lookup(keys) else { return result }
        for i in 0..<route.count { result[i] = true }
        return result
    }

    /// The chunk under `key`, fetched from the peer that holds it; `nil` on a miss or any failure.
    public func get(_ key: CacheKey) async throws -> KVChunk? {
        var route = state.withLock { $0.routes[key] }
        if route == nil { route = await lookup([key]).map { $0.count > 0 ? $0.route : nil } ?? nil }
        guard let route else {
            misses.increment()
            return nil
        }
        let peer = connection(to: route)
        let payload = await peer.getRaw(Self.wireKey(key))
        guard let payload, let chunk = KVChunkFrame.decode(payload.bytes, key: key, owner: payload) else {
            misses.increment()
            logger.debug(
                payload == nil ? "peer did not serve a chunk it was said to hold" : "peer sent an invalid chunk",
                metadata: ["lmcache.peer": "\(route.instanceID)", "lmcache.chunk.key": "\(key)"]
            )
            await forget([key], at: route)
            return nil
        }
        hits.increment()
        return chunk
    }

    /// `false`: the P2P tier holds nothing of its own, so the storage manager writes nothing to it.
    public var storesChunks: Bool { false }

    /// Declines: the P2P tier holds nothing of its own. Returns `false`.
    @discardableResult
    public func put(_ chunk: KVChunk) async throws -> Bool { false }

    /// Forgets the route to `key` (the peer keeps its chunk). Returns `false`.
    @discardableResult
    public func remove(_ key: CacheKey) async -> Bool {
        state.withLock { _ = $0.routes.removeValue(forKey: key) }
        return false
    }

    // MARK: Keys and routes

    /// The key a peer serves a chunk under: the chunk's `lm://` key and its token count
    /// (`model@1@0@hash@dtype#tokens`), since a key's text form alone does not give the count.
    public static func wireKey(_ key: CacheKey) -> String { "\(key)#\(key.tokenCount)" }

    /// The cache key that ``wireKey(_:)`` wrote; `nil` for anything else.
    public static func cacheKey(wireKey text: String) -> CacheKey? {
        guard let mark = text.lastIndex(of: "#"), let count = Int(text[text.index(after: mark)...]), count > 0,
            count <= KVChunkFrame.maximumTokens
        else { return nil }
        return CacheKey(parsing: text[..<mark], tokenCount: count)
    }

    /// The controller's form of `key`.
    public static func controllerKey(_ key: CacheKey) -> ControllerChunkKey {
        ControllerChunkKey(low: key.hash.low, high: key.hash.high, tokenCount: UInt32(key.tokenCount))
    }

    private func lookup(_ keys: [CacheKey]) async -> (route: Route, count: Int)? {
        guard !keys.isEmpty else { return nil }
        let asked = Array(keys.prefix(ControllerMessage.maximumKeys))
        let reply: ControllerMessage
        do {
            reply = try await controller.send(.lookup(instanceID: instanceID, keys: asked.map(Self.controllerKey)))
        } catch {
            logger.debug("controller lookup failed", metadata: ["lmcache.error": "\(error)"])
            return nil
        }
        guard case .peer(let id, let host, let port, let count) = reply, count > 0, !id.isEmpty, port > 0 else {
            return nil
        }
        let route = Route(instanceID: id, host: host, port: port)
        let found = min(count, asked.count)
        state.withLock { state in
            if state.routes.count + found > options.maximumRoutes { state.routes.removeAll(keepingCapacity: true) }
            for key in asked[..<found] { state.routes[key] = route }
        }
        return (route, found)
    }

    private func connection(to route: Route) -> LMServerTier {
        let address = "\(route.host):\(route.port)"
        return state.withLock { state in
            if let tier = state.peers[address] { return tier }
            let tier = LMServerTier(host: route.host, port: route.port, options: options.peer, logger: logger)
            state.peers[address] = tier
            return tier
        }
    }

    /// Drops the routes of `keys` and tells the controller the peer does not hold them.
    private func forget(_ keys: [CacheKey], at route: Route) async {
        state.withLock { state in
            for key in keys where state.routes[key] == route { state.routes[key] = nil }
        }
        corrections.increment(by: keys.count)
        _ = try? await controller.send(.forget(peerID: route.instanceID, keys: keys.map(Self.controllerKey)))
    }

    /// Closes the connections to peers.
    public func close() async {
        let peers = state.withLock { state in
            defer { state.peers = [:] }
            return Array(state.peers.values)
        }
        for peer in peers { await peer.close() }
    }
}
