import Foundation
import Testing

/// The workload generators of scripts/workloads (Python, the `openai` package) in a small
/// configuration against a real `lmcache serve` process: every request completes, the reports are
/// well formed, and the repeated prefixes are loaded from the cache. Speed is not checked.
@Suite("workload generators against lmcache serve")
struct WorkloadTests {
    static let scripts = URL(filePath: #filePath).deletingLastPathComponent()
        .appending(path: "../../scripts/workloads").standardized

    @Test("multi-round QA, long-document QA, a shared system prompt, code completion and RAG complete with well-formed reports and cache hits")
    func workloads() async throws {
        let server = try ServeProcess.serve(settings: ["max_local_cpu_size=0.25"])
        defer { server.stop() }
        try await server.waitUntilServing()
        let base = server.base.appending(path: "v1").absoluteString
        let directory = FileManager.default.temporaryDirectory.appending(path: "workloads-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        // Multi-round QA: 2 users × 2 rounds, both in flight, fixed history answers.
        let multiRound = directory.appending(path: "multi-round.json")
        let first = try await runPython([
            Self.scripts.appending(path: "multi_round_qa.py").path, "--base-url", base, "--users", "2",
            "--rounds", "2", "--concurrency", "2", "--system-tokens", "150", "--document-tokens", "200",
            "--max-tokens", "4", "--fixed-answers", "--json", multiRound.path,
        ])
        try #require(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("requests/s") && first.stderr.contains("TTFT mean"))
        let rounds = try Self.report(multiRound)
        #expect(rounds.workload == "multi-round-qa")
        try Self.checkShape(rounds, requests: 4, groups: [1, 2], groupKey: "round")
        for request in rounds.requests where request["round"] as? Int == 2 {
            // Round 2 carries round 1's whole prompt: at least its first chunk is loaded.
            #expect((request["cached_tokens"] as? Int ?? 0) > 0, "\(request)")
        }

        // Long-document QA: 2 documents, a first pass and one repeat pass.
        let longDocument = directory.appending(path: "long-doc.json")
        let second = try await runPython([
            Self.scripts.appending(path: "long_doc_qa.py").path, "--base-url", base, "--documents", "2",
            "--document-tokens", "350", "--repeats", "1", "--max-tokens", "4", "--json", longDocument.path,
            "--quiet",
        ])
        try #require(second.status == 0, "\(second.stderr)")
        let passes = try Self.report(longDocument)
        #expect(passes.workload == "long-doc-qa")
        try Self.checkShape(passes, requests: 4, groups: [0, 1], groupKey: "pass")
        for request in passes.requests {
            let cached = request["cached_tokens"] as? Int ?? -1
            if request["pass"] as? Int == 0 {
                // No document is cached yet: at most the text all prompts begin with (reused at token
                // granularity from an earlier request), never a document's chunk.
                #expect(cached >= 0 && cached < 64, "\(request)")
            } else {
                #expect(cached > 0, "\(request)")
            }
        }

        try await Self.sharedPrompt(base: base, directory: directory)
        try await Self.codeCompletion(base: base, directory: directory)
        try await Self.rag(base: base, directory: directory)
    }

    /// RAG: 4 requests drawing 2 or 3 of 4 documents each, in any order.
    static func rag(base: String, directory: URL) async throws {
        let path = directory.appending(path: "rag.json")
        let run = try await runPython([
            Self.scripts.appending(path: "rag.py").path, "--base-url", base, "--pool", "4", "--document-tokens", "150",
            "--requests", "4", "--min-docs", "2", "--max-docs", "3", "--max-tokens", "4", "--json", path.path, "--quiet",
        ])
        try #require(run.status == 0, "\(run.stderr)")
        let report = try Self.report(path)
        #expect(report.workload == "rag")
        #expect(report.requests.count == 4)
        for request in report.requests {
            let documents = request["documents"] as? Int ?? 0
            #expect([2, 3].contains(documents), "\(request)")
            // About 150 tokens per document (4 characters per token is approximate).
            #expect((request["prompt_tokens"] as? Int ?? 0) > 100 * documents, "\(request)")
        }
    }

    /// Code completion: 6 completions in 2 of the repository's Swift files.
    static func codeCompletion(base: String, directory: URL) async throws {
        let path = directory.appending(path: "code.json")
        let run = try await runPython([
            Self.scripts.appending(path: "code_completion.py").path, "--base-url", base, "--files", "2",
            "--requests", "6", "--min-tokens", "400", "--max-tokens-per-file", "600", "--max-tokens", "4",
            "--json", path.path, "--quiet",
        ])
        try #require(run.status == 0, "\(run.stderr)")
        let files = try Self.report(path)
        #expect(files.workload == "code-completion")
        #expect(files.requests.count == 6)
        // Completions in a file already seen share its first lines: some are loaded from the cache.
        #expect(files.requests.contains { ($0["cached_tokens"] as? Int ?? 0) > 0 }, "\(files.requests)")
    }

    /// Many users on one system prompt: 4 users, two waves, all in flight.
    static func sharedPrompt(base: String, directory: URL) async throws {
        let path = directory.appending(path: "shared-prompt.json")
        let run = try await runPython([
            Self.scripts.appending(path: "shared_prompt.py").path, "--base-url", base, "--users", "4",
            "--system-tokens", "400", "--waves", "1", "--max-tokens", "4", "--json", path.path, "--quiet",
        ])
        try #require(run.status == 0, "\(run.stderr)")
        let waves = try Self.report(path)
        #expect(waves.workload == "shared-prompt")
        try Self.checkShape(waves, requests: 8, groups: [0, 1], groupKey: "wave")
        let p99 = try #require(waves.summary["ttft_p99_s"] as? Double)
        #expect(p99 >= (waves.summary["ttft_p90_s"] as? Double ?? .infinity))
        for request in waves.requests where request["wave"] as? Int == 1 {
            // The second wave finds the shared prompt's KV (kept by the engine or in the CPU tier).
            #expect((request["cached_tokens"] as? Int ?? 0) >= 256, "\(request)")
        }
    }

    struct Report {
        var workload: String
        var summary: [String: Any]
        var requests: [[String: Any]]
    }

    static func report(_ url: URL) throws -> Report {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        return Report(
            workload: object["workload"] as? String ?? "",
            summary: try #require(object["summary"] as? [String: Any]),
            requests: try #require(object["requests"] as? [[String: Any]])
        )
    }

    /// Every request has sane timings and sizes, and the summary agrees with the requests.
    static func checkShape(_ report: Report, requests: Int, groups: [Int], groupKey: String) throws {
        #expect(report.requests.count == requests)
        #expect(report.summary["requests"] as? Int == requests)
        let wall = try #require(report.summary["wall_s"] as? Double)
        #expect(wall > 0)
        let rate = try #require(report.summary["requests_per_s"] as? Double)
        #expect(abs(rate - Double(requests) / wall) <= 1e-9 * rate)
        for key in ["ttft_mean_s", "ttft_p50_s", "ttft_p90_s", "latency_mean_s"] {
            let value = try #require(report.summary[key] as? Double, "\(key)")
            #expect(value > 0 && value <= wall, "\(key) = \(value)")
        }
        var streamed = 0
        for request in report.requests {
            let ttft = try #require(request["ttft_s"] as? Double)
            let latency = try #require(request["latency_s"] as? Double)
            #expect(ttft > 0 && ttft <= latency, "\(request)")
            #expect((request["prompt_tokens"] as? Int ?? 0) > 0, "\(request)")
            #expect((request["prompt_chars"] as? Int ?? 0) > 0, "\(request)")
            // The mean gap between an answer's streamed chunks lies within the time after its first one.
            if let itl = request["itl_mean_s"] as? Double {
                streamed += 1
                #expect(itl > 0 && itl <= latency - ttft, "\(request)")
            }
        }
        // Answers of a few tokens arrive a token a chunk: inter-token latency is measured.
        #expect(streamed > 0)
        let itl = try #require(report.summary["itl_mean_s"] as? Double)
        let (p50, p99) = (report.summary["itl_p50_s"] as? Double ?? 0, report.summary["itl_p99_s"] as? Double ?? 0)
        #expect(itl > 0 && p50 > 0 && p50 <= p99 && p99 <= wall, "inter-token \(itl), p50 \(p50), p99 \(p99)")
        let perGroup = try #require(report.summary["per_" + groupKey] as? [[String: Any]])
        #expect(perGroup.compactMap { $0[groupKey] as? Int } == groups)
        #expect(perGroup.compactMap { $0["requests"] as? Int }.reduce(0, +) == requests)
    }
}
