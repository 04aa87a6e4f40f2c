import Foundation
import LMCacheTestSupport
import Testing


/// Parses the `data:` events of a stream into JSON objects, checking it ends with `[DONE]`.
func streamedObjects(_ reply: HTTPClient.Reply) throws -> [[String: Any]] {
    let events = reply.events
    #expect(events.last == "[DONE]")
    return try events.dropLast().map { event in
        guard let object = try JSONSerialization.jsonObject(with: Data(event.utf8)) as? [String: Any] else {
            throw HTTPClient.Failure(message: "event is not an object: \(event)")
        }
        return object
    }
}

/// The concatenated text of streamed completion or chat chunks.
func streamedText(_ objects: [[String: Any]]) -> String {
    objects.compactMap { object -> String? in
        guard let choice = (object["choices"] as? [[String: Any]])?.first else { return nil }
        if let text = choice["text"] as? String { return text }
        return (choice["delta"] as? [String: Any])?["content"] as? String
    }.joined()
}

@Suite("OpenAI-compatible server over real HTTP")
struct OpenAIServerTests {
    @Test("completions: greedy text, usage, and a cache hit gives the text of a server without the cache")
    func completionsCacheHit() async throws {
        let prompt = document(sentences: 30, seed: 1) + " Which record mentions the teal glacier?"
        let request = try JSONSerialization.data(withJSONObject: [
            "model": "gemma-3-270m", "prompt": prompt, "max_tokens": 8, "temperature": 0,
        ])
        let reference = try await withLiveServer(cache: false) { client in
            try await client.post("/v1/completions", body: request)
        }.json()
        let (coldReply, warmReply) = try await withLiveServer { client in
            (
                try await client.post("/v1/completions", body: request),
                try await client.post("/v1/completions", body: request)
            )
        }
        #expect(coldReply.status == 200)
        #expect(coldReply.contentType == "application/json")
        let cold = try coldReply.json()
        let warm = try warmReply.json()
        #expect(cold["object"] as? String == "text_completion")
        let tokens = try #require(promptTokens(cold))
        #expect(tokens > 256)
        #expect(cachedTokens(cold) == 0)
        // The repeat takes over the first request's KV in the engine's memory: only its last token is computed.
        #expect(cachedTokens(warm) == tokens - 1)
        #expect(cachedTokens(reference) == 0)
        let text = try #require(choiceText(reference))
        #expect(!text.isEmpty)
        #expect(choiceText(cold) == text)
        #expect(choiceText(warm) == text)
        let choice = try #require((warm["choices"] as? [[String: Any]])?.first)
        #expect(["length", "stop"].contains(choice["finish_reason"] as? String))
    }

    @Test("streamed completions and chat send the same text as unstreamed ones, then usage and [DONE]")
    func streaming() async throws {
        try await withLiveServer { client in
            let completion: [String: Any] = [
                "prompt": "The three primary colours are", "max_tokens": 10, "temperature": 0,
            ]
            let whole = try await client.post("/v1/completions", json: completion).json()
            var streamRequest = completion
            streamRequest["stream"] = true
            streamRequest["stream_options"] = ["include_usage": true]
            let reply = try await client.post("/v1/completions", json: streamRequest)
            #expect(reply.status == 200)
            #expect(reply.contentType?.hasPrefix("text/event-stream") == true)
            let objects = try streamedObjects(reply)
            #expect(objects.count >= 3)
            #expect(streamedText(objects) == choiceText(whole))
            #expect(objects.last.flatMap(promptTokens) == promptTokens(whole))

            let chat: [String: Any] = [
                "messages": [
                    ["role": "system", "content": "Answer in one short sentence."],
                    ["role": "user", "content": "What is the capital of France?"],
                ],
                "max_tokens": 12, "temperature": 0,
            ]
            let chatWhole = try await client.post("/v1/chat/completions", json: chat).json()
            #expect(chatWhole["object"] as? String == "chat.completion")
            // The default model is a base model: only the format is checked, not the answer's content.
            let answer = try #require(choiceText(chatWhole))
            #expect(!answer.isEmpty)
            // <start_of_turn> and <end_of_turn> are single special tokens, not text.
            #expect((promptTokens(chatWhole) ?? 100) < 40)
            var chatStream = chat
            chatStream["stream"] = true
            let chatObjects = try streamedObjects(try await client.post("/v1/chat/completions", json: chatStream))
            #expect(chatObjects.first?["object"] as? String == "chat.completion.chunk")
            let firstDelta = ((chatObjects.first?["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])
            #expect(firstDelta?["role"] as? String == "assistant")
            #expect(streamedText(chatObjects) == answer)
        }
    }

    @Test("a stop string cuts the text before it, streamed or not")
    func stopStrings() async throws {
        try await withLiveServer { client in
            let base: [String: Any] = ["prompt": "Count: one, two, three, four,", "max_tokens": 16, "temperature": 0]
            let free = try #require(choiceText(try await client.post("/v1/completions", json: base).json()))
            let words = free.split(separator: " ")
            try #require(words.count >= 3)
            let stop = String(words[2])
            let expected = String(free[..<free.range(of: stop)!.lowerBound])
            var stopped = base
            stopped["stop"] = [stop]
            let whole = try await client.post("/v1/completions", json: stopped).json()
            #expect(choiceText(whole) == expected)
            #expect((whole["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == "stop")
            stopped["stream"] = true
            let objects = try streamedObjects(try await client.post("/v1/completions", json: stopped))
            #expect(streamedText(objects) == expected)
        }
    }

    @Test("tenants (X-Tenant-Id or cache_salt) never hit each other's cache")
    func tenants() async throws {
        try await withLiveServer { client in
            let prompt = document(sentences: 28, seed: 2)
            let request: [String: Any] = ["prompt": prompt, "max_tokens": 1, "temperature": 0]
            let alice = try await client.post("/v1/completions", json: request, headers: ["X-Tenant-Id": "alice"])
                .json()
            #expect(cachedTokens(alice) == 0)
            let bob = try await client.post("/v1/completions", json: request, headers: ["X-Tenant-Id": "bob"]).json()
            #expect(cachedTokens(bob) == 0)
            let shared = try await client.post("/v1/completions", json: request).json()
            #expect(cachedTokens(shared) == 0)
            var salted = request
            salted["cache_salt"] = "alice"
            let aliceAgain = try await client.post("/v1/completions", json: salted).json()
            let tokens = try #require(promptTokens(aliceAgain))
            #expect(tokens > 256)
            // Alice's own earlier request, token for token but the last (bob's and the shared one are not hers).
            #expect(cachedTokens(aliceAgain) == tokens - 1)
            #expect(choiceText(aliceAgain) == choiceText(bob))
        }
    }

    @Test("bad requests get OpenAI-style 4xx JSON errors")
    func errors() async throws {
        try await withLiveServer(maxModelLength: 64) { client in
            func expectError(_ reply: HTTPClient.Reply, status: Int = 400, code: String? = nil) throws {
                #expect(reply.status == status)
                let error = try #require(try reply.json()["error"] as? [String: Any])
                #expect(error["type"] as? String == "invalid_request_error")
                #expect(!(error["message"] as? String ?? "").isEmpty)
                if let code { #expect(error["code"] as? String == code) }
            }
            try expectError(try await client.post("/v1/completions", body: Data("{\"prompt\": ".utf8)))
            try expectError(try await client.post("/v1/chat/completions", body: Data("not json".utf8)))
            try expectError(try await client.post("/v1/completions", json: ["max_tokens": 3]))
            try expectError(try await client.post("/v1/completions", json: ["prompt": "Hi", "n": 2]))
            try expectError(try await client.post("/v1/completions", json: ["prompt": "Hi", "temperature": -1]))
            try expectError(try await client.post("/v1/chat/completions", json: ["messages": []]))
            // An unknown role, and logprobs (not computed), are refused rather than ignored.
            try expectError(
                try await client.post("/v1/chat/completions", json: ["messages": [["role": "alien", "content": "Hi"]]]))
            try expectError(try await client.post("/v1/completions", json: ["prompt": "Hi", "logprobs": 5]))
            try expectError(
                try await client.post(
                    "/v1/chat/completions", json: ["messages": [["role": "user", "content": "Hi"]], "logprobs": true]))
            // Asking for none is fine.
            let noLogprobs = try await client.post(
                "/v1/completions", json: ["prompt": "Hi", "max_tokens": 1, "logprobs": NSNull()])
            #expect(noLogprobs.status == 200)
            try expectError(
                try await client.post("/v1/completions", json: ["prompt": document(sentences: 20, seed: 3)]),
                code: "context_length_exceeded"
            )
            // The server still serves after errors.
            let ok = try await client.post("/v1/completions", json: ["prompt": "Hi", "max_tokens": 2])
            #expect(ok.status == 200)
        }
    }

    @Test("models, health and Prometheus metrics")
    func infoRoutes() async throws {
        try await withLiveServer { client in
            let health = try await client.get("/health")
            #expect(health.status == 200)
            let models = try await client.get("/v1/models").json()
            let first = try #require((models["data"] as? [[String: Any]])?.first)
            #expect(first["id"] as? String == "gemma-3-270m")
            _ = try await client.post("/v1/completions", json: ["prompt": "Hello", "max_tokens": 2, "temperature": 0])
            let metrics = try await client.get("/metrics")
            #expect(metrics.status == 200)
            let text = String(decoding: metrics.body, as: UTF8.self)
            #expect(text.contains("lmcache_http_requests_total{endpoint=\"completions\",status=\"200\"} 1"))
            #expect(text.contains("lmcache_time_to_first_token_seconds_count 1"))
            #expect(text.contains("lmcache_prompt_tokens_total{source=\"cache\"}"))
            #expect(text.contains("lmcache_cpu_tier_bytes{kind=\"capacity\"}"))
            #expect(text.contains("lmcache_engine_free_kv_bytes "))
        }
    }
}

@Suite("The official openai Python package against the server")
struct OpenAIPythonClientTests {
    @Test("completions, chat, streaming and errors through openai.OpenAI")
    func officialClient() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Resources/openai_client.py").path
        let (status, output) = try await withLiveServer { client in
            try await runChildProcess(
                "/usr/bin/env",
                ["python3", script, client.base.appendingPathComponent("v1").absoluteString],
                mergeStandardError: true
            )
        }
        #expect(status == 0, "\(output)")
        #expect(output.contains("all passed"), "\(output)")
    }
}

@Suite("Client disconnects")
struct DisconnectTests {
    @Test("a client that disconnects mid-stream stops its generation and frees the engine")
    func disconnectMidStream() async throws {
        try await withLiveServer { client in
            let port = try #require(client.base.port)
            // Reads until the first event, then hangs up (blocking socket calls, off the cooperative pool).
            try await Task.detached {
                let connection = try RawConnection(port: port)
                try connection.send(
                    post: "/v1/completions",
                    json: ["prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "stream": true])
                _ = try connection.read(until: "\"text\"")
                connection.close()
            }.value
            // Served after the abandoned stream stops (one request at a time).
            let next = try await client.post(
                "/v1/completions",
                json: ["prompt": "Hello", "max_tokens": 2, "temperature": 0]
            )
            #expect(next.status == 200)
            let metrics = String(decoding: try await client.get("/metrics").body, as: UTF8.self)
            #expect(metrics.contains("lmcache_client_disconnects_total 1"))
            #expect(metrics.contains("lmcache_requests_running 0"))
            let generated = metrics.split(separator: "\n").first { $0.hasPrefix("lmcache_generation_tokens_total ") }
            let count = generated.flatMap { Int($0.split(separator: " ")[1]) } ?? .max
            #expect(count < 1000, "the abandoned stream generated \(count) tokens")
        }
    }
}
