import Foundation
import LMCacheTestSupport
import Testing

/// `lmcache serve` stopped by a real SIGTERM while it generates for clients.
@Suite("lmcache serve: SIGTERM under load")
struct ServeShutdownTests {
    @Test("SIGTERM with two long requests running: they get 503 after --shutdown-grace, and the process exits in bound")
    func sigtermUnderLoad() async throws {
        let server = try ServeProcess(
            "lmcache",
            [
                "serve", try TestModel.requirePath(), "--host", "127.0.0.1", "--port", "0",
                "--shutdown-grace", "1", "--set", "max_local_cpu_size=0.25",
            ],
            portMarker: "http://127.0.0.1:"
        )
        defer { server.stop() }
        try await server.waitUntilServing()
        let url = server.base.appending(path: "v1/completions")
        let requests = (0..<2).map { _ in
            Task { () -> (status: Int, code: String?) in
                let (status, body) = try await HTTP.post(url, json: ["prompt": "Once upon a time", "max_tokens": 20_000])
                return (status, (body["error"] as? [String: Any])?["code"] as? String)
            }
        }
        let deadline = ContinuousClock.now + .seconds(120)
        while try await HTTP.metric(server.base, "lmcache_engine_sequences_running") < 2 {
            guard ContinuousClock.now < deadline else { throw Failure("the requests never ran: \(server.output)") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let start = ContinuousClock.now
        kill(server.process.processIdentifier, SIGTERM)
        // Grace 1 s + at most 10 s for the cancelled requests + 2 s of flush; far less in practice.
        let bound = ContinuousClock.now + .seconds(13)
        while server.process.isRunning && ContinuousClock.now < bound {
            try await Task.sleep(for: .milliseconds(50))
        }
        let elapsed = ContinuousClock.now - start
        #expect(!server.process.isRunning, "still running \(elapsed) after SIGTERM: \(server.output)")
        #expect(elapsed >= .seconds(1), "the grace period was not given")
        server.process.waitUntilExit()
        #expect(server.process.terminationStatus == 0, "\(server.output)")
        for request in requests {
            let (status, code) = try await request.value
            #expect(status == 503)
            #expect(code == "shutting_down")
        }
    }
}
