import Foundation
import Testing

/// Reuse at token granularity through the server: a prompt that extends an earlier one mid-chunk, and
/// a chat's next round, load everything they share with what came before (the engine's memory keeps
/// finished requests' KV, generated tokens included) and answer exactly as a server without the cache.
@Suite("Token-granular reuse over real HTTP")
struct TokenReuseTests {
    @Test("a prompt extending an earlier one mid-chunk reuses all of it; the text is the uncached server's")
    func extendedPrompt() async throws {
        // About 300 tokens: the shared part ends inside the second 256-token chunk.
        let first = document(sentences: 20, seed: 7) + " Which record mentions the teal glacier?"
        let second = first + " Answer in one word, then name the record that comes after it."
        func request(_ prompt: String) -> [String: Any] {
            ["prompt": prompt, "max_tokens": 6, "temperature": 0]
        }
        let referenceReplies = try await withLiveServer(cache: false) { client in
            (
                try await client.post("/v1/completions", json: request(first)),
                try await client.post("/v1/completions", json: request(second))
            )
        }
        let reference = (try referenceReplies.0.json(), try referenceReplies.1.json())
        let replies = try await withLiveServer { client in
            (
                try await client.post("/v1/completions", json: request(first)),
                try await client.post("/v1/completions", json: request(second))
            )
        }
        let (cold, extended) = (try replies.0.json(), try replies.1.json())
        let firstTokens = try #require(promptTokens(cold))
        let secondTokens = try #require(promptTokens(extended))
        #expect(firstTokens % 256 != 0)
        #expect(cachedTokens(cold) == 0)
        // Everything the two prompts share (the first's tokens, but for a merge at the seam) is loaded.
        let cached = try #require(cachedTokens(extended))
        #expect(cached >= firstTokens - 1 && cached < secondTokens, "cached \(cached) of \(secondTokens)")
        #expect(choiceText(cold) == choiceText(reference.0))
        #expect(choiceText(extended) == choiceText(reference.1))
    }

    @Test("a chat's next round reuses the whole earlier round; the answers are the uncached server's")
    func chatRounds() async throws {
        let opening = document(sentences: 12, seed: 8) + " Which record mentions the teal glacier?"
        @Sendable func round1() -> [String: Any] {
            ["messages": [["role": "user", "content": opening]], "max_tokens": 8, "temperature": 0]
        }
        @Sendable func round2(_ answer: String) -> [String: Any] {
            [
                "messages": [
                    ["role": "user", "content": opening], ["role": "assistant", "content": answer],
                    ["role": "user", "content": "And which one comes right after it?"],
                ],
                "max_tokens": 8, "temperature": 0,
            ]
        }
        @Sendable func rounds(_ client: HTTPClient) async throws -> (HTTPClient.Reply, HTTPClient.Reply) {
            let first = try await client.post("/v1/chat/completions", json: round1())
            let answer = choiceText(try first.json()) ?? ""
            return (first, try await client.post("/v1/chat/completions", json: round2(answer)))
        }
        let referenceReplies = try await withLiveServer(cache: false) { client in try await rounds(client) }
        let reference = (try referenceReplies.0.json(), try referenceReplies.1.json())
        let cachedReplies = try await withLiveServer { client in try await rounds(client) }
        let cached = (try cachedReplies.0.json(), try cachedReplies.1.json())
        #expect(choiceText(cached.0) == choiceText(reference.0))
        #expect(choiceText(cached.1) == choiceText(reference.1))
        let roundOne = try #require(promptTokens(cached.0))
        let reused = try #require(cachedTokens(cached.1))
        // Round one's prompt at least; its answer too where the template re-tokenizes it the same way.
        #expect(reused >= roundOne, "round two reused \(reused), round one's prompt has \(roundOne) tokens")
        #expect(reused < (promptTokens(cached.1) ?? 0))
    }
}
