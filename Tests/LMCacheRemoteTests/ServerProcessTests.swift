import Foundation
import LMCacheCore
import LMCacheRemote
import LMCacheTestSupport
import Testing

/// `lmcache_server` as a real, separate process: killed mid-stream and restarted under a tier
/// that lives through both, and stopped gracefully by SIGTERM.
struct ServerProcessTests {
    /// The `lmcache_server` binary next to the test bundle in the build directory.
    static var executable: URL { builtExecutable("lmcache_server") }

    static func freePort() throws -> Int { freeLoopbackPort() }

    static func start(port: Int) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = ["127.0.0.1", "\(port)"]
        process.environment = ["LMCACHE_SERVER_MAX_SIZE": "0.25", "LMCACHE_LOG_LEVEL": "warning"]
        try process.run()
        return process
    }

    @Test("a tier misses while the server process is killed and finds it again after a restart")
    func killAndRestartProcess() async throws {
        let port = try Self.freePort()
        var options = LMServerTierTests.fastOptions()
        options.requestTimeout = .seconds(5)
        let tier = LMServerTier(host: "127.0.0.1", port: port, options: options)
        let chunks = (0..<6).map { LMServerTierTests.chunk(seed: UInt64(100 + $0), tokens: 64) }

        var server = try Self.start(port: port)
        // Listening before the tier's first request: a connection refused while the process starts
        // would leave that connection answering misses for its back-off (as it should), and a put
        // that lands on it would be a miss here.
        #expect(await eventually { RedisServerProcess.canConnect(port: port) })
        #expect(await eventually { await tier.isHealthy() })
        for chunk in chunks { #expect(try await tier.put(chunk)) }
        for chunk in chunks { #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true) }

        // Killed outright in the middle of a stream of reads: misses, no errors, no wrong data.
        let reader = Task {
            var misses = 0
            for _ in 0..<50 {
                for chunk in chunks {
                    if let hit = try await tier.get(chunk.key) {
                        #expect(hit.contentEquals(chunk))
                    } else {
                        misses += 1
                    }
                }
            }
            return misses
        }
        try await Task.sleep(for: .milliseconds(30))
        kill(server.processIdentifier, SIGKILL)
        await server.exited()
        #expect(try await reader.value > 0)
        #expect(try await tier.get(chunks[0].key) == nil)
        #expect(try await tier.put(chunks[0]) == false)

        // Restarted (empty): the same tier reconnects by itself.
        server = try Self.start(port: port)
        #expect(await eventually { (try? await tier.put(chunks[1])) == true })
        #expect(await eventually { (try? await tier.get(chunks[1].key))??.contentEquals(chunks[1]) == true })
        await tier.close()

        // SIGTERM: a graceful shutdown, exit status 0.
        kill(server.processIdentifier, SIGTERM)
        await server.exited()
        #expect(server.terminationReason == .exit && server.terminationStatus == 0)
    }
}
