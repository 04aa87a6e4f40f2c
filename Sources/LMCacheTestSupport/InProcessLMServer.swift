package import LMCacheServer
import Logging
import ServiceLifecycle

/// Runs an in-process server on a free loopback port for the duration of `body`.
package func withServer<R: Sendable>(
    _ configuration: LMServerConfiguration = LMServerConfiguration(host: "127.0.0.1", port: 0, capacityBytes: 64 << 20),
    _ body: @Sendable (LMServer, Int) async throws -> R
) async throws -> R {
    var configuration = configuration
    configuration.host = "127.0.0.1"
    let server = LMServer(configuration: configuration, logger: Logger(label: "test.server"))
    // Stopped by a graceful shutdown, as the executables stop it on SIGTERM.
    let services = ServiceGroup(services: [server], logger: Logger(label: "test.services"))
    return try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask {
            try await services.run()
            return nil
        }
        let port = try await server.listeningPort()
        let result: R
        do {
            result = try await body(server, port)
        } catch {
            await services.triggerGracefulShutdown()
            throw error
        }
        await services.triggerGracefulShutdown()
        while try await group.next() != nil {}
        return result
    }
}
