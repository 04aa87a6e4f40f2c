import Foundation
import Inference
import LMCacheTestSupport
import OpenAIServer
import Testing

/// The `error` object of an error reply.
func errorDetail(_ reply: HTTPClient.Reply) throws -> [String: Any] {
    let text = String(decoding: reply.body, as: UTF8.self)
    return try #require(try reply.json()["error"] as? [String: Any], "not an error: \(text)")
}

/// Runs `body`, failing after `seconds` instead of waiting for it (a behaviour that is missing would
/// otherwise show as a generation that runs for minutes).
func within<T: Sendable>(
    seconds: Double,
    _ what: String,
    _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let result = try await group.next(), let value = result else {
            throw HTTPClient.Failure(message: "\(what): no answer within \(seconds) s")
        }
        return value
    }
}

/// Request validation as OpenAI and vLLM do it: every field of the wrong type or out of range is a 400 that
/// names it, requests for what is not computed are refused rather than ignored, a request without
/// `max_tokens` is bounded, and the server bounds its queue and (optionally) each request's time.
@Suite("Request validation, default length, queue bound and request timeout")
struct ValidationTests {
    static var user: [[String: Any]] { [["role": "user", "content": "Hi"]] }

    /// (route, body, the field the error must name, words its message must contain)
    static let refused: [(String, String, String?, String)] = [
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}, {"role": "alien", "content": "x"}]}"#,
         "messages[1].role", "alien"),
        ("chat/completions", #"{"messages": [{"role": 3, "content": "Hi"}]}"#, "messages[0].role", "must be a string"),
        ("chat/completions", #"{"messages": [{"content": "Hi"}]}"#, "messages[0].role", "is required"),
        ("chat/completions", #"{"messages": "Hi"}"#, "messages", "must be an array"),
        ("chat/completions", #"{"messages": [3]}"#, "messages[0]", "must be an object"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": 3}]}"#, "messages[0].content", "string"),
        ("chat/completions",
         #"{"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "image_url"}]}]}"#,
         "messages[0].content[1]", "image_url"),
        ("completions", #"{"prompt": "Hi", "max_tokens": 1e308}"#, "max_tokens", "integer between 1 and 64"),
        ("completions", #"{"prompt": "Hi", "max_tokens": 2.5}"#, "max_tokens", "integer between 1 and 64"),
        ("completions", #"{"prompt": "Hi", "max_tokens": 0}"#, "max_tokens", "integer between 1 and 64"),
        ("completions", #"{"prompt": "Hi", "max_tokens": 65}"#, "max_tokens", "integer between 1 and 64"),
        ("completions", #"{"prompt": "Hi", "max_tokens": "8"}"#, "max_tokens", "must be an integer"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": -1}"#,
         "max_completion_tokens", "integer between 1 and 64"),
        // Fits the limit alone, not with the prompt: as vLLM does, refused rather than cut short.
        ("completions", #"{"prompt": "Hello there, how are you today?", "max_tokens": 60}"#, "max_tokens",
         "maximum context length is 64"),
        ("completions", #"{"prompt": "Hi", "seed": -99999999999999999999}"#, "seed", "integer between"),
        ("completions", #"{"prompt": "Hi", "seed": 1.5}"#, "seed", "integer between"),
        ("completions", #"{"prompt": "Hi", "seed": "x"}"#, "seed", "must be an integer"),
        ("completions", #"{"prompt": "Hi", "temperature": 1e308}"#, "temperature", "between 0 and 2"),
        ("completions", #"{"prompt": "Hi", "temperature": "hot"}"#, "temperature", "must be a number"),
        ("completions", #"{"prompt": "Hi", "top_p": 0}"#, "top_p", "top_p"),
        ("completions", #"{"prompt": "Hi", "top_k": -5}"#, "top_k", "top_k"),
        ("completions", #"{"prompt": "Hi", "n": 2}"#, "n", "n = 1"),
        ("completions", #"{"prompt": "Hi", "stream": "yes"}"#, "stream", "must be a boolean"),
        ("completions", #"{"prompt": "Hi", "stop": 3}"#, "stop", "a string or an array of strings"),
        ("completions", #"{"prompt": "Hi", "stop": ["a", 3]}"#, "stop[1]", "must be a string"),
        ("completions", #"{"prompt": 3}"#, "prompt", "a string or an array of strings"),
        ("completions", #"{"max_tokens": 3}"#, "prompt", "is required"),
        ("completions", #"{"prompt": "Hi", "stream_options": {"include_usage": 1}}"#, "stream_options.include_usage",
         "must be a boolean"),
        // Log probabilities are not computed: asked for, they are refused (0 asks for the chosen token's).
        ("completions", #"{"prompt": "Hi", "logprobs": 5}"#, "logprobs", "not supported"),
        ("completions", #"{"prompt": "Hi", "logprobs": 0}"#, "logprobs", "not supported"),
        ("completions", #"{"prompt": "Hi", "logprobs": "all"}"#, "logprobs", "must be an integer"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "logprobs": true}"#, "logprobs",
         "not supported"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2}"#, "top_logprobs",
         "not supported"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 21}"#,
         "top_logprobs", "between 0 and 20"),
        // Fields that would change the output and are not implemented: refused unless neutral.
        ("completions", #"{"prompt": "Hi", "presence_penalty": 0.5}"#, "presence_penalty", "not supported"),
        ("completions", #"{"prompt": "Hi", "frequency_penalty": -1}"#, "frequency_penalty", "not supported"),
        ("completions", #"{"prompt": "Hi", "frequency_penalty": false}"#, "frequency_penalty", "not supported"),
        ("completions", #"{"prompt": "Hi", "logit_bias": {"42": 5}}"#, "logit_bias", "not supported"),
        ("completions", #"{"prompt": "Hi", "best_of": 2}"#, "best_of", "not supported"),
        ("completions", #"{"prompt": "Hi", "echo": true}"#, "echo", "not supported"),
        ("completions", #"{"prompt": "Hi", "suffix": "end"}"#, "suffix", "not supported"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function"}]}"#,
         "tools", "not supported"),
        ("chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "tool_choice": "auto"}"#,
         "tool_choice", "not supported"),
        ("chat/completions",
         #"{"messages": [{"role": "user", "content": "Hi"}], "response_format": {"type": "json_object"}}"#,
         "response_format", "not supported"),
        // Not a JSON object, or not JSON at all.
        ("completions", #"["Hi"]"#, nil, "JSON object"),
        ("completions", #"{"prompt": "#, nil, "malformed JSON"),
    ]

    @Test("a field of the wrong type or out of range gets a 400 that names it; malformed JSON only for non-JSON")
    func fieldsNamed() async throws {
        try await withLiveServer(maxModelLength: 64) { client in
            for (route, body, field, words) in Self.refused {
                let reply = try await client.post("/v1/" + route, body: Data(body.utf8))
                #expect(reply.status == 400, "\(body)")
                let error = try errorDetail(reply)
                let message = error["message"] as? String ?? ""
                #expect(error["type"] as? String == "invalid_request_error", "\(body)")
                #expect(error["param"] as? String == field, "\(body): \(message)")
                #expect(message.contains(words), "\(body): \(message)")
                if field != nil { #expect(!message.contains("malformed"), "\(body): \(message)") }
            }
            // What is valid passes: a negative seed (vLLM's range), the developer role, logprobs off.
            let accepted: [(String, [String: Any])] = [
                ("completions", ["prompt": "Hi", "max_tokens": 1, "seed": -1, "logprobs": NSNull()]),
                ("completions", ["prompt": "Hi", "max_tokens": 1, "seed": UInt64.max]),
                ("chat/completions", [
                    "messages": [["role": "developer", "content": "Be brief."], ["role": "user", "content": "Hi"]],
                    "max_completion_tokens": 1, "logprobs": false, "top_logprobs": 0,
                ]),
                // Unsupported fields at their neutral values ask for nothing.
                ("chat/completions", [
                    "messages": [["role": "user", "content": "Hi"]], "max_tokens": 1, "presence_penalty": 0,
                    "frequency_penalty": 0.0, "logit_bias": [String: Any](), "tools": [Any](), "tool_choice": "none",
                    "response_format": ["type": "text"], "repetition_penalty": 1,
                ]),
                ("completions", ["prompt": "Hi", "max_tokens": 1, "best_of": 1, "echo": false, "suffix": NSNull()]),
            ]
            for (route, body) in accepted {
                let reply = try await client.post("/v1/" + route, json: body)
                #expect(reply.status == 200, "\(body): \(String(decoding: reply.body, as: UTF8.self))")
            }
        }
    }

    @Test("a request without max_tokens generates at most the server's default; an explicit one is not capped")
    func defaultLength() async throws {
        // A short context, so that without the default a chat request ends soon anyway, at the context.
        try await withLiveServer(maxModelLength: 128, configure: { $0.maxTokensDefault = 5 }) { client in
            let prompt = "Count: one, two, three, four, five, six,"
            func completionTokens(_ route: String, _ body: [String: Any]) async throws -> Int? {
                let reply = try await client.post("/v1/" + route, json: body)
                #expect(reply.status == 200)
                return (try reply.json()["usage"] as? [String: Any])?["completion_tokens"] as? Int
            }
            // Without the default, a chat request would generate to the end of the context.
            #expect(try await completionTokens("chat/completions", ["messages": Self.user, "temperature": 0]) == 5)
            #expect(try await completionTokens("completions", ["prompt": prompt, "temperature": 0]) == 5)
            let explicit: [String: Any] = ["prompt": prompt, "max_tokens": 9, "temperature": 0]
            #expect(try await completionTokens("completions", explicit) == 9)
            var streamed: [String: Any] = ["messages": Self.user, "temperature": 0, "stream": true]
            streamed["stream_options"] = ["include_usage": true]
            let objects = try streamedObjects(try await client.post("/v1/chat/completions", json: streamed))
            let usage = try #require(objects.last?["usage"] as? [String: Any])
            #expect(usage["completion_tokens"] as? Int == 5)
        }
        // Text completions keep OpenAI's default of 16 under a larger server default.
        try await withLiveServer(configure: { $0.maxTokensDefault = 100 }) { client in
            let reply = try await client.post(
                "/v1/completions", json: ["prompt": "Count: one, two, three, four, five, six,", "temperature": 0])
            #expect((try reply.json()["usage"] as? [String: Any])?["completion_tokens"] as? Int == 16)
        }
    }

    @Test("a full server answers 503 with Retry-After at once, streamed or not, and admits again once places free")
    func queueBound() async throws {
        let engine = try TestModel.oneSequenceEngine()
        try await withLiveServer(engine: (engine, nil), configure: { $0.maxQueuedRequests = 1 }) { client in
            let port = try #require(client.base.port)
            let running = try RawConnection(port: port)
            defer { running.close() }
            try running.send(post: "/v1/completions", json: CancellationTests.long)
            try await waitUntil(seconds: 120) { engine.load.running == 1 }
            let waiting = try RawConnection(port: port)
            defer { waiting.close() }
            try waiting.send(post: "/v1/chat/completions", json: ["messages": Self.user, "max_tokens": 20_000])
            try await waitUntil(seconds: 30) { engine.load.waiting == 1 }

            for stream in [false, true] {
                let request: [String: Any] = ["prompt": "Hi", "max_tokens": 2, "stream": stream]
                let body = try JSONSerialization.data(withJSONObject: request)
                let reply = try await within(seconds: 60, "a request to a full server") {
                    try await client.post("/v1/completions", body: body)
                }
                #expect(reply.status == 503)
                #expect(reply.retryAfter == "1")
                let error = try errorDetail(reply)
                #expect(error["code"] as? String == "queue_full")
                #expect(error["type"] as? String == "server_error")
            }
            #expect(engine.load.waiting == 1)
            let metrics = String(decoding: try await client.get("/metrics").body, as: UTF8.self)
            #expect(metrics.contains("lmcache_requests_running 2"))
            #expect(metrics.contains("lmcache_http_requests_total{endpoint=\"completions\",status=\"503\"} 2"))

            // The places are given back when their requests end.
            running.close()
            waiting.close()
            try await waitUntil(seconds: 30, "the abandoned requests still hold the engine") {
                engine.load.running == 0 && engine.load.waiting == 0
            }
            // The engine lets go first; the server's place is given back when the request's handler ends.
            let deadline = ContinuousClock.now + .seconds(30)
            while !String(decoding: try await client.get("/metrics").body, as: UTF8.self)
                .contains("lmcache_requests_running 0")
            {
                guard ContinuousClock.now < deadline else {
                    Issue.record("the abandoned requests' places were never given back")
                    return
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let next = try await client.post("/v1/completions", json: ["prompt": "Hi", "max_tokens": 2])
            #expect(next.status == 200)
            let after = String(decoding: try await client.get("/metrics").body, as: UTF8.self)
            #expect(after.contains("lmcache_requests_running 0"))
        }
    }

    @Test("a request past the request timeout is cancelled: 504, or an error event ending its stream")
    func requestTimeout() async throws {
        let prepared = try TestModel.engine(cache: false)
        let engine = prepared.0
        try await withLiveServer(engine: prepared, configure: { $0.requestTimeout = .seconds(1) }) { client in
            let started = ContinuousClock.now
            let long = try JSONSerialization.data(withJSONObject: CancellationTests.long)
            let reply = try await within(seconds: 60, "a long request under a 1 s timeout") {
                try await client.post("/v1/completions", body: long)
            }
            #expect(reply.status == 504)
            #expect(try errorDetail(reply)["code"] as? String == "request_timeout")
            #expect(ContinuousClock.now - started < .seconds(30))

            var streamed = CancellationTests.long
            streamed["stream"] = true
            let streamedBody = try JSONSerialization.data(withJSONObject: streamed)
            let stream = try await within(seconds: 60, "a long stream under a 1 s timeout") {
                try await client.post("/v1/completions", body: streamedBody)
            }
            #expect(stream.status == 200)
            let objects = try streamedObjects(stream)
            #expect(!streamedText(objects).isEmpty)
            let last = try #require(objects.last?["error"] as? [String: Any])
            #expect(last["code"] as? String == "request_timeout")

            #expect(engine.cancelledRequests == 2)
            #expect(engine.load.running == 0 && engine.load.waiting == 0)
            let metrics = String(decoding: try await client.get("/metrics").body, as: UTF8.self)
            #expect(metrics.contains("lmcache_request_timeouts_total 2"))
        }
    }

    @Test("a request that times out while it waits leaves the queue; the running one is untouched")
    func timeoutWhileWaiting() async throws {
        let engine = try TestModel.oneSequenceEngine()
        // Two servers on one engine: the first, without a timeout, keeps the engine busy.
        try await withLiveServer(engine: (engine, nil)) { patient in
            let running = try RawConnection(port: try #require(patient.base.port))
            defer { running.close() }
            try running.send(post: "/v1/completions", json: CancellationTests.long)
            try await waitUntil(seconds: 120) { engine.load.running == 1 }
            try await withLiveServer(engine: (engine, nil), configure: { $0.requestTimeout = .seconds(1) }) { client in
                let body = try JSONSerialization.data(withJSONObject: ["messages": Self.user, "max_tokens": 4])
                let reply = try await within(seconds: 60, "a waiting request under a 1 s timeout") {
                    try await client.post("/v1/chat/completions", body: body)
                }
                #expect(reply.status == 504)
                #expect(try errorDetail(reply)["code"] as? String == "request_timeout")
            }
            #expect(engine.load.running == 1 && engine.load.waiting == 0)
            #expect(engine.cancelledRequests == 1)
        }
    }
}
