public import LMCacheCore
public import LMCacheStorage
public import LMCacheWire
public import Logging
import Metrics
public import NIOCore
import NIOPosix

/// A storage tier on an `lm://` cache server (`remote_url: lm://host:port`).
///
/// Chunks are stored as ``KVChunkFrame`` values under their key's text form
/// (`model@1@0@hash@dtype`). The tier keeps a small pool of connections; requests from
/// concurrent callers are pipelined on them, and replies are matched in order. All requests for
/// one key go over the same connection, so a `get` after a `put` of the same key sees it
/// (the server answers each connection in order).
///
/// **Failures are misses.** When the server is down, slow or answers nonsense, `get` returns
/// `nil`, `contains` returns `false` and `put` returns `false`; nothing is thrown to the caller.
/// A connection that fails is dropped; the next request reconnects, and after a failed connect
/// the tier waits (exponential backoff, from ``Options/minimumBackoff`` to
/// ``Options/maximumBackoff``) before trying again, answering misses at once meanwhile; the
/// first connection to reach the server again ends the others' back-off. So an engine computes
/// what it cannot load, and finds the server again when it comes back.
///
/// The protocol has no delete: ``remove(_:)`` does nothing and returns `false`.
///
/// ```swift
/// let tier = LMServerTier(host: "localhost", port: 65432)
/// try await tier.put(chunk)
/// let hit = try await tier.get(chunk.key)
/// ```
public final class LMServerTier: StorageTier {
    /// Connection and timing settings.
    public struct Options: Sendable {
        /// Connections in the pool. Default 4.
        public var connections: Int = 4
        /// Time allowed to connect. Default 1 s.
        public var connectTimeout: Duration = .seconds(1)
        /// Time allowed for one reply (a GET's whole payload). Default 10 s.
        public var requestTimeout: Duration = .seconds(10)
        /// The first wait after a failed connect. Default 100 ms.
        public var minimumBackoff: Duration = .milliseconds(100)
        /// The longest wait between connect attempts. Default 5 s.
        public var maximumBackoff: Duration = .seconds(5)
        /// The largest value sent or accepted. Default 1 GiB.
        public var maximumValueBytes: Int = 1 << 30
        /// How chunks' KV is serialized in the frames this tier stores (`remote_serde`). Frames of
        /// any serde are read. Default `naive`.
        public var serde: KVSerde = .naive
        /// TLS around each connection (`extra_config: {lm_tls: true}`, from `LMCacheTLS`); `nil`
        /// (default) speaks plain TCP, as LMCache's servers do.
        public var security: ConnectionSecurity?
        /// The shared token sent first on each connection (`lm_token`; ``LMAccessToken``); `nil`
        /// (default) sends none, as LMCache's clients do.
        public var token: String?

        /// The default options.
        public init() {}
    }

    public let name = "lm"
    /// The server's address.
    public let host: String
    /// The server's port.
    public let port: Int
    private let options: Options
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let pool: ConnectionPool
    private let metrics: TierMetrics

    /// Creates the tier; it connects on first use.
    public init(
        host: String,
        port: Int,
        options: Options = Options(),
        eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger = Logger(label: "lmcache.remote.lm")
    ) {
        precondition(options.connections > 0, "LMServerTier needs at least one connection")
        self.host = host
        self.port = port
        self.options = options
        self.eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
        let metrics = TierMetrics()
        self.metrics = metrics
        pool = ConnectionPool(
            connections: options.connections, minimumBackoff: options.minimumBackoff,
            maximumBackoff: options.maximumBackoff, eventLoopGroup: self.eventLoopGroup, logger: logger,
            server: "lm:// server", address: "\(host):\(port)", whileDown: "unreachable; answering misses until it is back",
            onConnectFailure: { metrics.connectFailures.increment() }
        )
    }

    // MARK: StorageTier

    /// Whether the server holds `key`; `false` when it cannot be asked.
    public func contains(_ key: CacheKey) async -> Bool {
        guard let reply = try? await send(.exist, key: Self.wireKey(key)) else { return false }
        return reply.header.isSuccess
    }

    /// The chunk under `key`; `nil` on a miss, when the server is unreachable, or when the value
    /// is not a valid frame for `key`.
    public func get(_ key: CacheKey) async throws -> KVChunk? {
        let reply: LMClientReply
        do {
            reply = try await send(.get, key: Self.wireKey(key))
        } catch {
            metrics.misses.increment()
            return nil
        }
        guard reply.header.isSuccess, let payload = reply.payload else {
            metrics.misses.increment()
            return nil
        }
        guard let chunk = KVChunkFrame.decode(payload.bytes, key: key, owner: payload) else {
            metrics.corrupt.increment()
            metrics.misses.increment()
            logger.debug(
                "a value that is not a valid chunk frame for its key; treated as a miss",
                metadata: ["lmcache.chunk.key": "\(key)", "lmcache.bytes": "\(payload.count)"]
            )
            return nil
        }
        metrics.hits.increment()
        return chunk
    }

    /// Sends `chunk` to the server. `true` once the bytes are handed to the connection; `false`
    /// when the server is unreachable or the chunk exceeds ``Options/maximumValueBytes``.
    @discardableResult
    public func put(_ chunk: KVChunk) async throws -> Bool {
        guard KVChunkFrame.headerLength(of: chunk) + chunk.byteCount <= 2 * options.maximumValueBytes,
            let channel = await channel(slot: slot(for: Self.wireKey(chunk.key)))
        else { return false }
        let payload = KVChunkFrame.encode(chunk, serde: options.serde, allocator: channel.allocator)
        let total = payload.readableBytes
        guard total <= options.maximumValueBytes else { return false }
        let header = LMRequestHeader(
            command: .put,
            key: Self.wireKey(chunk.key),
            length: Int32(total),
            format: KVChunkFrame.wireFormat,
            dtype: KVChunkFrame.wireDType,
            shape: LMShape([Int32(total)])
        )
        do {
            try await channel.writeAndFlush(LMClientRequest(header: header, payload: payload, reply: nil))
            metrics.stores.increment()
            return true
        } catch {
            return false
        }
    }

    /// The key string stored on the server: `model@1@0@hash@dtype`, with the dtype named as
    /// LMCache names it (`half`, `bfloat16`, `float`), so that LMCache's own server, which parses
    /// every key, accepts it.
    public static func wireKey(_ key: CacheKey) -> String { key.description }

    /// Does nothing: the `lm://` protocol has no delete. Returns `false`.
    @discardableResult
    public func remove(_ key: CacheKey) async -> Bool { false }

    // MARK: Batches and raw values

    /// Whether the server holds each key, asked in one pipelined burst.
    public func contains(_ keys: [CacheKey]) async -> [Bool] {
        await withTaskGroup(of: (Int, Bool).self) { group in
            for (i, key) in keys.enumerated() { group.addTask { (i, await self.contains(key)) } }
            var result = [Bool](repeating: false, count: keys.count)
            for await (i, found) in group { result[i] = found }
            return result
        }
    }

    /// Whether the server answers HEALTH with 200.
    public func isHealthy() async -> Bool {
        guard let channel = await channel(slot: pool.nextSlot()) else { return false }
        let reply = try? await send(.health, key: LMRequestHeader.placeholderKey, on: channel)
        guard let reply else { return false }
        return reply.header.isSuccess
    }

    /// Stores opaque bytes under `key` (benchmarks and tools), described as LMCache describes
    /// binary values (format `BINARY`, dtype `uint8`, shape `[length, 0, 0, 0]`).
    package func putRaw(_ key: String, _ payload: ByteBuffer) async -> Bool {
        guard payload.readableBytes <= options.maximumValueBytes, let channel = await channel(slot: slot(for: key))
        else {
            return false
        }
        let length = Int32(payload.readableBytes)
        let header = LMRequestHeader(
            command: .put,
            key: key,
            length: length,
            format: KVChunkFrame.wireFormat,
            dtype: KVChunkFrame.wireDType,
            shape: LMShape([length])
        )
        do {
            try await channel.writeAndFlush(LMClientRequest(header: header, payload: payload, reply: nil))
            return true
        } catch {
            return false
        }
    }

    /// The opaque bytes under `key` (benchmarks and tools); `nil` on a miss or failure.
    package func getRaw(_ key: String) async -> LMReplyPayload? {
        guard let reply = try? await send(.get, key: key), reply.header.isSuccess else { return nil }
        return reply.payload ?? LMReplyPayload(count: 0)
    }

    // MARK: Connections

    /// The pool slot for `key`: requests for one key always share a connection, so a GET sent
    /// after a PUT of the same key is answered after that PUT was stored.
    package func slot(of key: CacheKey) -> Int { pool.slot(for: Self.wireKey(key)) }

    private func slot(for key: String) -> Int { pool.slot(for: key) }

    private func send(_ command: LMCommand, key: String) async throws -> LMClientReply {
        guard let channel = await channel(slot: slot(for: key)) else { throw LMClientError.backingOff }
        return try await send(command, key: key, on: channel)
    }

    private func send(_ command: LMCommand, key: String, on channel: any Channel) async throws -> LMClientReply {
        let promise = channel.eventLoop.makePromise(of: LMClientReply.self)
        let timeout = channel.eventLoop.scheduleTask(in: TimeAmount(options.requestTimeout)) {
            // A late reply would arrive out of step: drop the connection, failing what waits on it.
            promise.fail(LMClientError.connectionClosed)
            channel.close(promise: nil)
        }
        let request = LMClientRequest(
            header: LMRequestHeader(command: command, key: key),
            payload: ByteBuffer(),
            reply: promise
        )
        // A write on a closed channel never reaches the handler that would fail the reply.
        // (Completing a promise twice is a no-op in NIO, so the handler and these may race.)
        channel.writeAndFlush(request).whenFailure { promise.fail($0) }
        defer { timeout.cancel() }
        return try await promise.futureResult.get()
    }

    /// A connected channel of slot `index`, connecting if need be; `nil` while the server is
    /// unreachable (see ``ConnectionPool``).
    private func channel(slot index: Int) async -> (any Channel)? {
        try? await pool.channel(slot: index) { [self] in try await makeConnection().get() }
    }

    private func makeConnection() -> EventLoopFuture<any Channel> {
        let maximumReply = options.maximumValueBytes
        return SecuredConnection(
            host: host,
            port: port,
            connectTimeout: options.connectTimeout,
            security: options.security,
            token: options.token
        ) { channel in
            try channel.pipeline.syncOperations.addHandler(LMClientHandler(maximumReplyBytes: maximumReply))
        }
        .connect(on: eventLoopGroup)
    }

    /// Closes every connection. Requests after this reconnect.
    public func close() async { await pool.close() }

    private struct TierMetrics: Sendable {
        let hits = Counter(label: "lmcache.storage.hits", dimensions: [("tier", "lm")])
        let misses = Counter(label: "lmcache.storage.misses", dimensions: [("tier", "lm")])
        let stores = Counter(label: "lmcache.storage.stores", dimensions: [("tier", "lm")])
        let corrupt = Counter(label: "lmcache.storage.corrupt", dimensions: [("tier", "lm")])
        let connectFailures = Counter(label: "lmcache.remote.connect_failures", dimensions: [("tier", "lm")])
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
