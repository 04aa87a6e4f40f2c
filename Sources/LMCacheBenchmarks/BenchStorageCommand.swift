import ArgumentParser
import FoundationEssentials
import LMCacheCommandSupport
import LMCacheCore
import LMCacheStorage

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `lmcache bench storage`: put and get throughput of a tier against memcpy of the same bytes.
struct BenchStorageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "storage",
        abstract: "Store and read back KV chunks through a tier; compare with memcpy measured in the same run.",
        discussion: """
            Chunks are 256 tokens of an 18-layer, 1-KV-head, 256-dim model in float16 (4.5 MiB) unless \
            --layout/--dtype/--chunk-tokens say otherwise. put stores each chunk from a source buffer; get \
            looks each chunk up and copies it to a destination buffer, as an engine loading KV does. \
            Figures are medians over --iterations runs, in GB/s (10^9 bytes per second).

            cpu: the baseline is memcpy of the same bytes between the same buffers.
            disk (in local_disk when configured, else a temporary directory): the baseline is a plain \
            file of the same bytes, written and read sequentially; get_gbps and baseline_gbps are cold \
            reads (pages dropped from the page cache first), warm_get_gbps and warm_baseline_gbps \
            warm ones.
            lm: an lm:// server (remote_url, else one in process) through the remote tier, against \
            redis-server with raw SET/GET of the same bytes.
            redis: a Redis server (remote_url redis://, else redis-server on a free loopback port) \
            through the Redis tier in the configured redis_layout, against raw SET/GET of the same \
            bytes on one plain connection.
            """
    )

    enum Tier: String, ExpressibleByArgument, CaseIterable {
        case cpu
        case disk
        /// An `lm://` server through the remote tier, against redis-server (BenchStorageCommand+LMServer.swift).
        case lm
        /// A Redis server through the Redis tier, against raw GET/SET (BenchStorageCommand+Redis.swift).
        case redis
    }

    @Option(help: "The tier to measure: \(Tier.allCases.map(\.rawValue).joined(separator: ", ")).")
    var tier: Tier = .cpu

    @Option(help: "Bytes of KV to store and read back, in GiB.")
    var sizeGib: Double = 1

    @Option(help: "Layers, KV heads and head size of the KV layout.")
    var layout = "18x1x256"

    @Option(help: "KV dtype: float16, bfloat16 or float32.")
    var dtype = "float16"

    @Option(help: "Tokens per chunk.")
    var chunkTokens = 256

    @Option(help: "Runs to take the median of.")
    var iterations = 5

    @Flag(help: "Print one JSON object.")
    var json = false

    @Flag(
        name: .customLong("redis-cluster"),
        help: "With --tier redis and no redis-cluster:// remote_url: start a 3-master Redis Cluster for the run."
    )
    var redisCluster = false

    @OptionGroup var cache: CacheArguments

    func validate() throws {
        guard sizeGib > 0, sizeGib <= 64 else { throw ValidationError("--size-gib must be in (0, 64]") }
        guard chunkTokens > 0 else { throw ValidationError("--chunk-tokens must be positive") }
        guard iterations > 0 else { throw ValidationError("--iterations must be positive") }
    }

    func run() async throws {
        if tier == .lm { return try await runLMServer() }
        if tier == .redis { return try await runRedis() }
        let logger = CommandLogging.bootstrap(label: "lmcache.bench")
        let config = try cache.load(logger: logger).configuration
        let parts = layout.split(separator: "x").compactMap { Int($0) }
        guard parts.count == 3, parts.allSatisfy({ $0 > 0 }), let kvDType = KVDType(rawValue: dtype) else {
            throw ValidationError("--layout must be LAYERSxKV_HEADSxHEAD_DIM and --dtype float16, bfloat16 or float32")
        }
        let kvLayout = KVLayout(layers: parts[0], kvHeads: parts[1], headDim: parts[2], dtype: kvDType)
        let chunkBytes = kvLayout.byteCount(tokens: chunkTokens)
        let chunkCount = Int((sizeGib * Double(1 << 30) / Double(chunkBytes)).rounded(.up))
        let totalBytes = chunkCount * chunkBytes

        // Source and destination buffers, touched up front so no run pays page faults.
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: totalBytes, alignment: 4096)
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: totalBytes, alignment: 4096)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        for i in stride(from: 0, to: totalBytes - 7, by: 8) {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            source.storeBytes(of: seed, toByteOffset: i, as: UInt64.self)
        }
        memset(destination.baseAddress!, 0, totalBytes)

        // Chunk keys of one long synthetic prompt.
        let tokens = (0..<(chunkCount * chunkTokens)).map { Int32(truncatingIfNeeded: $0 &* 2_654_435_761 % 262_144) }
        let keyer = ChunkKeyer(
            model: ModelIdentity(name: "bench", fingerprint: "0"),
            layout: kvLayout,
            chunkSize: chunkTokens
        )
        let chunks = keyer.chunks(for: tokens)

        var report: [(String, String)] = []
        let gb = Double(totalBytes) / 1e9
        let buffers = Buffers(source: UnsafeRawBufferPointer(source), destination: destination, chunkBytes: chunkBytes)
        switch tier {
        case .cpu:
            // Room for every chunk: the benchmark measures copies, not eviction.
            let capacity = chunkCount * ((chunkBytes + 4095) / 4096 * 4096)
            let storageTier = try LocalCPUTier(capacity: capacity, policy: config.cachePolicy, prefault: true)
            var baseline: [Double] = []
            var puts: [Double] = []
            var gets: [Double] = []
            for _ in 0..<iterations {
                baseline.append(Self.seconds { buffers.copyAll() })
                buffers.clearDestination()
                storageTier.removeAll()
                puts.append(
                    Self.seconds {
                        for (index, chunk) in chunks.enumerated() {
                            storageTier.put(key: chunk.key, tokens: Array(tokens[chunk.range]), layout: kvLayout) {
                                $0.copyMemory(from: buffers.sourceChunk(index))
                            }
                        }
                    }
                )
                gets.append(
                    Self.seconds {
                        for (index, chunk) in chunks.enumerated() {
                            storageTier.get(chunk.key)?.withUnsafeBytes { buffers.copyOut($0, chunk: index) }
                        }
                    }
                )
                try buffers.verify()
            }
            report += [
                ("put_gbps", Self.format(gb / Self.median(puts))),
                ("get_gbps", Self.format(gb / Self.median(gets))),
                ("baseline", "\"memcpy\""),
                ("baseline_gbps", Self.format(gb / Self.median(baseline))),
                ("put_vs_baseline", Self.format(Self.median(baseline) / Self.median(puts))),
                ("get_vs_baseline", Self.format(Self.median(baseline) / Self.median(gets))),
            ]
        case .lm, .redis:
            preconditionFailure("measured by runLMServer() and runRedis()")
        case .disk:
            report += try DiskBenchmark(
                directory: config.localDisk,
                buffers: buffers,
                chunks: chunks,
                tokens: tokens,
                layout: kvLayout,
                iterations: iterations,
                directIO: config.localDiskDirectIO,
                fsync: config.localDiskFsync,
                logger: logger
            ).run()
        }

        // Hashing: chunk keys of a 32k-token prompt.
        let hashTokens = Array(tokens.prefix(32_768)) + Array(repeating: 1, count: max(0, 32_768 - tokens.count))
        let hashKeyer = ChunkKeyer(model: ModelIdentity(name: "bench", fingerprint: "0"), layout: kvLayout)
        var hashRuns: [Double] = []
        var sink = 0
        for _ in 0..<max(iterations, 20) {
            hashRuns.append(Self.seconds { sink &+= hashKeyer.chunks(for: hashTokens).count })
        }
        precondition(sink > 0)

        let hashNs = Self.median(hashRuns) * 1e9 / Double(hashTokens.count)
        report =
            [
                ("tier", "\"\(tier.rawValue)\""),
                ("bytes", "\(totalBytes)"),
                ("chunk_bytes", "\(chunkBytes)"),
                ("chunks", "\(chunkCount)"),
                ("iterations", "\(iterations)"),
            ] + report + [
                ("hash_ns_per_token", Self.format(hashNs)),
                ("hash_32k_tokens_us", Self.format(hashNs * 32_768 / 1000)),
            ]
        if json {
            print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } else {
            for (key, value) in report { print("\(key.padded(to: 20)) \(value)") }
        }
    }

    static func seconds(_ body: () -> Void) -> Double {
        let clock = ContinuousClock()
        let elapsed = clock.measure(body)
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    static func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1
            ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    static func format(_ value: Double) -> String {
        let scaled = (value * 1000).rounded() / 1000
        return "\(scaled)"
    }
}
