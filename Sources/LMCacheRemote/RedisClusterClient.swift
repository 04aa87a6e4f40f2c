package import LMCacheWire
package import Logging
package import NIOCore
import NIOPosix
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif

/// A client for Redis Cluster: routes each request to the master that owns its key's slot.
///
/// The slot map comes from `CLUSTER SLOTS`, asked of any known node (the seeds first). A
/// `MOVED` reply updates the map for that slot, refreshes the whole map and retries on the new
/// owner; an `ASK` reply retries once on the named node after `ASKING`. A connection failure
/// refreshes the map (a master may have failed and its replica taken over) and retries once;
/// if that fails too the request fails, and the tier answers a miss. Each node gets its own
/// ``RedisClient`` (pool, timeouts, backoff, AUTH).
package final class RedisClusterClient: Sendable {
    private struct State {
        /// The master address serving each slot; `nil` when unknown.
        var slots = [String?](repeating: nil, count: RedisClusterSlot.count)
        var nodes: [String: RedisClient] = [:]
        var lastRefresh: ContinuousClock.Instant?
    }

    private let seeds: [(host: String, port: Int)]
    private let nodeOptions: RedisClient.Options
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let state = Mutex(State())
    private let onConnectFailure: @Sendable () -> Void
    /// The most redirects one request follows.
    private static let maximumRedirects = 5
    /// The shortest time between two slot-map refreshes.
    private static let refreshInterval: Duration = .milliseconds(100)

    /// Creates the client; it asks for the slot map on first use.
    package init(
        seeds: [(host: String, port: Int)], nodeOptions: RedisClient.Options, eventLoopGroup: (any EventLoopGroup)? = nil,
        logger: Logger, onConnectFailure: @escaping @Sendable () -> Void = {}
    ) {
        precondition(!seeds.isEmpty, "RedisClusterClient needs at least one seed node")
        self.seeds = seeds
        self.nodeOptions = nodeOptions
        self.eventLoopGroup = eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton
        self.logger = logger
        self.onConnectFailure = onConnectFailure
    }

    /// The master address that serves `slot` in the current map, if known.
    package func owner(ofSlot slot: Int) -> String? { state.withLock { $0.slots[slot] } }

    /// Sends `commands`, all about keys in the slot of `key`, to the master that owns that slot,
    /// following redirects. Error replies other than redirects are returned, not thrown.
    /// - Throws: ``RedisClientError`` when no node could answer.
    package func send(_ commands: [RESPCommand], key: String) async throws -> [RESPValue] {
        let slot = RedisClusterSlot.of(key)
        var address = owner(ofSlot: slot)
        if address == nil {
            await refresh(force: true)
            address = owner(ofSlot: slot)
        }
        guard var target = address else { throw RedisClientError(.unreachable, "no cluster node serves slot \(slot)") }
        var asking = false
        var retriedAfterFailure = false
        for _ in 0...Self.maximumRedirects {
            let replies: [RESPValue]
            do {
                replies = try await client(for: target).send(asking ? [RESPCommand("ASKING")] + commands : commands,
                    routingKey: key)
            } catch {
                // The node may have failed over: learn the new map (now, whatever the rate limit: a
                // MOVED seen for another slot just before may have left this one stale) and try its
                // owner once.
                await refresh(force: true)
                guard !retriedAfterFailure, let next = owner(ofSlot: slot), next != target else { throw error }
                retriedAfterFailure = true
                target = next
                asking = false
                continue
            }
            let answers = asking ? Array(replies.dropFirst()) : replies
            guard let redirect = answers.lazy.compactMap({ Self.redirect($0) }).first else { return answers }
            if redirect.moved {
                state.withLock { $0.slots[redirect.slot] = redirect.address }
                await refresh(force: false)
                asking = false
            } else {
                asking = true
            }
            target = redirect.address
        }
        throw RedisClientError(.serverError, "too many redirects for slot \(slot)")
    }

    /// `MOVED slot host:port` or `ASK slot host:port`.
    static func redirect(_ reply: RESPValue) -> (moved: Bool, slot: Int, address: String)? {
        guard let message = reply.errorMessage else { return nil }
        let parts = message.split(separator: " ")
        guard parts.count == 3, parts[0] == "MOVED" || parts[0] == "ASK", let slot = Int(parts[1]),
            (0..<RedisClusterSlot.count).contains(slot), parts[2].contains(":")
        else { return nil }
        return (parts[0] == "MOVED", slot, String(parts[2]))
    }

    /// The client of the node at `address` (`host:port`), created on first use.
    private func client(for address: String) -> RedisClient {
        state.withLock { state in
            if let client = state.nodes[address] { return client }
            let colon = address.lastIndex(of: ":")!
            var host = String(address[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let client = RedisClient(host: host, port: Int(address[address.index(after: colon)...]) ?? 0,
                options: nodeOptions, eventLoopGroup: eventLoopGroup, logger: logger,
                onConnectFailure: onConnectFailure)
            state.nodes[address] = client
            return client
        }
    }

    /// Asks the known nodes, seeds first, for `CLUSTER SLOTS` and takes the first answer.
    /// Without `force`, does nothing when the map was refreshed less than 100 ms ago.
    package func refresh(force: Bool) async {
        let now = ContinuousClock.now
        let candidates: [String]? = state.withLock { state in
            if !force, let last = state.lastRefresh, now - last < Self.refreshInterval { return nil }
            state.lastRefresh = now
            let known = Set(state.slots.compactMap { $0 })
            return seeds.map { Self.address($0.host, $0.port) } + known.sorted().filter { known in
                !seeds.contains { Self.address($0.host, $0.port) == known }
            }
        }
        guard let candidates else { return }
        for address in candidates {
            guard let reply = try? await client(for: address).send(RESPCommand("CLUSTER", "SLOTS")),
                let map = Self.slotMap(reply, askedHost: String(address[..<address.lastIndex(of: ":")!]))
            else { continue }
            state.withLock { $0.slots = map }
            return
        }
        logger.info("no Redis Cluster node answered CLUSTER SLOTS", metadata: ["lmcache.remote": "\(candidates)"])
    }

    static func address(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// The slot map in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id…], replicas…]…]`.
    static func slotMap(_ reply: RESPValue, askedHost: String) -> [String?]? {
        guard case .array(let ranges?) = reply else { return nil }
        var map = [String?](repeating: nil, count: RedisClusterSlot.count)
        for range in ranges {
            guard case .array(let fields?) = range, fields.count >= 3,
                case .integer(let start) = fields[0], case .integer(let end) = fields[1],
                0 <= start, start <= end, end < RedisClusterSlot.count,
                case .array(let master?) = fields[2], master.count >= 2,
                let host = master[0].string, case .integer(let port) = master[1], (1...65535).contains(port)
            else { return nil }
            // An empty host (or "?") means "the node you asked".
            let address = Self.address(host.isEmpty || host == "?" ? askedHost : host, Int(port))
            for slot in Int(start)...Int(end) { map[slot] = address }
        }
        return map
    }

    /// Closes every node's connections.
    package func close() async {
        let clients = state.withLock { Array($0.nodes.values) }
        for client in clients { await client.close() }
    }
}
