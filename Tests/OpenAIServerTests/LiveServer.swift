import Foundation
import GGUF
import Hummingbird
import Inference
import LMCacheConnector
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Logging
import OpenAIServer
import ServiceLifecycle
import Testing
import Tokenizers

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension TestModel {
    /// A fresh engine without the cache that runs one sequence at a time: a second request waits.
    static func oneSequenceEngine() throws -> GenerationEngine {
        let (model, tokenizer) = try shared.get()
        return GenerationEngine(model: model, tokenizer: tokenizer, limits: SchedulerLimits(maxSequences: 1))
    }

    /// A fresh engine; with `cache`, over a new 64 MiB CPU tier (chunks of 256 tokens).
    static func engine(cache: Bool) throws -> (GenerationEngine, StorageManager?) {
        let (model, tokenizer) = try shared.get()
        guard cache else { return (GenerationEngine(model: model, tokenizer: tokenizer), nil) }
        let engineCache = try TestModel.cache()
        return (GenerationEngine(model: model, tokenizer: tokenizer, connector: engineCache.connector), engineCache.storage)
    }
}

/// A server on a free loopback port for the duration of `body`, over `engine` when given, with its
/// configuration changed by `configure`.
func withLiveServer<T: Sendable>(
    cache: Bool = true,
    maxModelLength: Int? = nil,
    engine prepared: (any ServingEngine, StorageManager?)? = nil,
    configure: (inout OpenAIServer.Configuration) -> Void = { _ in },
    _ body: (HTTPClient) async throws -> T
) async throws -> T {
    let (engine, storage): (any ServingEngine, StorageManager?) = try prepared ?? TestModel.engine(cache: cache)
    var configuration = OpenAIServer.Configuration(
        host: "127.0.0.1", port: 0, modelName: "gemma-3-270m", maxModelLength: maxModelLength)
    configure(&configuration)
    let server = OpenAIServer(engine: engine, storage: storage, configuration: configuration)
    let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
    let application = server.makeApplication { portContinuation.yield($0) }
    let services = ServiceGroup(services: [application], logger: Logger(label: "lmcache.test"))
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await services.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw HTTPClient.Failure(message: "server did not start") }
        do {
            let result = try await body(HTTPClient(base: URL(string: "http://127.0.0.1:\(port)")!))
            await services.triggerGracefulShutdown()
            return result
        } catch {
            await services.triggerGracefulShutdown()
            throw error
        }
    }
}

/// A small HTTP client for the tests.
struct HTTPClient: Sendable {
    let base: URL

    struct Failure: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    struct Reply: Sendable {
        var status: Int
        var contentType: String?
        /// The `Retry-After` header.
        var retryAfter: String? = nil
        var body: Data

        /// The body as a JSON object.
        func json() throws -> [String: Any] {
            guard let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw Failure(message: "not a JSON object: \(String(decoding: body, as: UTF8.self))")
            }
            return object
        }

        /// The `data:` payloads of a server-sent-events body.
        var events: [String] {
            String(decoding: body, as: UTF8.self).components(separatedBy: "\n\n").compactMap { block in
                block.hasPrefix("data: ") ? String(block.dropFirst(6)) : nil
            }
        }
    }

    func get(_ path: String) async throws -> Reply {
        try await send(URLRequest(url: base.appendingPathComponent(path)))
    }

    func post(_ path: String, json: [String: Any], headers: [String: String] = [:]) async throws -> Reply {
        try await post(path, body: try JSONSerialization.data(withJSONObject: json), headers: headers)
    }

    func post(_ path: String, body: Data, headers: [String: String] = [:]) async throws -> Reply {
        var request = URLRequest(url: base.appendingPathComponent(path))
        request.httpMethod = "POST"
        request.httpBody = body
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.timeoutInterval = 600
        return try await send(request)
    }

    private func send(_ request: URLRequest) async throws -> Reply {
        let (data, response) = try await URLSession.shared.data(for: request)
        guard let http = response as? HTTPURLResponse else { throw Failure(message: "no HTTP response") }
        return Reply(
            status: http.statusCode,
            contentType: http.value(forHTTPHeaderField: "Content-Type"),
            retryAfter: http.value(forHTTPHeaderField: "Retry-After"),
            body: data
        )
    }
}

/// A document of about `sentences × 12` tokens, different for each `seed`.
func document(sentences: Int, seed: Int) -> String {
    let colours = ["red", "green", "blue", "amber", "violet", "teal", "ochre", "silver"]
    let things = ["lighthouse", "orchard", "harbour", "library", "bridge", "glacier", "market", "observatory"]
    return (0..<sentences).map { i in
        let a = colours[(i * 3 + seed) % colours.count]
        let b = things[(i * 5 + seed * 7) % things.count]
        return "Record \(i + seed * 1000): the \(a) \(b) was visited on day \(i * 7 + seed)."
    }.joined(separator: " ")
}

/// `usage.prompt_tokens_details.cached_tokens` of a response.
func cachedTokens(_ object: [String: Any]) -> Int? {
    ((object["usage"] as? [String: Any])?["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int
}

/// `usage.prompt_tokens` of a response.
func promptTokens(_ object: [String: Any]) -> Int? {
    (object["usage"] as? [String: Any])?["prompt_tokens"] as? Int
}

/// The text of the first choice of a completion, or the message content of a chat completion.
func choiceText(_ object: [String: Any]) -> String? {
    guard let choice = (object["choices"] as? [[String: Any]])?.first else { return nil }
    if let text = choice["text"] as? String { return text }
    return (choice["message"] as? [String: Any])?["content"] as? String
}
