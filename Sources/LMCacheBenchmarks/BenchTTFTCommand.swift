import ArgumentParser
import Foundation
import GGUF
import Inference
import LMCacheCommandSupport
import LMCacheConnector
import LMCacheCore
import LMCacheRemote
import LMCacheServing
import LMCacheServer
import LMCacheStorage
import Logging
import OpenAIServer
import ServiceLifecycle
import Tokenizers

/// `lmcache bench ttft`: time to first token through `lmcache serve`'s HTTP API, cold against warm.
struct BenchTTFTCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ttft",
        abstract: "Time to first token through the HTTP server: cold (nothing cached) against warm (prefix cached).",
        discussion: """
            Two servers run in this process on free loopback ports, as `lmcache serve` runs them: one with \
            the cache on the chosen tier and one with the cache off. A client streams POST /v1/completions \
            over real HTTP and times the first token. The prompt is N tokens of real text (the license \
            texts in /usr/share/common-licenses) followed by a question.

            cold_s: the prompt with a fresh cache_salt, so nothing is cached. warm_s: the same text with \
            another question, same salt, after the cold run's KV was stored. off_s: the cold prompt on the \
            cache-off server (no reuse: cache_overhead = cold_s / off_s - 1). Figures are medians over \
            --runs runs; runs alternate between the three requests.

            Tiers (the warm hit comes from that tier only; the CPU tier is off for the others):
            engine: the engine's own memory (the cold request's KV kept after it finished, taken over at \
            token granularity, as `lmcache serve` does by default; the CPU tier is on behind it). \
            cpu: the CPU tier (the engine keeps nothing, so the hit is a load from the tier). disk: the disk tier in local_disk (else a temporary directory). \
            lm: the lm:// server in remote_url, else one started in this process. \
            redis: the Redis server in remote_url (redis://HOST:PORT), else redis-server started on a free \
            loopback port (it must be on the PATH).

            Baselines measured in the same run: memcpy_s, a memcpy of loaded_bytes between pre-faulted \
            buffers, and decode_step_s, the time between the warm run's first and second streamed tokens. \
            goal_s = 2 × memcpy_s + decode_step_s.
            """
    )

    enum Tier: String, ExpressibleByArgument, CaseIterable {
        case engine, cpu, disk, lm, redis
    }

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Prompt lengths in tokens (the cached text), comma-separated, e.g. 1024,4096,8192,16384.")
    var tokens = "8192"

    @Option(help: "The tier the warm run loads from: \(Tier.allCases.map(\.rawValue).joined(separator: ", ")).")
    var tier: Tier = .cpu

    @Option(help: "Runs to take the median of, per prompt length.")
    var runs = 3

    @Flag(help: "Print one JSON object per prompt length.")
    var json = false

    @OptionGroup var cache: CacheArguments

    var sizes: [Int] { tokens.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func validate() throws {
        let parts = tokens.split(separator: ",")
        guard !parts.isEmpty, sizes.count == parts.count, sizes.allSatisfy({ $0 >= 16 }) else {
            throw ValidationError("--tokens must be a comma-separated list of lengths of at least 16 tokens")
        }
        guard runs > 0 else { throw ValidationError("--runs must be positive") }
    }

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.bench")
        var configuration = try cache.load(logger: logger).configuration
        let (file, model, _) = try modelArguments.load()
        let tokenizer = try makeTokenizer(from: file)
        let context = model.configuration.contextLength
        guard let longest = sizes.max(), longest + 64 < context else {
            throw ValidationError("--tokens must leave room for a question within the model's context of \(context)")
        }
        let engineLayout = model.kvLayout
        let bytesPerToken = KVLayout(
            layers: engineLayout.layers,
            kvHeads: engineLayout.kvHeads,
            headDim: engineLayout.headDim,
            dtype: KVConnector.losslessDType
        ).byteCount(tokens: 1)
        // Room for three prompts of the longest length (older runs' entries are evicted, never needed again).
        let budgetGiB = Double(3 * (longest + 512) * bytesPerToken) / Double(1 << 30) + 0.25

        let setup = try TierSetup(tier: tier, configuration: configuration, budgetGiB: budgetGiB, logger: logger)
        defer { setup.stop() }
        configuration = setup.configuration
        let name = URL(fileURLWithPath: modelArguments.model).deletingPathExtension().lastPathComponent
        let engineCache = try ServingCache.Plan(configuration: configuration, logger: logger)
            .build(model: model, tokenizer: tokenizer, name: name).cache
        let (storage, connector) = (engineCache.storage, engineCache.prefix)
        // Only the engine tier keeps finished requests' KV; the others measure loads from their tier.
        let limits = SchedulerLimits(keptKVTokens: tier == .engine ? SchedulerLimits().keptKVTokens : 0)
        let cached = OpenAIServer(
            engine: GenerationEngine(model: model, tokenizer: tokenizer, connector: connector, limits: limits),
            storage: storage,
            configuration: .init(host: "127.0.0.1", port: 0, modelName: name),
            logger: logger
        )
        let uncached = OpenAIServer(
            engine: GenerationEngine(model: model, tokenizer: tokenizer),
            configuration: .init(host: "127.0.0.1", port: 0, modelName: name),
            logger: logger
        )
        let tierName = setup.tierName
        let server = setup.serverDescription
        let sizes = self.sizes
        let runs = self.runs
        let json = self.json
        let text = SampleText.text(characters: 6 * longest + 4096)
        let textTokens = tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        try await withInProcessServers(cached, uncached, storage: storage, lmServer: setup.lmServer, logger: logger) {
            onPort,
            offPort in
            for size in sizes {
                let measurement = try await Measurement(
                    document: tokenizer.decode(Array(textTokens.prefix(size - 1))),
                    runs: runs,
                    storage: storage,
                    connector: connector,
                    tierName: tierName,
                    onPort: onPort,
                    offPort: offPort,
                    tokenizer: tokenizer
                ).run()
                var report: [(String, String)] = [
                    ("tier", "\"\(tierName)\""), ("server", "\"\(server)\""), ("tokens", "\(size)"),
                ]
                report += measurement
                if json {
                    print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
                } else {
                    for (key, value) in report { print("\(key.padded(to: 20)) \(value)") }
                    print("")
                }
            }
        }
    }

    /// Runs both servers (and the storage's write-behind) around `body`, then shuts them down.
    private func withInProcessServers(
        _ cached: OpenAIServer,
        _ uncached: OpenAIServer,
        storage: StorageManager,
        lmServer: LMServer?,
        logger: Logger,
        _ body: (Int, Int) async throws -> Void
    ) async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: (Int, Int).self)
        let on = cached.makeApplication { continuation.yield((0, $0)) }
        let off = uncached.makeApplication { continuation.yield((1, $0)) }
        let services = ServiceGroup(services: [on, off] + (lmServer.map { [$0] } ?? []), logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            group.addTask { await storage.run() }
            _ = try await lmServer?.listeningPort()
            var bound: [Int: Int] = [:]
            for await (which, port) in ports {
                bound[which] = port
                if bound.count == 2 { break }
            }
            guard let onPort = bound[0], let offPort = bound[1] else {
                throw CommandFailure("the servers did not start")
            }
            let outcome: Result<Void, any Error>
            do {
                try await body(onPort, offPort)
                outcome = .success(())
            } catch {
                outcome = .failure(error)
            }
            // The servers stop gracefully (the first child to finish); then the write-behind is cancelled.
            await services.triggerGracefulShutdown()
            _ = try await group.next()
            group.cancelAll()
            try outcome.get()
        }
    }
}

/// The runs for one prompt length: cold, warm and cache-off requests, alternated, then baselines.
private struct Measurement {
    let document: String
    let runs: Int
    let storage: StorageManager
    let connector: KVConnector
    let tierName: String
    let onPort: Int
    let offPort: Int
    let tokenizer: any Tokenizer

    static let questions = [
        "Summarize the text above in one sentence.",
        "Which obligations does the text above place on someone who distributes copies?",
    ]

    func run() async throws -> [(String, String)] {
        func request(_ question: Int, salt: String?, port: Int) async throws -> StreamedCompletion {
            var body: [String: Any] = [
                "prompt": document + "\n\nQuestion: \(Self.questions[question])\nAnswer:",
                "max_tokens": 4,
                "temperature": 0,
            ]
            if let salt { body["cache_salt"] = salt }
            return try await StreamingCompletionClient.complete(host: "127.0.0.1", port: port, body: body)
        }
        var cold: [Double] = []
        var warm: [Double] = []
        var off: [Double] = []
        var gaps: [Double] = []
        var loadedTokens: [Int] = []
        var promptTokens = 0
        var lastSalt = ""
        let nonce = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        for run in 0..<runs {
            let salt = "bench-ttft-\(nonce)-\(document.count)-\(run)"
            let first = try await request(0, salt: salt, port: onPort)
            guard first.cachedTokens == 0 else {
                throw CommandFailure("a cold run loaded \(first.cachedTokens) tokens from the cache")
            }
            cold.append(first.timeToFirstToken)
            // The cold run's chunks reach the slower tiers by write-behind: wait for it.
            await storage.flush()
            let hitsBefore = storage.statistics.hits[tierName, default: 0]
            let second = try await request(1, salt: salt, port: onPort)
            let hits = storage.statistics.hits[tierName, default: 0] - hitsBefore
            // The engine tier's hits are kept sequences, not storage hits.
            guard second.cachedTokens > 0, hits > 0 || tierName == BenchTTFTCommand.Tier.engine.rawValue else {
                throw CommandFailure(
                    "the warm run loaded \(second.cachedTokens) tokens, \(hits) chunks from the \(tierName) tier"
                )
            }
            warm.append(second.timeToFirstToken)
            if let gap = second.secondTokenGap { gaps.append(gap) }
            loadedTokens.append(second.cachedTokens)
            promptTokens = second.promptTokens
            off.append(try await request(0, salt: nil, port: offPort).timeToFirstToken)
            lastSalt = salt
        }
        await storage.flush()

        // The bytes a warm run loads: from the chunks the cache holds for the document.
        let loaded = loadedTokens.min() ?? 0
        let lookup = await connector.lookup(
            tokenizer.encode(document, addSpecial: true, parseSpecial: false),
            salt: lastSalt
        )
        let loadedBytes = lookup.hitTokens == 0 ? 0 : lookup.hitBytes / lookup.hitTokens * loaded

        let memcpySeconds = Self.memcpySeconds(bytes: loadedBytes)
        let median = BenchStorageCommand.median
        let format = BenchStorageCommand.format
        let decodeStep = gaps.isEmpty ? Double.nan : median(gaps)
        let goal = 2 * memcpySeconds + decodeStep
        let (coldS, warmS, offS) = (median(cold), median(warm), median(off))
        return [
            ("prompt_tokens", "\(promptTokens)"),
            ("runs", "\(runs)"),
            ("cold_s", format6(coldS)),
            ("warm_s", format6(warmS)),
            ("speedup", format(coldS / warmS)),
            ("loaded_tokens", "\(loaded)"),
            ("loaded_bytes", "\(loadedBytes)"),
            ("memcpy_s", format6(memcpySeconds)),
            ("memcpy_gbps", format(Double(loadedBytes) / 1e9 / memcpySeconds)),
            ("decode_step_s", format6(decodeStep)),
            ("goal_s", format6(goal)),
            ("warm_vs_goal", format(warmS / goal)),
            ("meets_goal", warmS <= goal ? "true" : "false"),
            ("off_s", format6(offS)),
            ("cache_overhead", format(coldS / offS - 1)),
            ("cold_runs_s", "[" + cold.map(format6).joined(separator: ", ") + "]"),
            ("warm_runs_s", "[" + warm.map(format6).joined(separator: ", ") + "]"),
            ("off_runs_s", "[" + off.map(format6).joined(separator: ", ") + "]"),
        ]
    }

    private func format6(_ value: Double) -> String {
        value.isFinite ? "\((value * 1e6).rounded() / 1e6)" : "null"
    }

    /// The median time of a memcpy of `bytes` between two pre-faulted buffers.
    static func memcpySeconds(bytes: Int) -> Double {
        guard bytes > 0 else { return 0 }
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes, alignment: 4096)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        memset(source.baseAddress!, 1, bytes)
        memset(destination.baseAddress!, 0, bytes)
        let buffers = Buffers(source: UnsafeRawBufferPointer(source), destination: destination, chunkBytes: bytes)
        return BenchStorageCommand.median((0..<7).map { _ in BenchStorageCommand.seconds { buffers.copyAll() } })
    }
}

/// Where the benchmark's cache lives: the configuration that keeps only the measured tier, and
/// whatever was started for it (an `lm://` server, redis-server, a temporary directory).
private struct TierSetup {
    var configuration: LMCacheConfiguration
    /// The tier's name in the storage statistics.
    let tierName: String
    /// Where the tier's data lives, for the report.
    var serverDescription = "in-process"
    /// An `lm://` server to run in this process, listening on `configuration.remoteURL`.
    var lmServer: LMServer?
    private var redis: RedisProcess?
    private var temporaryDirectory: String?

    init(
        tier: BenchTTFTCommand.Tier,
        configuration given: LMCacheConfiguration,
        budgetGiB: Double,
        logger: Logger
    ) throws {
        configuration = given
        tierName = tier.rawValue
        configuration.localCPU = tier == .cpu || tier == .engine
        configuration.maxLocalCPUSize = tier == .cpu || tier == .engine ? budgetGiB : 0
        if tier != .disk { configuration.localDisk = nil }
        if tier != .lm && tier != .redis { configuration.remoteURL = nil }
        switch tier {
        case .cpu, .engine:
            break
        case .disk:
            if configuration.localDisk == nil {
                var template = "/tmp/lmcache-bench-ttft-XXXXXX".utf8CString
                guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
                    throw CommandFailure("cannot create a temporary directory")
                }
                temporaryDirectory = String(cString: made)
                configuration.localDisk = temporaryDirectory
            }
            configuration.maxLocalDiskSize = budgetGiB
            serverDescription = configuration.localDisk!
        case .lm:
            if let url = configuration.remoteURL, url.scheme == "lm" {
                serverDescription = "\(url)"
            } else {
                let port = try RedisProcess.freePort()
                lmServer = LMServer(
                    configuration: LMServerConfiguration(
                        host: "127.0.0.1",
                        port: port,
                        capacityBytes: Int(budgetGiB * Double(1 << 30))
                    ),
                    logger: logger
                )
                configuration.remoteURL = try RemoteURL(parsing: "lm://127.0.0.1:\(port)")
            }
        case .redis:
            if let url = configuration.remoteURL, url.scheme == "redis" {
                serverDescription = "\(url)"
            } else {
                guard let started = try RedisProcess.start(logger: logger) else {
                    throw CommandFailure(
                        "redis-server is not on the PATH: install it or set remote_url redis://HOST:PORT"
                    )
                }
                redis = started
                configuration.remoteURL = try RemoteURL(parsing: "redis://127.0.0.1:\(started.port)")
                serverDescription = "redis-server on loopback"
            }
        }
    }

    func stop() {
        redis?.stop()
        if let temporaryDirectory { try? FileManager.default.removeItem(atPath: temporaryDirectory) }
    }
}
