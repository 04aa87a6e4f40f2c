import Foundation
import Inference
import LMCacheConnector
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import OpenAIServer
import Testing
import Tokenizers


/// Requests whose clients go away, and shutdowns under load, over real sockets with the real model.
///
/// Bounds are generous (a loaded 2-core machine in debug builds): what they tell apart is seconds
/// against the minutes that an abandoned 20 000-token generation would run for.
@Suite("Cancellation: clients that go away, and shutdown", .serialized)
struct CancellationTests {
    /// A long generation: minutes of decoding unless something stops it.
    static var long: [String: Any] { ["prompt": "Once upon a time", "max_tokens": 20_000, "temperature": 0] }

    @Test(
        "a client that closes its connection mid-generation frees the engine, streamed or not",
        arguments: [false, true]
    )
    func disconnectFreesEngine(stream: Bool) async throws {
        let prepared = try TestModel.engine(cache: true)
        let engine = prepared.0
        try await withLiveServer(engine: prepared) { client in
            let port = try #require(client.base.port)
            var body = Self.long
            body["stream"] = stream
            let connection = try RawConnection(port: port)
            try connection.send(post: "/v1/completions", json: body)
            // Running, with some tokens decoded (the first event of a stream).
            try await waitUntil(seconds: 120) { engine.load.running == 1 }
            if stream { _ = try connection.read(until: "\"text\"") }
            try await Task.sleep(for: .seconds(1))
            connection.close()

            try await waitUntil(seconds: 30, "the abandoned generation still runs") {
                engine.load.running == 0 && engine.load.waiting == 0
            }
            #expect(engine.cancelledRequests == 1)
            let next = try await client.post(
                "/v1/completions",
                json: ["prompt": "Hello", "max_tokens": 2, "temperature": 0]
            )
            #expect(next.status == 200)
            let metrics = String(decoding: try await client.get("/metrics").body, as: UTF8.self)
            #expect(metrics.contains("lmcache_client_disconnects_total 1"))
            #expect(metrics.contains("lmcache_requests_running 0"))
            #expect(metrics.contains("lmcache_engine_requests_cancelled_total 1"))
        }
    }

    @Test("a waiting request whose client goes away leaves the queue; the running one is untouched")
    func disconnectWhileWaiting() async throws {
        let engine = try TestModel.oneSequenceEngine()
        try await withLiveServer(engine: (engine, nil)) { client in
            let port = try #require(client.base.port)
            let running = try RawConnection(port: port)
            try running.send(post: "/v1/completions", json: Self.long)
            try await waitUntil(seconds: 120) { engine.load.running == 1 }
            let waiting = try RawConnection(port: port)
            try waiting.send(post: "/v1/chat/completions", json: [
                "messages": [["role": "user", "content": "Hi"]], "max_tokens": 20_000,
            ])
            try await waitUntil(seconds: 30) { engine.load.waiting == 1 }
            waiting.close()
            try await waitUntil(seconds: 30, "the abandoned request still waits") { engine.load.waiting == 0 }
            #expect(engine.load.running == 1)
            #expect(engine.cancelledRequests == 1)
            running.close()
            try await waitUntil(seconds: 30, "the abandoned generation still runs") { engine.load.running == 0 }
            #expect(engine.cancelledRequests == 2)
        }
    }

    @Test("requests that follow each other on one keep-alive connection are all served")
    func keepAlive() async throws {
        try await withLiveServer { client in
            let connection = try RawConnection(port: try #require(client.base.port))
            defer { connection.close() }
            for (index, path) in ["/v1/completions", "/v1/chat/completions", "/v1/completions"].enumerated() {
                let body: [String: Any] =
                    path == "/v1/completions"
                    ? ["prompt": "Hello number \(index)", "max_tokens": 3, "temperature": 0]
                    : ["messages": [["role": "user", "content": "Hi"]], "max_tokens": 3, "temperature": 0]
                try connection.send(post: path, json: body)
                let response = try connection.readResponse()
                #expect(response.status == 200, "request \(index): \(response.body)")
                #expect(response.body.contains("\"usage\""))
            }
        }
    }

    @Test("shutdown under load: the grace period, then running and waiting requests get 503, within the bound")
    func shutdownUnderLoad() async throws {
        let (model, tokenizer) = try TestModel.shared.get()
        let cache = try TestModel.cache()
        // Two run and one waits.
        let engine = GenerationEngine(
            model: model, tokenizer: tokenizer, connector: cache.connector, limits: SchedulerLimits(maxSequences: 2))
        let server = OpenAIServer(
            engine: engine,
            storage: cache.storage,
            configuration: .init(port: 0, modelName: "gemma-3-270m", shutdownGrace: .seconds(1))
        )
        let trigger = ShutdownTrigger()
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let serving = Task { try await server.run(signals: [], shutdown: trigger) { portContinuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())

        let connections = try (0..<3).map { _ in try RawConnection(port: port) }
        defer { for connection in connections { connection.close() } }
        try connections[0].send(post: "/v1/completions", json: Self.long)
        var streamed = Self.long
        streamed["stream"] = true
        try connections[1].send(post: "/v1/completions", json: streamed)
        try await waitUntil(seconds: 120) { engine.load.running == 2 }
        try connections[2].send(post: "/v1/completions", json: Self.long)
        try await waitUntil(seconds: 30) { engine.load.waiting == 1 }

        let start = ContinuousClock.now
        trigger.fire()
        try await serving.value
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < server.shutdownBound, "the shutdown took \(elapsed)")
        // Not the hard stop: the cancelled requests ended long before it.
        #expect(elapsed < .seconds(1) + OpenAIServer.abortTimeout, "the shutdown took \(elapsed)")
        #expect(engine.load.running == 0 && engine.load.waiting == 0)
        #expect(engine.cancelledRequests == 3)
        #expect(engine.isStopped)

        let running = try connections[0].readResponse()
        #expect(running.status == 503)
        #expect(running.body.contains("shutting_down"))
        let stream = try connections[1].read(until: "[DONE]")
        #expect(stream.contains("shutting_down"))
        #expect(try connections[2].readResponse().status == 503)
        // The server no longer accepts connections.
        #expect(throws: (any Error).self) {
            let late = try RawConnection(port: port)
            try late.send(post: "/v1/completions", json: ["prompt": "Hi", "max_tokens": 1])
            _ = try late.readResponse()
        }
    }

    @Test("a shutdown with nothing running ends at once, without waiting for the grace period")
    func idleShutdown() async throws {
        let (engine, storage) = try TestModel.engine(cache: true)
        let server = OpenAIServer(
            engine: engine,
            storage: storage,
            configuration: .init(port: 0, modelName: "gemma-3-270m", shutdownGrace: .seconds(60))
        )
        let trigger = ShutdownTrigger()
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let serving = Task { try await server.run(signals: [], shutdown: trigger) { portContinuation.yield($0) } }
        var iterator = ports.makeAsyncIterator()
        let port = try #require(await iterator.next())
        let client = HTTPClient(base: URL(string: "http://127.0.0.1:\(port)")!)
        #expect(try await client.post("/v1/completions", json: ["prompt": "Hi", "max_tokens": 2]).status == 200)
        let start = ContinuousClock.now
        trigger.fire()
        try await serving.value
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < .seconds(30), "the shutdown took \(elapsed)")
    }

    @Test("cancelAll stops running and waiting generations, and later ones throw")
    func engineCancelAll() async throws {
        let engine = try TestModel.oneSequenceEngine()
        let request = GenerationRequest(prompt: engine.tokenizer.encode("Once upon a time"), maxTokens: 20_000)
        let running = Task { try await engine.generate(request) }
        try await waitUntil(seconds: 120) { engine.load.running == 1 }
        let waiting = Task { try await engine.generate(request) }
        try await waitUntil(seconds: 30) { engine.load.waiting == 1 }
        engine.cancelAll()
        let result = try await running.value
        #expect(result.tokens.count < 20_000)
        await #expect(throws: CancellationError.self) { try await waiting.value }
        #expect(engine.load.running == 0 && engine.load.waiting == 0)
        #expect(engine.cancelledRequests == 2)
        await #expect(throws: InferenceError.self) { try await engine.generate(request) }
    }
}

/// Polls `condition` every 50 ms; fails after `seconds`.
func waitUntil(
    seconds: Double,
    _ what: String = "the condition never held",
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while !condition() {
        guard ContinuousClock.now < deadline else { throw HTTPClient.Failure(message: "\(what) after \(seconds) s") }
        try await Task.sleep(for: .milliseconds(50))
    }
}
