import Foundation
import LMCacheTestSupport
import Testing

/// `lmcache bench ttft` on every tier with a short prompt: the warm run loads the document from the
/// tier and the report has every field. Figures are not checked (speed is never asserted).
@Suite("lmcache bench ttft")
struct BenchTTFTTests {
    @Test(
        "bench ttft reports cold, warm and cache-off runs, with the warm hit from the tier",
        arguments: [
            "engine", "cpu", "disk", "lm", "redis",
        ]
    )
    func report(tier: String) async throws {
        let model = try TestModel.requirePath()
        let result = try await LMCacheExecutable.runAsync([
            "bench", "ttft", "--model", model, "--tier", tier, "--tokens", "300", "--runs", "1", "--json",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let line = try #require(result.stdout.split(separator: "\n").last)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["tier"] as? String == tier)
        #expect(object["tokens"] as? Int == 300)
        #expect((object["prompt_tokens"] as? Int ?? 0) > 300)
        let loaded = object["loaded_tokens"] as? Int ?? 0
        if tier == "engine" {
            // The cold request's kept KV: the whole document and the text before the question, token for token.
            #expect(loaded > 300 && loaded < (object["prompt_tokens"] as? Int ?? 0), "\(line)")
        } else {
            // One full 256-token chunk of the document is loaded from the tier: 18 layers × K and V × 256
            // values per token, float16 or float32 (the lossless dtype of the build's kernels).
            #expect(loaded == 256)
            #expect([2, 4].map { 256 * 18 * 2 * 256 * $0 }.contains(object["loaded_bytes"] as? Int ?? 0), "\(line)")
        }
        for key in ["cold_s", "warm_s", "off_s", "memcpy_s", "decode_step_s", "goal_s", "speedup"] {
            #expect((object[key] as? Double ?? 0) > 0, "\(key) in \(line)")
        }
        #expect(object["meets_goal"] is Bool)
        #expect(object["cache_overhead"] is Double)
    }
}
