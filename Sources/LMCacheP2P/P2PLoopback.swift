public import LMCacheCore
public import LMCacheServer
public import LMCacheStorage
import LMCacheWire
public import Logging
public import ServiceLifecycle

/// A controller and one serving peer in this process, on loopback: the P2P tier for benchmarks
/// and tools that compare tiers in one process (`lmcache bench … --tier p2p`).
///
/// The peer serves `source`; the P2P tier handed to `body` fetches from it, so a second storage
/// manager built as `StorageManager(cpu: otherCPU, slowerTiers: [tier])` sees the chunks stored
/// in `source` as P2P hits, over real sockets and the same code paths as between processes.
///
/// ```swift
/// try await P2PLoopback.run(serving: managerA.cpu!) { loopback in
///     let managerB = StorageManager(cpu: cpuB, slowerTiers: [loopback.tier])
///     // compute on A, then:
///     await loopback.waitUntilReported(chunks: count)
///     // ask B: a P2P hit
/// }
/// ```
public struct P2PLoopback: Sendable {
    /// The P2P tier of the asking instance.
    public let tier: P2PTier
    /// The controller.
    public let controller: LMController
    private let peerID: String

    /// Starts a controller and a peer serving `source`, runs `body`, and stops both.
    public static func run<R: Sendable>(
        serving source: LocalCPUTier,
        logger: Logger = Logger(label: "lmcache.p2p.loopback"),
        _ body: (P2PLoopback) async throws -> R
    ) async throws -> R {
        let controller = LMController(configuration: .init(host: "127.0.0.1", port: 0), logger: logger)
        return try await withRunningServices([controller], logger: logger) {
            let port = try await controller.listeningPort()
            let server = LMServer(
                configuration: LMServerConfiguration(host: "127.0.0.1", port: 0, capacityBytes: 1 << 20),
                fallback: PeerChunkSource(cpu: source),
                logger: logger
            )
            var options = P2PAgent.Options()
            options.reportInterval = .milliseconds(20)
            let agent = P2PAgent(
                instanceID: "loopback-peer",
                cpu: source,
                controller: ControllerClient(host: "127.0.0.1", port: port, logger: logger),
                advertisedHost: "127.0.0.1",
                options: options,
                logger: logger
            ) { try await server.listeningPort() }
            let tier = P2PTier(
                instanceID: "loopback-asker",
                controller: ControllerClient(host: "127.0.0.1", port: port, logger: logger),
                logger: logger
            )
            let loopback = P2PLoopback(tier: tier, controller: controller, peerID: "loopback-peer")
            return try await withRunningServices([server, agent], logger: logger) {
                let result = try await body(loopback)
                await tier.close()
                return result
            }
        }
    }

    /// Waits until the controller knows that the peer holds at least `chunks` chunks (reports
    /// follow stores by a few milliseconds), or `timeout` passes; returns whether it does.
    public func waitUntilReported(chunks: Int, timeout: Duration = .seconds(10)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if (controller.snapshot.instances[peerID]?.keys.count ?? 0) >= chunks { return true }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return false
    }
}

/// Runs `services` in a service group while `body` runs, then shuts them down gracefully (also
/// when `body` throws) and waits for them to stop.
public func withRunningServices<R: Sendable>(
    _ services: [any Service],
    logger: Logger,
    _ body: () async throws -> R
) async throws -> R {
    guard !services.isEmpty else { return try await body() }
    let group = ServiceGroup(services: services, logger: logger)
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        let result: R
        do {
            result = try await body()
        } catch {
            await group.triggerGracefulShutdown()
            throw error
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
        return result
    }
}
