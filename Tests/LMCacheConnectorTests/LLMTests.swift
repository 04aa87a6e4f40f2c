import Foundation
import Inference
import LMCacheConnector
import LMCacheCore
import LMCacheTestSupport
import Testing

@Suite("Offline batch API")
struct LLMTests {
    @Test("prompts sharing a document load it from the cache and answer exactly as without the cache")
    func sharedDocument() async throws {
        _ = try TestModel.model()
        var configuration = LMCacheConfiguration()
        configuration.maxLocalCPUSize = 0.0625
        let cached = try LLM(modelPath: TestModel.path, configuration: configuration, prefault: false)
        let uncached = try LLM(modelPath: TestModel.path, cache: false)
        let document = (0..<26).map { "Entry \($0): the parcel for house \($0 * 3 + 1) left on day \($0 + 2)." }
            .joined(separator: " ")
        let prompts = [
            document + "\nQuestion: when did the parcel for house 10 leave?\nAnswer:",
            document + "\nQuestion: which house got the parcel on day 9?\nAnswer:",
        ]
        let withCache = try await cached.generate(prompts, maxTokens: 5)
        let without = try await uncached.generate(prompts, maxTokens: 5)
        #expect(withCache.count == 2)
        #expect(withCache[0].cachedTokens == 0)
        #expect(withCache[0].promptTokens > 256)
        // Everything the second prompt shares with the first (the document and "Question: which"... up to
        // the first differing token), from the first request's kept KV: more than its whole chunks.
        #expect(withCache[1].cachedTokens > withCache[1].promptTokens / 256 * 256)
        #expect(withCache[1].cachedTokens < withCache[1].promptTokens)
        #expect(withCache.map(\.tokens) == without.map(\.tokens))
        #expect(withCache.map(\.text) == without.map(\.text))
        #expect(without.allSatisfy { $0.cachedTokens == 0 })
    }
}
