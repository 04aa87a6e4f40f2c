import Foundation
import LMCacheCore
import LMCacheTestSupport
import Testing

/// Runs the built `lmcache` executable, as a user would.
enum LMCacheExecutable {
    /// The `lmcache` binary next to the test bundle in the build directory.
    static var url: URL { builtExecutable("lmcache") }

    struct Output: Sendable {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// ``run(_:environment:)`` from an async test: the wait happens on a thread of its own, not on one
    /// of the cooperative threads that the other tests (and in-process servers) need.
    static func runAsync(_ arguments: [String], environment: [String: String] = [:]) async throws -> Output {
        try await onOwnThread { try run(arguments, environment: environment) }
    }

    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Output {
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("LMCACHE_") }
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus,
            stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self)
        )
    }
}

@Suite("lmcache command line")
struct CLITests {
    static let tokens = (0..<1000).map { Int32(($0 * 7919 + 13) % 262_144) }

    @Test("two processes compute the same chunk keys, equal to the library's")
    func keysAcrossProcesses() async throws {
        let arguments = [
            "inspect", "keys", "--tokens", Self.tokens.map(String.init).joined(separator: ","),
            "--model-name", "gemma-3-270m", "--fingerprint", "abc", "--layout", "18x1x256", "--salt", "t1",
        ]
        let first = try await LMCacheExecutable.runAsync(arguments)
        let second = try await LMCacheExecutable.runAsync(arguments)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == second.stdout)
        let lines = first.stdout.split(separator: "\n")
        #expect(lines.count == 3)  // 1000 tokens: three full 256-token chunks, the tail is not keyed.
        let keyer = ChunkKeyer(
            model: ModelIdentity(name: "gemma-3-270m", fingerprint: "abc"),
            layout: KVLayout(layers: 18, kvHeads: 1, headDim: 256, dtype: .float16),
            salt: "t1"
        )
        let expected = keyer.chunks(for: Self.tokens).map {
            "\($0.range.lowerBound)\t\($0.range.upperBound)\t\($0.key)"
        }
        #expect(lines.map(String.init) == expected)
        // The environment reaches the keyer: save_unfull_chunk keys the tail too.
        let unfull = try await LMCacheExecutable.runAsync(arguments, environment: ["LMCACHE_SAVE_UNFULL_CHUNK": "true"])
        #expect(unfull.stdout.split(separator: "\n").count == 4)
    }

    @Test("lmcache config shows each value's source: file < environment < --set")
    func configLayers() async throws {
        let path = FileManager.default.temporaryDirectory.appending(path: "lmcache-cli-\(getpid()).yaml").path
        try "chunk_size: 512\ncache_policy: LFU\nmax_local_cpu_size: 2\n".write(
            toFile: path,
            atomically: false,
            encoding: .utf8
        )
        let result = try await LMCacheExecutable.runAsync(
            ["config", "--json", "--set", "chunk_size=64"],
            environment: ["LMCACHE_CONFIG_FILE": path, "LMCACHE_CACHE_POLICY": "FIFO"]
        )
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: [String: String]]
        let config = try #require(object)
        #expect(config["chunk_size"] == ["value": "64", "source": "command line"])
        #expect(config["cache_policy"] == ["value": "FIFO", "source": "environment LMCACHE_CACHE_POLICY"])
        #expect(config["max_local_cpu_size"] == ["value": "2.0", "source": "file \(path)"])
        #expect(config["local_cpu"]?["source"] == "default")
    }

    @Test("a bad value exits non-zero with a message naming key, value and source")
    func badValue() async throws {
        let result = try await LMCacheExecutable.runAsync(["config"], environment: ["LMCACHE_MAX_LOCAL_CPU_SIZE": "-1"])
        #expect(result.status != 0)
        #expect(
            result.stderr.contains("max_local_cpu_size") && result.stderr.contains("\"-1\"")
                && result.stderr.contains("LMCACHE_MAX_LOCAL_CPU_SIZE")
        )
        let typo = try await LMCacheExecutable.runAsync(["config", "--set", "chunk_sise=3"])
        #expect(typo.status != 0 && typo.stderr.contains("did you mean chunk_size"))
    }

    @Test("bench storage prints the documented JSON fields and reads back exact bytes")
    func benchStorage() async throws {
        let result = try await LMCacheExecutable.runAsync([
            "bench", "storage", "--tier", "cpu", "--json", "--size-gib", "0.02",
            "--iterations", "1",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["tier"] as? String == "cpu")
        #expect(object["baseline"] as? String == "memcpy")
        for field in ["put_gbps", "get_gbps", "baseline_gbps", "hash_ns_per_token"] {
            let value = try #require(object[field] as? Double, "\(field) missing")
            #expect(value > 0)
        }
    }
}

@Suite("lmcache bench storage --tier disk")
struct BenchDiskTests {
    @Test("prints cold and warm figures against a plain file and reads back exact bytes")
    func benchDisk() async throws {
        let result = try await LMCacheExecutable.runAsync([
            "bench", "storage", "--tier", "disk", "--json", "--size-gib", "0.02",
            "--iterations", "1",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(object["tier"] as? String == "disk")
        #expect(object["baseline"] as? String == "sequential read of a plain file")
        for field in ["put_gbps", "get_gbps", "warm_get_gbps", "baseline_gbps", "warm_baseline_gbps"] {
            let value = try #require(object[field] as? Double, "\(field) missing")
            #expect(value > 0)
        }
    }
}
