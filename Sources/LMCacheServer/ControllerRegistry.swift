public import LMCacheWire

/// The controller's map: which instance holds which chunk, and when each was last heard from.
///
/// A value type with no clock of its own (every transition takes `now`), so that
/// ``LMController`` keeps it under a lock and tests drive it directly.
///
/// ```swift
/// var registry = ControllerRegistry(heartbeatTimeout: .seconds(6))
/// registry.register("a", host: "10.0.0.2", port: 8100, now: .now)
/// registry.report("a", admitted: keys, removed: [], now: .now)
/// let answer = registry.lookup(keys, excluding: "b", now: .now)
/// ```
public struct ControllerRegistry: Sendable {
    /// One registered instance.
    public struct Instance: Hashable, Sendable {
        /// Where the instance serves chunks (`port` 0: it serves none and is never a lookup answer).
        public var host: String
        public var port: Int
        /// When it was last heard from.
        public var lastSeen: ContinuousClock.Instant
        /// The chunks it reported holding.
        public var keys: Set<ControllerChunkKey> = []
    }

    /// The answer to a lookup.
    public struct Peer: Hashable, Sendable {
        public var instanceID: String
        public var host: String
        public var port: Int
        /// Leading keys the peer holds.
        public var count: Int

        /// Creates an answer.
        public init(instanceID: String, host: String, port: Int, count: Int) {
            self.instanceID = instanceID
            self.host = host
            self.port = port
            self.count = count
        }
    }

    /// An instance not heard from for this long is dropped.
    public let heartbeatTimeout: Duration
    /// The registered instances by id.
    public private(set) var instances: [String: Instance] = [:]
    private var holders: [ControllerChunkKey: Set<String>] = [:]

    /// Creates an empty registry.
    public init(heartbeatTimeout: Duration) {
        precondition(heartbeatTimeout > .zero, "heartbeatTimeout must be positive")
        self.heartbeatTimeout = heartbeatTimeout
    }

    /// Chunk entries across all instances.
    public var entryCount: Int { instances.values.reduce(0) { $0 + $1.keys.count } }

    /// Registers `id` (again): a new address, and nothing held until it reports.
    public mutating func register(_ id: String, host: String, port: Int, now: ContinuousClock.Instant) {
        drop(id)
        instances[id] = Instance(host: host, port: port, lastSeen: now)
    }

    /// Applies a report; `false` when `id` is not registered.
    /// - Complexity: O(admitted + removed).
    public mutating func report(
        _ id: String,
        admitted: [ControllerChunkKey],
        removed: [ControllerChunkKey],
        now: ContinuousClock.Instant
    ) -> Bool {
        guard var instance = instances.removeValue(forKey: id) else { return false }
        instance.lastSeen = now
        for key in admitted where instance.keys.insert(key).inserted {
            holders[key, default: []].insert(id)
        }
        for key in removed where instance.keys.remove(key) != nil {
            removeHolder(id, of: key)
        }
        instances[id] = instance
        return true
    }

    /// Records a heartbeat; `false` when `id` is not registered.
    public mutating func heartbeat(_ id: String, now: ContinuousClock.Instant) -> Bool {
        guard instances[id] != nil else { return false }
        instances[id]!.lastSeen = now
        return true
    }

    /// Forgets that `id` holds `keys` (a fetch from it found them missing).
    public mutating func forget(_ keys: [ControllerChunkKey], heldBy id: String) {
        guard var instance = instances.removeValue(forKey: id) else { return }
        for key in keys where instance.keys.remove(key) != nil { removeHolder(id, of: key) }
        instances[id] = instance
    }

    /// Removes `id` and everything it held.
    public mutating func drop(_ id: String) {
        guard let instance = instances.removeValue(forKey: id) else { return }
        for key in instance.keys { removeHolder(id, of: key) }
    }

    /// Drops every instance not heard from within ``heartbeatTimeout``; returns their ids.
    public mutating func expire(now: ContinuousClock.Instant) -> [String] {
        let stale = instances.filter { now - $0.value.lastSeen > heartbeatTimeout }.map(\.key).sorted()
        for id in stale { drop(id) }
        return stale
    }

    /// The live serving instance other than `requester` that holds the longest leading run of
    /// `keys` (ties: the one heard from most recently, then the smaller id); `nil` when none holds
    /// the first key.
    /// - Complexity: O(holders of the first key × run length).
    public func lookup(
        _ keys: [ControllerChunkKey],
        excluding requester: String,
        now: ContinuousClock.Instant
    )
        -> Peer?
    {
        guard let first = keys.first, let candidates = holders[first] else { return nil }
        var best: (id: String, instance: Instance, count: Int)?
        for id in candidates where id != requester {
            guard let instance = instances[id], instance.port != 0, now - instance.lastSeen <= heartbeatTimeout
            else { continue }
            var count = 0
            while count < keys.count && instance.keys.contains(keys[count]) { count += 1 }
            if let current = best {
                let better =
                    count > current.count
                    || (count == current.count
                        && (instance.lastSeen > current.instance.lastSeen
                            || (instance.lastSeen == current.instance.lastSeen && id < current.id)))
                guard better else { continue }
            }
            best = (id, instance, count)
        }
        return best.map { Peer(instanceID: $0.id, host: $0.instance.host, port: $0.instance.port, count: $0.count) }
    }

    private mutating func removeHolder(_ id: String, of key: ControllerChunkKey) {
        guard var set = holders[key] else { return }
        set.remove(id)
        holders[key] = set.isEmpty ? nil : set
    }
}
