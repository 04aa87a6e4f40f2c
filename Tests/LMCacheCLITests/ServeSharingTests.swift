import Foundation
import LMCacheTestSupport
import Testing

/// Two `lmcache serve` processes sharing one `lmcache_server` (`remote_url: lm://…`), all real
/// processes on free loopback ports: what one instance computed, the other loads.
@Suite("lmcache serve: sharing through lmcache_server")
struct ServeSharingTests {
    /// About 600 tokens of text: 50 numbered sentences.
    static let document = (0..<50).map { i in
        let colours = ["red", "green", "blue", "amber", "violet", "teal", "ochre", "silver"]
        let things = ["lighthouse", "orchard", "harbour", "library", "bridge", "glacier", "market", "observatory"]
        return "Record \(i): the \(colours[i % 8]) \(things[(i * 5) % 8]) was visited on day \(i * 7 + 3)."
    }.joined(separator: " ")

    @Test("a document sent to one instance is a cache hit on the other, with identical greedy output")
    func sharedDocument() async throws {
        let server = try ServeProcess.cacheServer(gib: 0.25)
        defer { server.stop() }
        let serverPort = try await server.waitForPort()
        let settings = ["remote_url=lm://127.0.0.1:\(serverPort)", "max_local_cpu_size=0.125"]
        let first = try ServeProcess.serve(settings: settings)
        defer { first.stop() }
        let second = try ServeProcess.serve(settings: settings)
        defer { second.stop() }
        try await first.waitUntilServing()
        try await second.waitUntilServing()

        let body: [String: Any] = [
            "prompt": Self.document + "\nQuestion: what was visited on day 24?\nAnswer:",
            "max_tokens": 12,
            "temperature": 0,
        ]
        let (status, computed) = try await HTTP.post(first.base.appending(path: "v1/completions"), json: body)
        try #require(status == 200, "\(computed)")
        let promptTokens = try #require(usage(computed, "prompt_tokens"))
        #expect(promptTokens >= 512, "the document should span at least two 256-token chunks")
        #expect(cachedTokens(computed) == 0)

        // The first instance writes its chunks to the server behind the response: wait for them.
        let fullChunks = Double(promptTokens / 256)
        let written = await eventually(timeout: .seconds(60), interval: .milliseconds(100)) {
            let completed = try? await HTTP.metric(first.base, "lmcache_storage_writes_total{outcome=\"completed\"}")
            return (completed ?? 0) >= fullChunks
        }
        try #require(written, "the first instance never finished writing to lmcache_server: \(first.output)")

        let (secondStatus, loaded) = try await HTTP.post(second.base.appending(path: "v1/completions"), json: body)
        try #require(secondStatus == 200, "\(loaded)")
        let hit = try #require(cachedTokens(loaded))
        #expect(hit > 0 && hit % 256 == 0 && hit < promptTokens, "cached_tokens \(hit) of \(promptTokens)")
        #expect(try await HTTP.metric(second.base, "lmcache_storage_hits_total{tier=\"lm\"}") >= fullChunks)
        // The same figures under LMCache's names, and the tier's own swift-metrics counter through
        // the Prometheus backend that `lmcache serve` bootstraps.
        #expect(try await HTTP.metric(second.base, "lmcache:num_hit_tokens") == Double(hit))
        #expect(try await HTTP.metric(second.base, "lmcache:num_requested_tokens") == Double(promptTokens))
        #expect(try await HTTP.metric(second.base, "lmcache_storage_hits{tier=\"lm\"}") >= fullChunks)
        let text = try #require(choiceText(computed))
        #expect(!text.isEmpty)
        #expect(choiceText(loaded) == text)
    }

    private func usage(_ object: [String: Any], _ key: String) -> Int? {
        (object["usage"] as? [String: Any])?[key] as? Int
    }

    private func cachedTokens(_ object: [String: Any]) -> Int? {
        ((object["usage"] as? [String: Any])?["prompt_tokens_details"] as? [String: Any])?["cached_tokens"] as? Int
    }

    private func choiceText(_ object: [String: Any]) -> String? {
        ((object["choices"] as? [[String: Any]])?.first)?["text"] as? String
    }
}
