import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The engine with any thread count: one thread works (it once spun forever on prompts of a few dozen
/// tokens), and results do not depend on the count, so hosts with different core counts share KV.
@Suite("thread count")
struct ThreadCountTests {
    @Test("KV bytes, logits and greedy tokens are the same with 1, 2 and 3 threads")
    func invariance() async throws {
        let model = try EngineCLITests.requireModel()
        var results: [[String: Any]] = []
        for threads in [1, 2, 3] {
            // 600 tokens: several 256-token blocks, batched products and attention tiles, then decode steps.
            let run = try await LMCacheExecutable.runAsync([
                "debug", "fingerprint", "--model", model, "--prompt-tokens", "600", "--decode-tokens", "4",
                "--threads", "\(threads)",
            ])
            #expect(run.status == 0, "\(run.stderr)")
            let object = try EngineCLITests.json(run.stdout)
            #expect(object["threads"] as? Int == threads)
            results.append(object)
        }
        let first = try #require(results.first)
        let kv = try #require(first["kv_xxh64"] as? String)
        let logits = try #require(first["logits_xxh64"] as? String)
        #expect(first["tokens"] as? Int == 604)
        for other in results.dropFirst() {
            #expect(other["kv_xxh64"] as? String == kv, "KV differs with \(other["threads"] ?? "?") threads")
            #expect(other["logits_xxh64"] as? String == logits, "logits differ with \(other["threads"] ?? "?") threads")
            #expect(other["generated_ids"] as? [Int] == first["generated_ids"] as? [Int])
        }
    }

    @Test("KV bytes and logits are the same on the AVX-512 and AVX2 kernels; the portable ones are keyed apart")
    func instructionSets() async throws {
        let model = try EngineCLITests.requireModel()
        func fingerprint(_ isa: String?) async throws -> [String: Any] {
            let run = try await LMCacheExecutable.runAsync(
                ["debug", "fingerprint", "--model", model, "--prompt-tokens", "300", "--decode-tokens", "2"],
                environment: isa.map { ["LMCACHE_ISA": $0] } ?? [:])
            #expect(run.status == 0, "\(run.stderr)")
            return try EngineCLITests.json(run.stdout)
        }
        let best = try await fingerprint(nil)
        let avx2 = try await fingerprint("avx2")
        let portable = try await fingerprint("generic")
        // On an AVX2-only machine the first two runs take the same code; on an AVX-512 one (VNNI products,
        // 512-bit attention) they must still agree bit for bit, so KV moves between such hosts exactly.
        if best["isa"] as? String != "generic" {
            #expect(avx2["isa"] as? String == "avx2")
            #expect(best["kv_xxh64"] as? String == avx2["kv_xxh64"] as? String, "isa \(best["isa"] ?? "?")")
            #expect(best["logits_xxh64"] as? String == avx2["logits_xxh64"] as? String)
            #expect(best["arithmetic"] as? String == avx2["arithmetic"] as? String)
        }
        // The portable kernels sum in another order: their KV carries another identity in the chunk keys.
        #expect(portable["isa"] as? String == "generic")
        #expect(portable["arithmetic"] as? String != avx2["arithmetic"] as? String)
    }

    @Test("--threads 0 is refused with a clear error")
    func zeroThreads() async throws {
        let model = try EngineCLITests.requireModel()
        let run = try await LMCacheExecutable.runAsync(["generate", "--model", model, "--prompt", "x", "--threads", "0"])
        #expect(run.status != 0)
        #expect(run.stderr.contains("--threads must be at least 1"))
    }

    @Test("lmcache serve --threads 1 answers a long prompt over HTTP within a bound")
    func serveOneThread() async throws {
        let server = try ServeProcess.serve(settings: [], options: ["--threads", "1", "--no-cache"])
        defer { server.stop() }
        try await server.waitUntilServing()
        #expect(server.output.contains("1 thread"), "\(server.output)")
        // About 700 tokens: past the 64-token small-block limit and several 256-token blocks.
        let prompt = String(repeating: "The keeper of the lighthouse wrote down the weather every evening. ", count: 60)
        let started = ContinuousClock.now
        let answer = try await HTTP.post(server.base.appending(path: "v1/completions"), json: [
            "prompt": prompt, "max_tokens": 4, "temperature": 0,
        ])
        let elapsed = ContinuousClock.now - started
        #expect(answer.0 == 200, "\(answer.1)")
        let usage = try #require(answer.1["usage"] as? [String: Any])
        #expect(((usage["prompt_tokens"] as? Int) ?? 0) > 600)
        #expect(usage["completion_tokens"] as? Int == 4)
        // One thread prefills several hundred tokens a second; minutes would mean it hangs again.
        #expect(elapsed < .seconds(120), "took \(elapsed)")
    }
}
