import ArgumentParser
import FoundationEssentials
import LMCacheCommandSupport
import LMCacheCore
import LMCacheRemote
import LMCacheServer
import LMCacheStorage
import LMCacheWire
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `lmcache bench storage --tier lm`: the `lm://` server and its tier against redis-server.
///
/// The same chunks go through (1) our remote tier (frames with tokens and checksum, one
/// connection), (2) raw `lm://` PUT/GET of the chunk bytes, and (3) raw SET/GET of the same
/// bytes on a redis-server started on loopback for the run, all from this process, one request
/// at a time. Reads copy each value out to a destination buffer, as an engine loading KV does.
/// The server is `remote_url` when the configuration names an `lm://` one, else an in-process
/// server on a free loopback port.
extension BenchStorageCommand {
    func runLMServer() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.bench")
        let config = try cache.load(logger: logger).configuration
        let parts = layout.split(separator: "x").compactMap { Int($0) }
        guard parts.count == 3, parts.allSatisfy({ $0 > 0 }), let kvDType = KVDType(rawValue: dtype) else {
            throw ValidationError("--layout must be LAYERSxKV_HEADSxHEAD_DIM and --dtype float16, bfloat16 or float32")
        }
        let kvLayout = KVLayout(layers: parts[0], kvHeads: parts[1], headDim: parts[2], dtype: kvDType)
        let chunkBytes = kvLayout.byteCount(tokens: chunkTokens)
        let chunkCount = max(1, Int((sizeGib * Double(1 << 30) / Double(chunkBytes)).rounded(.up)))
        let totalBytes = chunkCount * chunkBytes

        let tokens = (0..<(chunkCount * chunkTokens)).map { Int32(truncatingIfNeeded: $0 &* 2_654_435_761 % 262_144) }
        let keyer = ChunkKeyer(
            model: ModelIdentity(name: "bench", fingerprint: "0"),
            layout: kvLayout,
            chunkSize: chunkTokens
        )
        var seed: UInt64 = 0x9e37_79b9_7f4a_7c15
        let chunks: [KVChunk] = keyer.chunks(for: tokens).map { keyed in
            let storage = HeapChunkStorage(count: chunkBytes) { bytes in
                for i in stride(from: 0, to: chunkBytes - 7, by: 8) {
                    seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    bytes.storeBytes(of: seed, toByteOffset: i, as: UInt64.self)
                }
            }
            return KVChunk(key: keyed.key, tokens: Array(tokens[keyed.range]), layout: kvLayout, storage: storage)
        }
        let values: [ByteBuffer] = chunks.map { chunk in chunk.withUnsafeBytes { ByteBuffer(bytes: $0) } }
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: totalBytes, alignment: 4096)
        defer { destination.deallocate() }
        memset(destination.baseAddress!, 0, totalBytes)

        let redis = try RedisProcess.start(logger: logger)
        defer { redis?.stop() }

        let endpoint = config.remoteURL.flatMap { $0.scheme == "lm" ? $0.endpoints.first : nil }
        // The in-process server is measured as `lmcache server --prefault` runs: its value pool
        // touched once at start, so that PUTs measure the protocol and the copy, not page faults.
        var serverConfiguration = LMServerConfiguration(
            host: "127.0.0.1",
            port: 0,
            capacityBytes: 2 * totalBytes + (256 << 20),
            maximumValueBytes: chunkBytes + (1 << 20)
        )
        serverConfiguration.prefaultMemory = true
        let server = endpoint == nil ? LMServer(configuration: serverConfiguration, logger: logger) : nil

        let report: [(String, String)] = try await withThrowingTaskGroup(of: Void.self) { group in
            if let server { group.addTask { try await server.run() } }
            defer { group.cancelAll() }
            let host = endpoint?.host ?? "127.0.0.1"
            let port = try await server?.listeningPort() ?? endpoint!.port
            var options = LMServerTier.Options()
            options.connections = 1
            options.maximumValueBytes = chunkBytes + (1 << 20)
            options.requestTimeout = .seconds(60)
            let tier = LMServerTier(host: host, port: port, options: options, logger: logger)
            guard await tier.isHealthy() else { throw CommandFailure("no lm:// server answers at \(host):\(port)") }
            var redisClient: RedisClient?
            if let redis {
                var options = RedisClient.Options()
                options.connections = 1
                options.requestTimeout = .seconds(60)
                redisClient = RedisClient(host: "127.0.0.1", port: redis.port, options: options, logger: logger)
            }

            func copyOut(_ index: Int, _ bytes: UnsafeRawBufferPointer) {
                precondition(bytes.count == chunkBytes, "a value of \(bytes.count) bytes came back")
                memcpy(destination.baseAddress! + index * chunkBytes, bytes.baseAddress!, chunkBytes)
            }
            func verify(_ what: String) throws {
                for (index, chunk) in chunks.enumerated() {
                    let same = chunk.withUnsafeBytes {
                        memcmp($0.baseAddress!, destination.baseAddress! + index * chunkBytes, chunkBytes) == 0
                    }
                    guard same else { throw CommandFailure("\(what): bytes read back differ from bytes stored") }
                }
                memset(destination.baseAddress!, 0, totalBytes)
            }

            // Keys LMCache's own server can parse (model@world_size@worker_id@hex_hash@dtype).
            func rawKey(_ iteration: Int, _ index: Int) -> String {
                "bench-raw@1@0@\(String(iteration << 32 | index, radix: 16))@half"
            }
            var tierPut: [Double] = []
            var tierGet: [Double] = []
            var tierBatchGet: [Double] = []
            var rawPut: [Double] = []
            var rawGet: [Double] = []
            var rawConcurrentGet: [Double] = []
            var redisPut: [Double] = []
            var redisGet: [Double] = []
            for iteration in 0..<iterations {
                // Our tier: frames with tokens and checksum. A HEALTH round trip ends each put phase,
                // so every PUT (which has no reply) has been handled.
                tierPut.append(
                    try await Self.seconds {
                        for chunk in chunks {
                            guard try await tier.put(chunk) else { throw CommandFailure("put declined") }
                        }
                        _ = await tier.isHealthy()
                    }
                )
                tierGet.append(
                    try await Self.seconds {
                        for (index, chunk) in chunks.enumerated() {
                            guard let hit = try await tier.get(chunk.key) else { throw CommandFailure("lm tier: miss") }
                            hit.withUnsafeBytes { copyOut(index, $0) }
                        }
                    }
                )
                try verify("lm tier")
                // Batched: every chunk asked for at once, each copied out as it arrives.
                tierBatchGet.append(
                    try await Self.seconds {
                        let base = UInt(bitPattern: destination.baseAddress)
                        let received = Mutex(0)
                        await tier.get(chunks.map(\.key)) { index, hit in
                            hit.withUnsafeBytes {
                                _ = memcpy(UnsafeMutableRawPointer(bitPattern: base)! + index * chunkBytes, $0.baseAddress!, chunkBytes)
                            }
                            received.withLock { $0 += 1 }
                        }
                        guard received.withLock({ $0 }) == chunks.count else { throw CommandFailure("lm tier batch: miss") }
                    }
                )
                try verify("lm tier batch")

                // Raw values over lm://.
                rawPut.append(
                    try await Self.seconds {
                        for (index, value) in values.enumerated() {
                            guard await tier.putRaw(rawKey(iteration, index), value) else {
                                throw CommandFailure("raw put failed")
                            }
                        }
                        _ = await tier.isHealthy()
                    }
                )
                rawGet.append(
                    try await Self.seconds {
                        for index in values.indices {
                            guard let hit = await tier.getRaw(rawKey(iteration, index)) else {
                                throw CommandFailure("lm raw: miss")
                            }
                            hit.withUnsafeBytes { copyOut(index, $0) }
                        }
                    }
                )
                try verify("lm raw")
                // Raw values with as many GETs in flight as the tier's batch keeps (eight).
                rawConcurrentGet.append(
                    try await Self.seconds {
                        let base = UInt(bitPattern: destination.baseAddress)
                        try await withThrowingTaskGroup(of: Void.self) { group in
                            for start in Swift.stride(from: 0, to: values.count, by: 8) {
                                for index in start..<min(start + 8, values.count) {
                                    group.addTask {
                                        guard let hit = await tier.getRaw(rawKey(iteration, index)) else {
                                            throw CommandFailure("lm raw: miss")
                                        }
                                        hit.withUnsafeBytes {
                                            _ = memcpy(UnsafeMutableRawPointer(bitPattern: base)! + index * chunkBytes, $0.baseAddress!, chunkBytes)
                                        }
                                    }
                                }
                                try await group.waitForAll()
                            }
                        }
                    }
                )
                try verify("lm raw concurrent")

                // The same raw values on redis-server.
                if let redisClient {
                    redisPut.append(
                        try await Self.seconds {
                            for (index, value) in values.enumerated() {
                                let command = RESPCommand([
                                    ByteBuffer(string: "SET"), ByteBuffer(string: rawKey(iteration, index)), value,
                                ])
                                guard try await redisClient.send(command) == .simpleString("OK") else {
                                    throw CommandFailure("redis: SET failed")
                                }
                            }
                        }
                    )
                    redisGet.append(
                        try await Self.seconds {
                            for index in values.indices {
                                guard
                                    case .bulkString(let hit?) = try await redisClient.send(
                                        RESPCommand("GET", rawKey(iteration, index))
                                    )
                                else {
                                    throw CommandFailure("redis: miss")
                                }
                                hit.withUnsafeReadableBytes { copyOut(index, $0) }
                            }
                        }
                    )
                    try verify("redis")
                    _ = try await redisClient.send(RESPCommand("FLUSHALL"))
                }
            }
            await redisClient?.close()
            await tier.close()

            let gb = Double(totalBytes) / 1e9
            func gbps(_ runs: [Double]) -> Double { runs.isEmpty ? .nan : gb / Self.median(runs) }
            var report: [(String, String)] = [
                ("tier", "\"lm\""),
                ("server", endpoint == nil ? "\"in-process\"" : "\"\(host):\(port)\""),
                ("bytes", "\(totalBytes)"),
                ("chunk_bytes", "\(chunkBytes)"),
                ("chunks", "\(chunkCount)"),
                ("iterations", "\(iterations)"),
                ("put_gbps", Self.format(gbps(tierPut))),
                ("get_gbps", Self.format(gbps(tierGet))),
                ("raw_put_gbps", Self.format(gbps(rawPut))),
                ("raw_get_gbps", Self.format(gbps(rawGet))),
                ("batch_get_gbps", Self.format(gbps(tierBatchGet))),
                ("raw_concurrent_get_gbps", Self.format(gbps(rawConcurrentGet))),
                ("batch_get_vs_raw_concurrent", Self.format(gbps(tierBatchGet) / gbps(rawConcurrentGet))),
                ("baseline", redisClient == nil ? "null" : "\"redis-server\""),
            ]
            if redisClient != nil {
                report += [
                    ("baseline_put_gbps", Self.format(gbps(redisPut))),
                    ("baseline_get_gbps", Self.format(gbps(redisGet))),
                    ("get_vs_baseline", Self.format(gbps(tierGet) / gbps(redisGet))),
                    ("raw_get_vs_baseline", Self.format(gbps(rawGet) / gbps(redisGet))),
                    ("put_vs_baseline", Self.format(gbps(tierPut) / gbps(redisPut))),
                ]
            }
            return report
        }
        if json {
            print("{" + report.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
        } else {
            for (key, value) in report { print("\(key.padded(to: 20)) \(value)") }
        }
    }

    static func seconds(_ body: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        try await body()
        let elapsed = ContinuousClock.now - start
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}

/// A redis-server started for the benchmark on a free loopback port, without persistence.
struct RedisProcess {
    let pid: pid_t
    let port: Int

    /// Starts `redis-server` from the PATH; `nil` (with a warning) when there is none.
    static func start(logger: Logger, port: Int? = nil, extraArguments: [String] = []) throws -> RedisProcess? {
        let searchPath = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/usr/local/bin"
        let candidates: [String] = searchPath.split(separator: ":").map { "\($0)/redis-server" }
        let path = candidates.first { access($0, X_OK) == 0 }
        guard let path else {
            logger.warning("redis-server not found; no baseline (install Debian's redis-server)")
            return nil
        }
        let port = try port ?? freePort()
        let arguments =
            [
                path, "--port", "\(port)", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--loglevel", "warning", "--proto-max-bulk-len", "1gb",
                "--client-output-buffer-limit", "normal 0 0 0",
            ] + extraArguments
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, nil, nil, &argv, environ)
        guard status == 0 else { throw CommandFailure("cannot start redis-server: error \(status)") }
        let process = RedisProcess(pid: pid, port: port)
        // Wait until it accepts connections.
        for _ in 0..<200 {
            if canConnect(port: port) { return process }
            usleep(25_000)
        }
        process.stop()
        throw CommandFailure("redis-server did not start listening on port \(port)")
    }

    func stop() {
        // SIGKILL: the server keeps nothing, and a child spawned from a thread that blocks SIGTERM
        // (the signal mask is inherited) would never see a SIGTERM, leaving waitpid waiting.
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else { throw CommandFailure("cannot find a free port") }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs `redis-cli ARGUMENTS` from the PATH, output discarded; returns its exit status.
    static func runCLI(_ arguments: [String]) throws -> Int32 {
        let searchPath = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/usr/local/bin"
        let candidates: [String] = searchPath.split(separator: ":").map { "\($0)/redis-cli" }
        guard let path = candidates.first(where: { access($0, X_OK) == 0 })
        else { throw CommandFailure("redis-cli not found (install Debian's redis-tools)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, &actions, nil, &argv, environ)
        guard status == 0 else { throw CommandFailure("cannot start redis-cli: error \(status)") }
        var exit: Int32 = 0
        waitpid(pid, &exit, 0)
        return (exit >> 8) & 0xFF
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
