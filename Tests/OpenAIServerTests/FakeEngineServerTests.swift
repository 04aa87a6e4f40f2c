import Foundation
import Inference
import LMCacheTestSupport
import Synchronization
#if LMCACHE_TSAN
import LMCacheCore  // `Mutex` is its SanitizedMutex in thread-sanitizer builds
#endif
import Testing
import Tokenizers

/// Byte-level tokens: ids 0–255 are bytes, 256 is BOS, 257 EOS.
struct ByteTokenizer: Tokenizer {
    var vocabularySize: Int { 258 }
    var bosID: Int32? { 256 }
    var eosID: Int32? { 257 }
    var paddingID: Int32? { nil }
    var unknownID: Int32? { nil }
    var endOfGenerationIDs: Set<Int32> { [257] }
    var addsBOS: Bool { true }
    var addsEOS: Bool { false }

    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        (addSpecial ? [256] : []) + text.utf8.map { Int32($0) }
    }

    func appendPieceBytes(of id: Int32, renderSpecial: Bool, to output: inout [UInt8]) {
        if id < 256 {
            output.append(UInt8(id))
        } else if renderSpecial {
            output += Array((id == 256 ? "<bos>" : "<eos>").utf8)
        }
    }
}

/// A stand-in for the engine behind the HTTP layer: answers at once with a scripted text (one token
/// per byte, cut at `maxTokens`), or fails, before or after some tokens; remembers each request.
final class FakeEngine: ServingEngine {
    enum Script: Sendable {
        case answer(String)
        case fail(InferenceError, afterTokens: Int)
    }

    let script: Script
    let tokenizer: any Tokenizer = ByteTokenizer()
    let architecture = "gemma3"
    let contextLength = 2048
    let limits = SchedulerLimits(maxSequences: 2)
    let usesCache = false
    var load: (running: Int, waiting: Int) { (0, 0) }
    var cancelledRequests: Int { 0 }
    var copiedPromptTokens: Int { 0 }
    var freeKVPageBytes: Int { 0 }
    let requests = Mutex<[GenerationRequest]>([])

    init(_ script: Script) { self.script = script }

    func generate(
        _ request: GenerationRequest,
        onToken: @escaping @Sendable (Int32, String) -> Bool
    ) async throws -> GenerationResult {
        requests.withLock { $0.append(request) }
        let (text, failure): (String, (InferenceError, Int)?) =
            switch script {
            case .answer(let text): (text, nil)
            case .fail(let error, let after): (String(repeating: "x", count: after), (error, after))
            }
        var tokens: [Int32] = []
        for byte in text.utf8.prefix(request.maxTokens) {
            if let (error, after) = failure, tokens.count == after { throw error }
            tokens.append(Int32(byte))
            guard onToken(Int32(byte), String(decoding: [byte], as: UTF8.self)) else { break }
        }
        if let (error, _) = failure { throw error }
        return GenerationResult(
            tokens: tokens,
            text: String(decoding: tokens.map { UInt8($0) }, as: UTF8.self),
            finishReason: tokens.count == request.maxTokens ? .length : .endOfSequence,
            promptTokens: request.prompt.count,
            cachedTokens: 0
        )
    }

    func cancelAll() {}
}

/// The HTTP layer over a stand-in engine: what the server makes of the engine's answers and failures,
/// with no model (each test runs in milliseconds).
@Suite("OpenAI server over a stand-in engine")
struct FakeEngineServerTests {
    @Test("the engine's text, finish reason and token counts become OpenAI's fields; the prompt reaches it templated")
    func answerFields() async throws {
        let engine = FakeEngine(.answer(" world"))
        try await withLiveServer(engine: (engine, nil)) { client in
            let reply = try await client.post("/v1/completions", json: ["prompt": "Hello", "max_tokens": 16])
            #expect(reply.status == 200)
            let object = try reply.json()
            #expect(choiceText(object) == " world")
            let choice = try #require((object["choices"] as? [[String: Any]])?.first)
            #expect(choice["finish_reason"] as? String == "stop")
            #expect(promptTokens(object) == 6)
            #expect((object["usage"] as? [String: Any])?["completion_tokens"] as? Int == 6)

            let cut = try await client.post("/v1/completions", json: ["prompt": "Hello", "max_tokens": 3]).json()
            #expect(choiceText(cut) == " wo")
            #expect(((cut["choices"] as? [[String: Any]])?.first)?["finish_reason"] as? String == "length")

            let chat = try await client.post(
                "/v1/chat/completions", json: ["messages": [["role": "user", "content": "Hi"]], "max_tokens": 4])
            #expect(chat.status == 200)
            let prompt = try #require(engine.requests.withLock { $0.last?.prompt })
            let text = String(decoding: prompt.filter { $0 < 256 }.map { UInt8($0) }, as: UTF8.self)
            #expect(text.contains("<start_of_turn>user\nHi<end_of_turn>"), "the Gemma chat template: \(text)")
        }
    }

    @Test("an engine failure is a JSON error (400 for invalid input, else 500), and the server serves the next request")
    func engineFailure() async throws {
        let failing = FakeEngine(.fail(.invalidInput("token id 99999 is outside the vocabulary"), afterTokens: 0))
        try await withLiveServer(engine: (failing, nil)) { client in
            let reply = try await client.post("/v1/completions", json: ["prompt": "Hello", "max_tokens": 4])
            #expect(reply.status == 400)
            #expect(try errorDetail(reply)["message"] as? String == "token id 99999 is outside the vocabulary")
            let health = try await client.get("/health")
            #expect(health.status == 200)
        }
        // The engine's own state, not the request, is at fault: a server error.
        let broken = FakeEngine(.fail(.invalidKV("the sequence's rows are gone"), afterTokens: 0))
        try await withLiveServer(engine: (broken, nil)) { client in
            let reply = try await client.post("/v1/completions", json: ["prompt": "Hello", "max_tokens": 4])
            #expect(reply.status == 500)
            #expect(try errorDetail(reply)["type"] as? String == "server_error")
        }
    }

    @Test("a stream whose generation fails midway ends with an error event after the text sent so far")
    func streamFailure() async throws {
        let failing = FakeEngine(.fail(.invalidKV("the sequence's rows are gone"), afterTokens: 3))
        try await withLiveServer(engine: (failing, nil)) { client in
            let reply = try await client.post(
                "/v1/completions", json: ["prompt": "Hello", "max_tokens": 8, "stream": true])
            #expect(reply.status == 200)
            let events = reply.events
            let text = events.compactMap { event -> String? in
                guard let data = event.data(using: .utf8),
                    let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
                else { return nil }
                return ((object["choices"] as? [[String: Any]])?.first)?["text"] as? String
            }.joined()
            #expect(text == "xxx")
            #expect(events.contains { $0.contains("\"error\"") && $0.contains("rows are gone") }, "\(events)")
        }
    }
}
