import Foundation
import GGUF
import Inference
import LMCacheConnector
import LMCacheCore
import LMCacheStorage
import LMCacheTestSupport
import Testing
import Tokenizers

/// An engine built the way `lmcache serve` builds it, from a configuration file.
private func configuredEngine(yaml: String) throws -> (GenerationEngine, StorageManager?) {
    let (model, tokenizer) = try TestModel.shared.get()
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("lmcache-blend-\(UUID().uuidString).yaml")
    try yaml.write(to: file, atomically: false, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: file) }
    let configuration = try ConfigurationLoader.load(environment: [:], configFile: file.path).configuration
    let cache = try EngineCache(configuration: configuration, model: model, tokenizer: tokenizer, name: "gemma-3-270m")
    return (GenerationEngine(model: model, tokenizer: tokenizer, connector: cache.connector), cache.storage)
}

@Suite("Blending through the OpenAI server")
struct BlendServerTests {
    static let yaml = """
        max_local_cpu_size: 0.0625
        enable_blending: true
        blend_min_tokens: 32
        save_unfull_chunk: true
        blend_recompute_ratios: [1.0]
        """

    /// Documents between the default separator, then a question.
    static func prompt(_ seeds: [Int]) -> String {
        "Read the records." + seeds.map { " # # " + document(sentences: 8, seed: $0) }.joined()
            + " # # Which record mentions a lighthouse?"
    }

    @Test("enable_blending switches it on: reordered documents are reused, and ratio 1 gives the uncached text")
    func completionsAndChat() async throws {
        let reference = try await withLiveServer(cache: false) { client in
            var texts: [String] = []
            for body in Self.requests() {
                let reply = try await client.post(body.path, json: body.json)
                #expect(reply.status == 200)
                texts.append(try #require(choiceText(try reply.json())))
            }
            return texts
        }
        try await withLiveServer(engine: try configuredEngine(yaml: Self.yaml)) { client in
            for (index, body) in Self.requests().enumerated() {
                let reply = try await client.post(body.path, json: body.json)
                #expect(reply.status == 200, "\(String(decoding: reply.body, as: UTF8.self))")
                let object = try reply.json()
                #expect(choiceText(object) == reference[index], "request \(index)")
                let cached = try #require(cachedTokens(object))
                // The first request of each kind stores the documents; the reordered one reuses them.
                if index % 2 == 1 { #expect(cached > 100, "request \(index)") } else { #expect(cached == 0) }
            }
        }
    }

    @Test("with blending off, the same configuration reuses only prefixes")
    func blendingOff() async throws {
        let off = Self.yaml.replacingOccurrences(of: "enable_blending: true", with: "enable_blending: false")
        let (engine, storage) = try configuredEngine(yaml: off)
        #expect(engine.connector is KVConnector)
        try await withLiveServer(engine: (engine, storage)) { client in
            for body in Self.requests() {
                let reply = try await client.post(body.path, json: body.json)
                #expect(reply.status == 200)
                // At most the text the prompts share before their first document (reused at token
                // granularity), never a reordered document (> 100 tokens, as blending reuses above).
                let cached = try #require(cachedTokens(try reply.json()))
                #expect(cached < 100, "\(cached) tokens reused")
            }
        }
    }

    /// A completion, the same documents reordered, then the same pair as chat.
    static func requests() -> [(path: String, json: [String: Any])] {
        let first = prompt([1, 2, 3])
        let reordered = prompt([3, 1, 2])
        func completion(_ text: String) -> (String, [String: Any]) {
            ("/v1/completions", ["model": "gemma-3-270m", "prompt": text, "max_tokens": 6, "temperature": 0])
        }
        func chat(_ text: String) -> (String, [String: Any]) {
            (
                "/v1/chat/completions",
                [
                    "model": "gemma-3-270m", "messages": [["role": "user", "content": text]], "max_tokens": 6,
                    "temperature": 0,
                ]
            )
        }
        let chatFirst = prompt([4, 5, 6])
        let chatReordered = prompt([6, 4, 5])
        return [completion(first), completion(reordered), chat(chatFirst), chat(chatReordered)]
    }
}
