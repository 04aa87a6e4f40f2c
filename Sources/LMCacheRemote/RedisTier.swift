public import LMCacheCore
public import LMCacheStorage
public import LMCacheWire
public import Logging
import Metrics
public import NIOCore
import Synchronization

/// A storage tier on a Redis server (`remote_url: redis://[user:password@]host:port[/db]`).
///
/// Chunks are stored as ``KVChunkFrame`` values (tokens, layout and a checksum around the KV
/// bytes), laid out as ``RedisLayout`` says, optionally with a time to live:
///
/// - `framed` (default): one value per chunk under `{<key>}` (the key text in a hash tag), so a
///   chunk is one key in one slot, also on Redis Cluster; a read is one GET.
/// - `lmcache`: LMCache's Redis connector layout, `<key>kv_bytes` holding the value and
///   `<key>metadata` its 28-byte header (length, format, dtype, shape[4]; int32 little-endian),
///   describing the frame as opaque bytes, as the `lm://` tier's header does: format
///   ``KVChunkFrame/wireFormat`` (`BINARY`), dtype ``KVChunkFrame/wireDType`` (`uint8`), shape
///   `[length, 0, 0, 0]`. The value is written before the
///   metadata (one pipelined batch on one connection, which Redis executes in order), reads GET
///   both, and presence is EXISTS on the metadata key. The keys carry no hash tag, as LMCache's
///   do, so on a cluster they may live on different shards. Batched
/// `contains` and `get` send one pipelined batch per connection.
///
/// **Failures are misses.** When the server is down, refuses the credentials, is slow or answers
/// nonsense, `get` returns `nil`, `contains` returns `false` and `put` returns `false`; nothing is
/// thrown to the caller, and the reason is logged once per outage. The client reconnects with
/// backoff, so the tier recovers by itself when the server is back.
///
/// ```swift
/// let tier = RedisTier(host: "127.0.0.1", port: 6379, options: .init(ttl: .seconds(3600)))
/// try await tier.put(chunk)
/// let hit = try await tier.get(chunk.key)
/// ```
public final class RedisTier: StorageTier {
    /// Settings of the tier and its connections.
    public struct Options: Sendable {
        /// Connections in the pool. Default 4.
        public var connections: Int = 4
        /// Time allowed to connect and authenticate. Default 1 s.
        public var connectTimeout: Duration = .seconds(1)
        /// Time allowed for one request's replies. Default 10 s.
        public var requestTimeout: Duration = .seconds(10)
        /// The first wait after a failed connect. Default 100 ms.
        public var minimumBackoff: Duration = .milliseconds(100)
        /// The longest wait between connect attempts. Default 5 s.
        public var maximumBackoff: Duration = .seconds(5)
        /// The largest value stored or accepted. Default 1 GiB.
        public var maximumValueBytes: Int = 1 << 30
        /// Time to live of stored chunks (`SET … EX`); `nil` keeps them until Redis evicts them.
        public var ttl: Duration?
        /// How chunks' KV is serialized in the frames this tier stores (`remote_serde`). Frames of
        /// any serde are read. Default `naive`.
        public var serde: KVSerde = .naive
        /// The key layout. Default ``RedisLayout/framed``.
        public var layout: RedisLayout = .framed
        /// ACL user name (`AUTH user password`).
        public var user: String?
        /// Password (`AUTH`).
        public var password: String?
        /// Database number (`SELECT`).
        public var database: Int?
        /// TLS around each connection (`rediss://`, `rediss-cluster://`; from `LMCacheTLS`); `nil`
        /// (default) for plain TCP.
        public var security: ConnectionSecurity?

        /// Options with the given layout and time to live.
        public init(layout: RedisLayout = .framed, ttl: Duration? = nil) {
            self.layout = layout
            self.ttl = ttl
        }
    }

    public let name = "redis"
    /// The tier's settings.
    public let options: Options
    private let backend: Backend
    private let logger: Logger
    private let metrics = TierMetrics()
    /// Whether the last request failed (for one log line per run of failures).
    private let requestsFailing = Atomic<Bool>(false)

    /// One server, or a cluster.
    private enum Backend: Sendable {
        case server(RedisClient)
        case cluster(RedisClusterClient)
    }

    /// Creates the tier on one server; it connects on first use.
    public init(
        host: String, port: Int, options: Options = Options(), eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "lmcache.remote.redis")
    ) {
        self.options = options
        self.logger = logger
        let failures = metrics.connectFailures
        backend = .server(RedisClient(host: host, port: port, options: Self.clientOptions(options),
            eventLoopGroup: eventLoopGroup, logger: logger, onConnectFailure: { failures.increment() }))
    }

    /// Creates the tier on a Redis Cluster reached through any of `seeds`
    /// (`remote_url: redis-cluster://host:port[,host:port…]`); it asks for the slot map on first use.
    ///
    /// The cluster needs a layout whose keys of one chunk share a slot: the default
    /// ``RedisLayout/framed``. ``Options/database`` must be `nil` or 0 (a cluster has one database).
    public init(
        cluster seeds: [(host: String, port: Int)], options: Options = Options(),
        eventLoopGroup: (any EventLoopGroup)? = nil, logger: Logger = Logger(label: "lmcache.remote.redis")
    ) {
        precondition(options.layout == .framed, "Redis Cluster needs the cluster-safe framed layout")
        self.options = options
        self.logger = logger
        var nodeOptions = Self.clientOptions(options)
        nodeOptions.connections = max(1, min(options.connections, 2))
        nodeOptions.database = nil
        let failures = metrics.connectFailures
        backend = .cluster(RedisClusterClient(seeds: seeds, nodeOptions: nodeOptions, eventLoopGroup: eventLoopGroup,
            logger: logger, onConnectFailure: { failures.increment() }))
    }

    private static func clientOptions(_ options: Options) -> RedisClient.Options {
        var clientOptions = RedisClient.Options()
        clientOptions.connections = options.connections
        clientOptions.connectTimeout = options.connectTimeout
        clientOptions.requestTimeout = options.requestTimeout
        clientOptions.minimumBackoff = options.minimumBackoff
        clientOptions.maximumBackoff = options.maximumBackoff
        clientOptions.maximumValueBytes = options.maximumValueBytes + 4096
        clientOptions.user = options.user
        clientOptions.password = options.password
        clientOptions.database = options.database
        clientOptions.security = options.security
        return clientOptions
    }

    /// Sends the commands about `key` (all in its slot) to the server or the slot's owner.
    ///
    /// A failed request (a connection the server closed, a reply that did not come in time) is
    /// logged once per run of failures, and once more when requests succeed again; failures to
    /// connect are logged by the client.
    private func send(_ commands: [RESPCommand], about key: CacheKey) async throws -> [RESPValue] {
        do {
            let replies: [RESPValue]
            switch backend {
            case .server(let client): replies = try await client.send(commands, routingKey: key.description)
            case .cluster(let cluster):
                replies = try await cluster.send(commands, key: Self.keys(of: key, layout: options.layout).value)
            }
            if requestsFailing.exchange(false, ordering: .relaxed) {
                logger.info("Redis requests succeed again")
            }
            return replies
        } catch {
            // The client logs failures to connect or authenticate itself.
            let code = (error as? RedisClientError)?.code
            let loggedByClient = code == .unreachable || code == .authentication
            if !loggedByClient, !requestsFailing.exchange(true, ordering: .relaxed) {
                logger.warning("Redis request failed; answering misses", metadata: ["lmcache.error": "\(error)"])
            }
            throw error
        }
    }

    /// The `host:port` of the cluster master that owns `key`'s slot in the current map (tests, tools).
    package func clusterOwner(of key: CacheKey) -> String? {
        guard case .cluster(let cluster) = backend else { return nil }
        return cluster.owner(ofSlot: RedisClusterSlot.of(Self.keys(of: key, layout: options.layout).value))
    }

    // MARK: Keys

    /// The Redis keys of `key`: the one holding the value, and LMCache's metadata key if any.
    static func keys(of key: CacheKey, layout: RedisLayout) -> (value: String, metadata: String?) {
        let text = key.description
        switch layout {
        case .framed: return ("{\(text)}", nil)
        case .lmcache: return (text + "kv_bytes", text + "metadata")
        }
    }

    /// LMCache's 28-byte metadata for a stored value of `length` bytes.
    static func metadata(of chunk: KVChunk, length: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(28)
        buffer.writeInteger(Int32(clamping: length), endianness: .little)
        buffer.writeInteger(KVChunkFrame.wireFormat, endianness: .little)
        // The value is our frame, described as the lm:// tier describes it: binary bytes of `length`.
        buffer.writeInteger(KVChunkFrame.wireDType, endianness: .little)
        for value in [Int32(clamping: length), 0, 0, 0] { buffer.writeInteger(value, endianness: .little) }
        return buffer
    }

    // MARK: Commands

    func existsCommand(_ key: CacheKey) -> RESPCommand {
        let keys = Self.keys(of: key, layout: options.layout)
        return RESPCommand("EXISTS", keys.metadata ?? keys.value)
    }

    func getCommands(_ key: CacheKey) -> [RESPCommand] {
        let keys = Self.keys(of: key, layout: options.layout)
        if let metadata = keys.metadata { return [RESPCommand("GET", metadata), RESPCommand("GET", keys.value)] }
        return [RESPCommand("GET", keys.value)]
    }

    /// The commands that store `chunk` (data first, then metadata), or `nil` when it is too large.
    func putCommands(_ chunk: KVChunk) -> [RESPCommand]? {
        guard KVChunkFrame.headerLength(of: chunk) + chunk.byteCount <= 2 * options.maximumValueBytes
        else { return nil }
        let frame = KVChunkFrame.encode(chunk, serde: options.serde)
        let total = frame.readableBytes
        guard total <= options.maximumValueBytes, total <= Int(Int32.max) else { return nil }
        let keys = Self.keys(of: chunk.key, layout: options.layout)
        var expiry: [ByteBuffer] = []
        if let ttl = options.ttl {
            let milliseconds = max(1, ttl.components.seconds * 1000 + ttl.components.attoseconds / 1_000_000_000_000_000)
            expiry = milliseconds % 1000 == 0
                ? [ByteBuffer(string: "EX"), ByteBuffer(string: "\(milliseconds / 1000)")]
                : [ByteBuffer(string: "PX"), ByteBuffer(string: "\(milliseconds)")]
        }
        var commands = [RESPCommand([ByteBuffer(string: "SET"), ByteBuffer(string: keys.value), frame] + expiry)]
        if let metadata = keys.metadata {
            commands.append(RESPCommand(
                [ByteBuffer(string: "SET"), ByteBuffer(string: metadata), Self.metadata(of: chunk, length: total)] + expiry))
        }
        return commands
    }

    /// The chunk in the replies to ``getCommands(_:)``; `nil` for a miss or an invalid value.
    func chunk(from replies: ArraySlice<RESPValue>, key: CacheKey) -> KVChunk? {
        guard case .bulkString(let value?) = replies.last else {
            if let message = replies.lazy.compactMap(\.errorMessage).first { logServerError(message) }
            return nil
        }
        if options.layout == .lmcache {
            guard case .bulkString(let metadata?) = replies.first, metadata.readableBytes == 28,
                metadata.getInteger(at: metadata.readerIndex, endianness: .little, as: Int32.self)
                    == Int32(clamping: value.readableBytes),
                metadata.getInteger(at: metadata.readerIndex + 4, endianness: .little, as: Int32.self)
                    == KVChunkFrame.wireFormat
            else {
                metrics.corrupt.increment()
                return nil
            }
        }
        let owner = ReplyBytes(value)
        let chunk = value.withUnsafeReadableBytes { KVChunkFrame.decode($0, key: key, owner: owner) }
        if chunk == nil {
            metrics.corrupt.increment()
            logger.debug("a value that is not a valid chunk frame for its key; treated as a miss",
                metadata: ["lmcache.chunk.key": "\(key)", "lmcache.bytes": "\(value.readableBytes)"])
        }
        return chunk
    }

    private func logServerError(_ message: String) {
        logger.debug("Redis error reply; treated as a miss", metadata: ["lmcache.error": "\(message)"])
    }

    // MARK: StorageTier

    /// Whether Redis holds `key`; `false` when it cannot be asked.
    public func contains(_ key: CacheKey) async -> Bool {
        guard let reply = try? await send([existsCommand(key)], about: key) else { return false }
        return reply == [.integer(1)]
    }

    /// The chunk under `key`; `nil` on a miss, when Redis is unreachable, or when the value is
    /// not a valid frame for `key`.
    public func get(_ key: CacheKey) async throws -> KVChunk? {
        let chunk: KVChunk?
        if let replies = try? await send(getCommands(key), about: key) {
            chunk = self.chunk(from: replies[...], key: key)
        } else {
            chunk = nil
        }
        (chunk == nil ? metrics.misses : metrics.hits).increment()
        return chunk
    }

    /// Stores `chunk`; `true` once Redis acknowledged it, `false` when Redis is unreachable,
    /// refused it (out of memory, say) or the chunk exceeds ``Options/maximumValueBytes``.
    @discardableResult
    public func put(_ chunk: KVChunk) async throws -> Bool {
        guard let commands = putCommands(chunk),
            let replies = try? await send(commands, about: chunk.key)
        else { return false }
        guard replies.allSatisfy({ $0 == .simpleString("OK") }) else {
            if let message = replies.lazy.compactMap(\.errorMessage).first {
                logger.debug("Redis refused a chunk", metadata: ["lmcache.error": "\(message)"])
            }
            return false
        }
        metrics.stores.increment()
        return true
    }

    /// Deletes `key`; returns whether it was present.
    @discardableResult
    public func remove(_ key: CacheKey) async -> Bool {
        let keys = Self.keys(of: key, layout: options.layout)
        // Metadata first: a reader never sees metadata without its data.
        let command = RESPCommand([ByteBuffer(string: "DEL")] + [keys.metadata, keys.value].compactMap { $0 }.map { ByteBuffer(string: $0) })
        guard case .integer(let count)? = try? await send([command], about: key).first else { return false }
        return count > 0
    }

    // MARK: Batches

    /// Whether Redis holds each key: one pipelined batch of EXISTS per connection.
    public func contains(_ keys: [CacheKey]) async -> [Bool] {
        let found = Mutex([Bool](repeating: false, count: keys.count))
        await batch(keys, window: .max) { [self.existsCommand($0)] } each: { index, replies in
            if replies?.first == .integer(1) { found.withLock { $0[index] = true } }
        }
        return found.withLock { $0 }
    }

    /// Fetches the chunks under `keys`: on each connection (each slot on a cluster), pipelined
    /// windows of ``getWindow`` keys, one after another, each chunk handed to `receive` as its
    /// window completes. Small windows keep Redis writing replies straight to the socket (a
    /// pipeline of hundreds of large values makes it buffer them all) and let the caller copy each
    /// chunk out before the next arrives, so the connection's buffer is reused, not held.
    public func get(_ keys: [CacheKey], receive: @escaping @Sendable (Int, KVChunk) -> Void) async {
        await batch(keys, window: Self.getWindow) { self.getCommands($0) } each: { index, replies in
            let found: KVChunk? = replies.flatMap { self.chunk(from: $0[...], key: keys[index]) }
            (found == nil ? self.metrics.misses : self.metrics.hits).increment()
            if let found { receive(index, found) }
        }
    }

    /// Keys per pipelined window of a batched get.
    static let getWindow = 2

    /// Sends the commands of each key, grouped by connection, the groups concurrently, each in
    /// pipelined windows of `window` keys one after another; on a cluster, one batch per slot
    /// when `window` is `.max`, else windows of one key, one stream per master. Calls
    /// `each` with every key's replies (`nil` where its window failed) as its window completes.
    private func batch(
        _ keys: [CacheKey], window: Int,
        _ commands: @escaping @Sendable (CacheKey) -> [RESPCommand],
        each: @escaping @Sendable (Int, [RESPValue]?) -> Void
    ) async {
        let groups: [[Int]]
        var keysPerWindow = window
        switch backend {
        case .server(let client):
            groups = Array(Dictionary(grouping: keys.indices) { client.slotIndex(for: keys[$0].description) }.values)
        case .cluster where window == .max:
            // A pipelined batch may only touch one slot: one batch per slot.
            let layout = options.layout
            groups = Array(Dictionary(grouping: keys.indices) {
                RedisClusterSlot.of(Self.keys(of: keys[$0], layout: layout).value)
            }.values)
        case .cluster(let cluster):
            // Windows of one key (one slot each, so redirects stay per slot), one stream per master.
            let layout = options.layout
            groups = Array(Dictionary(grouping: keys.indices) {
                cluster.owner(ofSlot: RedisClusterSlot.of(Self.keys(of: keys[$0], layout: layout).value)) ?? ""
            }.values)
            keysPerWindow = 1
        }
        let window = keysPerWindow
        await withTaskGroup(of: Void.self) { group in
            for indices in groups {
                group.addTask {
                    for start in stride(from: 0, to: indices.count, by: window) {
                        let part = indices[start..<min(start + window, indices.count)]
                        let perKey = part.map { commands(keys[$0]) }
                        guard let replies = try? await self.send(perKey.flatMap { $0 }, about: keys[part.first!])
                        else {
                            for index in part { each(index, nil) }
                            continue
                        }
                        var offset = 0
                        for (index, sent) in zip(part, perKey) {
                            each(index, Array(replies[offset..<(offset + sent.count)]))
                            offset += sent.count
                        }
                    }
                }
            }
        }
    }

    /// Closes the connections; requests after this reconnect.
    public func close() async {
        switch backend {
        case .server(let client): await client.close()
        case .cluster(let cluster): await cluster.close()
        }
    }

    private struct TierMetrics: Sendable {
        let hits = Counter(label: "lmcache.storage.hits", dimensions: [("tier", "redis")])
        let misses = Counter(label: "lmcache.storage.misses", dimensions: [("tier", "redis")])
        let stores = Counter(label: "lmcache.storage.stores", dimensions: [("tier", "redis")])
        let corrupt = Counter(label: "lmcache.storage.corrupt", dimensions: [("tier", "redis")])
        let connectFailures = Counter(label: "lmcache.remote.connect_failures", dimensions: [("tier", "redis")])
    }
}

/// A reply's bytes kept alive for a chunk that points into them.
///
/// `@unchecked Sendable`: the buffer is never mutated after the reply completed, and a write to
/// storage it shares would copy first (ByteBuffer is copy-on-write), so the bytes a decoded chunk
/// points at stay valid and unchanged while this object lives.
final class ReplyBytes: @unchecked Sendable {
    let buffer: ByteBuffer
    init(_ buffer: ByteBuffer) { self.buffer = buffer }
}
