import Foundation
import Testing

/// The engine subcommands, run as a user would, on the default model.
@Suite("lmcache engine commands")
struct EngineCLITests {
    static var modelPath: String {
        if let path = ProcessInfo.processInfo.environment["LMCACHE_TEST_MODEL"], !path.isEmpty { return path }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? NSHomeDirectory()
        return home + "/.cache/lmcache/models/gemma-3-270m-Q4_K_M.gguf"
    }

    static func requireModel() throws -> String {
        try #require(
            FileManager.default.fileExists(atPath: modelPath),
            "test model not found at \(modelPath): run scripts/fetch-model (or set LMCACHE_TEST_MODEL)")
        return modelPath
    }

    static func json(_ text: String) throws -> [String: Any] {
        let line = try #require(text.split(separator: "\n").last)
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test("generate --json continues a prompt greedily, as llama.cpp does")
    func generate() async throws {
        let model = try Self.requireModel()
        let result = try await LMCacheExecutable.runAsync([
            "generate", "--model", model, "--prompt", "The capital of France is", "--max-tokens", "4", "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try Self.json(result.stdout)
        #expect(object["prompt_ids"] as? [Int] == [2, 818, 5279, 529, 7001, 563])
        // llama.cpp's greedy continuation: " the capital of the".
        #expect(object["generated_ids"] as? [Int] == [506, 5279, 529, 506])
        #expect(object["text"] as? String == " the capital of the")
        #expect(object["finish_reason"] as? String == "length")
    }

    @Test("perplexity --json gives perplexity, token_ids and argmax_ids per position")
    func perplexity() async throws {
        let model = try Self.requireModel()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("lmcache-ppl-\(UUID().uuidString).txt")
        try "The lighthouse keeper climbed the stairs every morning to watch the sea.".write(
            to: file, atomically: false, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try await LMCacheExecutable.runAsync(["perplexity", "--model", model, "--file", file.path, "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try Self.json(result.stdout)
        let ids = try #require(object["token_ids"] as? [Int])
        let argmax = try #require(object["argmax_ids"] as? [Int])
        #expect(ids.first == 2)
        #expect(argmax.count == ids.count)
        let perplexity = try #require(object["perplexity"] as? Double)
        #expect(perplexity > 1 && perplexity < 10_000)
    }

    @Test("bench engine --json prints the documented fields")
    func benchEngine() async throws {
        let model = try Self.requireModel()
        let result = try await LMCacheExecutable.runAsync([
            "bench", "engine", "--model", model, "--prompt-tokens", "24", "--decode-tokens", "2", "--runs", "1", "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try Self.json(result.stdout)
        for key in ["prefill_tok_s", "decode_tok_s"] {
            #expect(((object[key] as? Double) ?? 0) > 0, "\(key)")
        }
        #expect(object["prompt_tokens"] as? Int == 24)
        #expect(((object["threads"] as? Int) ?? 0) >= 1)
    }

    @Test("bench kernels --json gives every format at every level this CPU has, against the generic level")
    func benchKernels() async throws {
        let result = try await LMCacheExecutable.runAsync([
            "bench", "kernels", "--rows", "8", "--columns", "64", "--k-columns", "256", "--tokens", "5", "--runs", "1",
            "--json",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try Self.json(result.stdout)
        let rows = try #require(object["results"] as? [[String: Any]])
        let levels = Set(rows.compactMap { $0["level"] as? String })
        #expect(levels.contains("generic"))
        #expect(Set(rows.compactMap { $0["format"] as? String }) == ["Q5_0", "Q8_0", "Q4_K", "Q6_K"])
        #expect(rows.count == 4 * levels.count)
        for row in rows {
            #expect(((row["gmac_s"] as? Double) ?? 0) > 0, "\(row)")
            if row["level"] as? String == "generic" { #expect(row["vs_generic"] as? Double == 1) }
        }
        #expect(object["tokens"] as? Int == 5)

        let bad = try await LMCacheExecutable.runAsync(["bench", "kernels", "--columns", "33"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("multiple of 32"))
    }

    @Test("serve's scheduling options are checked before anything starts")
    func serveSchedulingOptions() async throws {
        let negative = try await LMCacheExecutable.runAsync([
            "serve", "/nonexistent.gguf", "--port", "0", "--long-prefill-token-threshold=-1",
        ])
        #expect(negative.status != 0)
        #expect(negative.stderr.contains("long prefill threshold must not be negative"), "\(negative.stderr)")
        let chunk = try await LMCacheExecutable.runAsync(["serve", "/nonexistent.gguf", "--max-num-batched-tokens", "300"])
        #expect(chunk.status != 0)
        #expect(chunk.stderr.contains("multiple of 256"), "\(chunk.stderr)")
    }

    @Test("a missing model file is a clear error, not a crash")
    func missingModel() async throws {
        let result = try await LMCacheExecutable.runAsync(["generate", "--model", "/nonexistent.gguf", "--prompt", "x"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("does not exist"))
    }
}
