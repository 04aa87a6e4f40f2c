import Foundation
import Testing

/// `lmcache bench blend`, run as a user would, on the default model.
@Suite("lmcache bench blend")
struct BlendCLITests {
    @Test("bench blend --json reports TTFT, accuracy, agreement and KL; ratio 1 reproduces full prefill")
    func benchBlend() async throws {
        let model = try EngineCLITests.requireModel()
        let result = try await LMCacheExecutable.runAsync([
            "bench", "blend", "--model", model, "--documents", "2", "--document-tokens", "300", "--prompts", "1",
            "--ratio", "1", "--output-tokens", "4", "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try EngineCLITests.json(result.stdout)
        for key in ["full_s", "blend_s", "speedup"] {
            #expect(((object[key] as? Double) ?? 0) > 0, "\(key)")
        }
        for key in ["accuracy_full", "accuracy_blend", "accuracy_naive", "agreement_naive"] {
            let value = try #require(object[key] as? Double, "\(key)")
            #expect((0...1).contains(value), "\(key)")
        }
        // Both documents (300 tokens each) were reused...
        #expect(((object["mean_reused_tokens"] as? Double) ?? 0) >= 600)
        // ...and with every token recomputed the output is full prefill's, exactly.
        #expect(object["agreement_blend"] as? Double == 1)
        #expect(object["kl_blend"] as? Double == 0)
        #expect(object["accuracy_blend"] as? Double == object["accuracy_full"] as? Double)
    }

    @Test("bad options are clear errors")
    func badOptions() async throws {
        let model = try EngineCLITests.requireModel()
        let one = try await LMCacheExecutable.runAsync(["bench", "blend", "--model", model, "--documents", "1"])
        #expect(one.status != 0)
        #expect(one.stderr.contains("--documents must be at least 2"))
        let layer = try await LMCacheExecutable.runAsync(["bench", "blend", "--model", model, "--check-layer", "99"])
        #expect(layer.status != 0)
        #expect(layer.stderr.contains("--check-layer must be below"))
    }
}
