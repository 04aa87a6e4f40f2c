import Foundation
import LMCacheCore
import LMCacheRemote
import LMCacheTestSupport
import Logging
import Testing

/// The Redis tier when the server closes its connections: misses or errors reported cleanly (a
/// log line, no hang, no wrong bytes), then recovery without help.
@Suite
struct RedisConnectionFaultTests {
    @Test("connections killed by the server (CLIENT KILL) mid-request: a miss and a log line, then recovery")
    func clientKill() async throws {
        try await withRedisServer { server in
            let log = LogRecorder()
            var options = RedisTierTests.options()
            // Far longer than the test takes: a PUT that fails fails because its connection closed.
            options.requestTimeout = .seconds(60)
            let tier = RedisTier(host: "127.0.0.1", port: server.port, options: options, logger: log.logger)
            let chunks = (0..<8).map { RedisTierTests.chunk(40 + $0) }
            for chunk in chunks { #expect(try await tier.put(chunk)) }

            // Writes wait while the server is paused for writes; reads and CLIENT commands do not.
            // A PUT then sits on its connection when the server kills every client connection.
            #expect(try await server.cli(["CLIENT", "PAUSE", "30000", "WRITE"]) == "OK\n")
            let late = RedisTierTests.chunk(60)
            let put = Task { try await tier.put(late) }
            // The PUT is on the wire once a client is blocked (flags=b) in a SET.
            let blocked = await eventually {
                let clients = (try? await server.cli(["CLIENT", "LIST"])) ?? ""
                return clients.split(separator: "\n").contains { $0.contains("flags=b ") && $0.contains("cmd=set ") }
            }
            #expect(blocked)
            let killed = try await server.cli(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
            let killedAt = ContinuousClock.now
            #expect((Int(killed.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 1)
            #expect(try await put.value == false)
            #expect(ContinuousClock.now - killedAt < .seconds(30))
            #expect(log.contains("Redis request failed"))
            #expect(log.contains("connectionClosed"))
            #expect(try await server.cli(["CLIENT", "UNPAUSE"]) == "OK\n")

            // Once the server accepts writes again, the tier reconnects and everything is back.
            #expect(await eventually { (try? await tier.put(late)) == true })
            for chunk in chunks + [late] { #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true) }
            #expect(log.contains("Redis requests succeed again"))
            await tier.close()
        }
    }

    @Test("connections killed between requests, repeatedly, during a workload: hits are exact, then all hit")
    func killsDuringWorkload() async throws {
        try await withRedisServer { server in
            let tier = RedisTierTests.tier(server)
            let chunks = (0..<12).map { RedisTierTests.chunk(70 + $0) }
            for chunk in chunks { #expect(try await tier.put(chunk)) }
            let workload = Task {
                var misses = 0
                for round in 0..<40 {
                    let chunk = chunks[round % chunks.count]
                    if let hit = try await tier.get(chunk.key) {
                        #expect(hit.contentEquals(chunk))
                    } else {
                        misses += 1
                        try await tier.put(chunk)
                    }
                    try await Task.sleep(for: .milliseconds(5))
                }
                return misses
            }
            var kills = 0
            for _ in 0..<5 {
                kills +=
                    Int(
                        try await server.cli(["CLIENT", "KILL", "TYPE", "normal"]).trimmingCharacters(
                            in: .whitespacesAndNewlines
                        )
                    ) ?? 0
                try await Task.sleep(for: .milliseconds(20))
            }
            _ = try await workload.value
            #expect(kills >= 1)
            for chunk in chunks { #expect(try await tier.get(chunk.key)?.contentEquals(chunk) == true) }
            await tier.close()
        }
    }

    @Test("redis-server's own idle timeout closes the tier's connections: the next requests reconnect")
    func serverIdleTimeout() async throws {
        let server = try await RedisServerProcess.started {
            RedisServerProcess(port: RedisServerProcess.freePort(), extraArguments: ["--timeout", "1"])
        }
        defer { server.stop() }
        let tier = RedisTierTests.tier(server)
        let chunk = RedisTierTests.chunk(90)
        // With a one-second idle limit, a test process starved of CPU (CI runs many suites at once)
        // can find even its first connection closed before the handshake: that is a declined put
        // and a log line, and the next put reconnects.
        let stored = await eventually { (try? await tier.put(chunk)) == true }
        #expect(stored)
        // Redis closes clients idle for more than a second (checked about every 100 ms): only
        // the redis-cli asking is left.
        let closed = await eventually {
            (try? await server.cli(["INFO", "clients"]))?.contains("connected_clients:1\r") == true
        }
        #expect(closed)
        let found = await eventually {
            do { return try await tier.get(chunk.key)?.contentEquals(chunk) == true } catch { return false }
        }
        #expect(found)
        await tier.close()
    }
}
