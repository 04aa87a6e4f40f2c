public import LMCacheCore
public import LMCacheStorage
import LMCacheWire
public import Logging
public import ServiceLifecycle
import Synchronization

/// An instance's side of the controller protocol, as a `Service`: it registers the instance,
/// reports the chunks its CPU tier admits and evicts, and sends heartbeats.
///
/// Changes are collected from the tier's change observer and sent in one report per
/// ``Options/reportInterval``. Whenever the controller does not know the instance (it restarted,
/// or dropped the instance after missed heartbeats), or the connection to it failed, the agent
/// registers again and reports everything the tier holds, so the controller's map is rebuilt from
/// the instances themselves. On graceful shutdown it deregisters.
///
/// ```swift
/// let agent = P2PAgent(instanceID: "a", cpu: cpu, controller: client, advertisedHost: "10.0.0.2") {
///     try await peerServer.listeningPort()
/// }
/// ```
public final class P2PAgent: Service {
    /// Timing settings.
    public struct Options: Sendable {
        /// Time between heartbeats. Default 2 s (the controller's default timeout is 10 s).
        public var heartbeatInterval: Duration = .seconds(2)
        /// Time between reports of admitted and evicted chunks. Default 100 ms.
        public var reportInterval: Duration = .milliseconds(100)

        /// The defaults.
        public init() {}
    }

    /// This instance's id.
    public let instanceID: String
    private let cpu: LocalCPUTier
    private let controller: ControllerClient
    private let advertisedHost: String
    private let servingPort: @Sendable () async throws -> Int
    private let options: Options
    private let logger: Logger
    private let pending = Mutex(Changes())
    private let registrations = Atomic<Int>(0)

    /// Keys admitted and removed since the last report.
    struct Changes {
        var admitted: Set<CacheKey> = []
        var removed: Set<CacheKey> = []

        mutating func apply(admitted new: [CacheKey], removed gone: [CacheKey]) {
            for key in gone {
                admitted.remove(key)
                removed.insert(key)
            }
            for key in new {
                removed.remove(key)
                admitted.insert(key)
            }
        }
    }

    /// Creates the agent.
    /// - Parameters:
    ///   - instanceID: The instance's id among peers (`lmcache_instance_id`).
    ///   - cpu: The tier whose chunks the instance serves.
    ///   - controller: The controller's client.
    ///   - advertisedHost: The address peers reach the chunk server at (`p2p_host`).
    ///   - options: Timing.
    ///   - servingPort: The chunk server's port once it listens; 0 when the instance serves none.
    public init(
        instanceID: String,
        cpu: LocalCPUTier,
        controller: ControllerClient,
        advertisedHost: String,
        options: Options = Options(),
        logger: Logger = Logger(label: "lmcache.p2p"),
        servingPort: @escaping @Sendable () async throws -> Int
    ) {
        self.instanceID = instanceID
        self.cpu = cpu
        self.controller = controller
        self.advertisedHost = advertisedHost
        self.options = options
        self.logger = logger
        self.servingPort = servingPort
    }

    /// How many times the agent has registered (the first time and after each controller loss).
    public var registrationCount: Int { registrations.load(ordering: .relaxed) }

    /// Registers, reports and heartbeats until a graceful shutdown or cancellation.
    public func run() async throws {
        let port = try await servingPort()
        // The tier holds the agent until the observer is removed, below.
        cpu.observeChanges { admitted, removed in
            self.pending.withLock { $0.apply(admitted: admitted, removed: removed) }
        }
        defer { cpu.observeChanges(nil) }
        let registered = await cancelWhenGracefulShutdown { await self.loop(port: port) }
        if registered {
            _ = try? await controller.send(.deregister(instanceID: instanceID))
        }
        await controller.close()
    }

    /// Registers, reports and heartbeats until cancelled; returns whether it ended registered.
    private func loop(port: Int) async -> Bool {
        var registered = false
        var lastHeartbeat = ContinuousClock.now
        while !Task.isCancelled {
            if !registered {
                registered = await register(port: port)
                lastHeartbeat = .now
            } else {
                registered = await reportChanges()
                if registered && ContinuousClock.now - lastHeartbeat >= options.heartbeatInterval {
                    registered = await heartbeat()
                    lastHeartbeat = .now
                }
            }
            try? await Task.sleep(for: options.reportInterval)
        }
        return registered
    }

    /// Registers and reports every key held; `false` when the controller could not be reached.
    private func register(port: Int) async -> Bool {
        do {
            let reply = try await controller.send(
                .register(instanceID: instanceID, host: advertisedHost, port: port)
            )
            guard reply == .ok else {
                logger.info("controller refused the registration", metadata: ["lmcache.reply": "\(reply)"])
                return false
            }
            // Changes from before this point are in the snapshot (or no longer true).
            pending.withLock { $0 = Changes() }
            let keys = cpu.keys
            var start = 0
            repeat {
                let batch = keys[start..<min(start + ControllerMessage.maximumKeys, keys.count)]
                let answer = try await controller.send(
                    .report(instanceID: instanceID, admitted: batch.map(P2PTier.controllerKey), removed: [])
                )
                guard answer == .ok else { return false }
                start += batch.count
            } while start < keys.count
            let count = registrations.add(1, ordering: .relaxed).newValue
            logger.info(
                count == 1 ? "registered with the controller" : "registered with the controller again",
                metadata: [
                    "lmcache.instance": "\(instanceID)",
                    "lmcache.address": "\(advertisedHost):\(port)",
                    "lmcache.chunks": "\(keys.count)",
                ]
            )
            return true
        } catch {
            logger.debug("controller unreachable; will register again", metadata: ["lmcache.error": "\(error)"])
            return false
        }
    }

    /// Sends the changes since the last report; `false` when the instance must register again.
    private func reportChanges() async -> Bool {
        let changes = pending.withLock { changes in
            defer { changes = Changes() }
            return changes
        }
        guard !changes.admitted.isEmpty || !changes.removed.isEmpty else { return true }
        let admitted = changes.admitted.map(P2PTier.controllerKey)
        let removed = changes.removed.map(P2PTier.controllerKey)
        do {
            var start = 0
            while start < max(admitted.count, removed.count) {
                let end = start + ControllerMessage.maximumKeys / 2
                let reply = try await controller.send(
                    .report(
                        instanceID: instanceID,
                        admitted: Array(admitted[min(start, admitted.count)..<min(end, admitted.count)]),
                        removed: Array(removed[min(start, removed.count)..<min(end, removed.count)])
                    )
                )
                guard reply == .ok else { return false }
                start = end
            }
            return true
        } catch {
            // The next registration reports everything held, these changes included.
            return false
        }
    }

    private func heartbeat() async -> Bool {
        (try? await controller.send(.heartbeat(instanceID: instanceID))) == .ok
    }
}
