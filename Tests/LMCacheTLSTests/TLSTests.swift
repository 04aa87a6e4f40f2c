import Foundation
import LMCacheCore
import LMCacheP2P
import LMCacheRemote
import LMCacheServer
import LMCacheStorage
import LMCacheTLS
import LMCacheTestSupport
import LMCacheWire
import Logging
import NIOCore
import Testing

/// TLS and the shared access token over real sockets: our `lm://` server and remote tier, and
/// Debian's `redis-server` with its own TLS, all with certificates made at test time.
@Suite(.enabled(if: TestCertificates.isAvailable, "needs the openssl command"))
struct TLSTests {
    static let layout = KVLayout(layers: 2, kvHeads: 2, headDim: 8, dtype: .float16)

    static func chunk(_ index: Int) -> KVChunk { SyntheticChunks.chunk(index, tokens: 16, layout: layout) }

    static func options(security: ConnectionSecurity? = nil, token: String? = nil) -> LMServerTier.Options {
        var options = LMServerTier.Options()
        options.connections = 1
        options.connectTimeout = .seconds(5)
        options.requestTimeout = .seconds(20)
        options.minimumBackoff = .milliseconds(10)
        options.maximumBackoff = .milliseconds(50)
        options.security = security
        options.token = token
        return options
    }

    /// Runs an `lm://` server on a free loopback port for the duration of `body`.
    func withServer<R: Sendable>(
        security: ConnectionSecurity? = nil,
        token: String? = nil,
        logger: Logger = Logger(label: "test.server"),
        _ body: @Sendable (Int) async throws -> R
    ) async throws -> R {
        var configuration = LMServerConfiguration(host: "127.0.0.1", port: 0, capacityBytes: 64 << 20)
        configuration.accessToken = token
        configuration.stallTimeout = .seconds(5)
        let server = LMServer(configuration: configuration, security: security, logger: logger)
        return try await withRunningServices([server], logger: Logger(label: "test.services")) {
            try await body(try await server.listeningPort())
        }
    }

    /// Stores chunks through `tier` and reads them back; `true` when every one came back intact.
    static func roundTrips(_ tier: any StorageTier, _ indices: Range<Int>) async throws -> Bool {
        // A tier that cannot connect answers with a miss. On a loaded machine (a sanitizer build,
        // other suites beside it) a TLS handshake can outlast the tiers' 1-s connect timeout, so a
        // miss is tried again for a while; a link that never works still fails, and bytes that come
        // back must be the chunk's.
        for i in indices {
            guard await eventually(timeout: .seconds(30), { (try? await tier.put(chunk(i))) == true }) else {
                return false
            }
        }
        for i in indices {
            var back: KVChunk?
            guard await eventually(timeout: .seconds(30), {
                back = try? await tier.get(chunk(i).key)
                return back != nil
            }) else { return false }
            guard let back, back.contentEquals(chunk(i)) else { return false }
        }
        return true
    }

    // MARK: lm:// over TLS

    @Test("lm:// over TLS: chunks round-trip, by address and by name (SNI), through makeRemoteTier too")
    func lmRoundTrip() async throws {
        let certificates = try await TestCertificates()
        let server = try TLS.server(certificates.serverFiles("lm_tls"))
        let log = LogRecorder()
        try await withServer(security: server) { port async throws in
            let client = try TLS.client(TLSFiles(link: "lm_tls", caFile: certificates.caFile))
            let byAddress = LMServerTier(host: "127.0.0.1", port: port, options: Self.options(security: client))
            #expect(try await Self.roundTrips(byAddress, 0..<8))
            #expect(await byAddress.isHealthy())
            await byAddress.close()

            var configuration = LMCacheConfiguration()
            configuration.extraConfig = ["lm_tls": "true", "lm_tls_ca_file": certificates.caFile]
            let byName = try makeRemoteTier(
                url: RemoteURL(parsing: "lm://localhost:\(port)"),
                configuration: configuration,
                security: { try TLS.client($0) },
                logger: log.logger
            )
            // Written by the first tier, read over a TLS connection of the second.
            for i in 0..<8 {
                #expect(try await byName.get(Self.chunk(i).key)?.contentEquals(Self.chunk(i)) == true, "\(log.all)")
            }
        }
    }

    @Test("a server certificate from another CA is refused: misses with the reason logged, never bytes")
    func wrongCA() async throws {
        let certificates = try await TestCertificates()
        let server = try TLS.server(certificates.serverFiles("lm_tls"))
        try await withServer(security: server) { port async throws in
            let trusted = LMServerTier(
                host: "127.0.0.1",
                port: port,
                options: Self.options(security: try TLS.client(TLSFiles(link: "lm_tls", caFile: certificates.caFile)))
            )
            #expect(try await trusted.put(Self.chunk(1)))
            #expect(try await trusted.get(Self.chunk(1).key) != nil)

            let log = LogRecorder()
            let wrong = LMServerTier(
                host: "127.0.0.1",
                port: port,
                options: Self.options(
                    security: try TLS.client(TLSFiles(link: "lm_tls", caFile: certificates.otherCAFile))
                ),
                logger: log.logger
            )
            #expect(try await wrong.get(Self.chunk(1).key) == nil)
            #expect(await wrong.contains(Self.chunk(1).key) == false)
            #expect(await wrong.isHealthy() == false)
            #expect(log.contains("CERTIFICATE_VERIFY_FAILED"), "\(log.all)")

            // Plain TCP against the TLS server, and the system trust store (no test CA in it): misses too.
            let plain = LMServerTier(host: "127.0.0.1", port: port, options: Self.options())
            #expect(try await plain.get(Self.chunk(1).key) == nil)
            let system = LMServerTier(
                host: "127.0.0.1",
                port: port,
                options: Self.options(security: try TLS.client(TLSFiles(link: "lm_tls")))
            )
            #expect(try await system.get(Self.chunk(1).key) == nil)
            for tier in [trusted, wrong, plain, system] { await tier.close() }
        }
        // And a TLS client against a plain server.
        try await withServer { port async throws in
            let client = try TLS.client(TLSFiles(link: "lm_tls", caFile: certificates.caFile))
            let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.options(security: client))
            #expect(try await tier.get(Self.chunk(1).key) == nil)
            await tier.close()
        }
    }

    @Test("bad TLS configuration fails at start naming the extra_config key and the file")
    func badConfiguration() async throws {
        let certificates = try await TestCertificates()
        let missing = certificates.path("absent.pem")
        let noFile = #expect(throws: TLSSetupError.self) {
            try TLS.server(TLSFiles(link: "lm_tls", certificateFile: missing, keyFile: certificates.keyFile))
        }
        #expect(noFile?.description.contains("lm_tls_cert_file (\(missing))") == true, "\(String(describing: noFile))")
        let noKey = #expect(throws: TLSSetupError.self) {
            try TLS.server(TLSFiles(link: "p2p_tls", certificateFile: certificates.certificateFile))
        }
        #expect(noKey?.description.contains("p2p_tls_key_file is not set") == true)
        let keyIsCertificate = #expect(throws: TLSSetupError.self) {
            try TLS.server(
                TLSFiles(
                    link: "lm_tls",
                    certificateFile: certificates.certificateFile,
                    keyFile: certificates.caFile
                )
            )
        }
        #expect(keyIsCertificate?.description.contains("lm_tls_key_file (\(certificates.caFile))") == true)
        let badCA = #expect(throws: TLSSetupError.self) {
            try TLS.client(TLSFiles(link: "redis_tls", caFile: certificates.keyFile))
        }
        #expect(badCA?.description.contains("redis_tls_ca_file") == true)

        // Through the factory: a missing CA file, and TLS links in a program built without TLS.
        var configuration = LMCacheConfiguration()
        configuration.extraConfig = ["redis_tls_ca_file": missing]
        let factory = #expect(throws: StorageError.self) {
            try makeRemoteTier(
                url: RemoteURL(parsing: "rediss://127.0.0.1:6380"),
                configuration: configuration,
                security: { try TLS.client($0) },
                logger: Logger(label: "test")
            )
        }
        #expect(factory?.message.contains("redis_tls_ca_file (\(missing))") == true)
        #expect(throws: StorageError.self) {
            try makeRemoteTier(url: RemoteURL(parsing: "rediss://127.0.0.1:6380"), logger: Logger(label: "test"))
        }
        configuration.extraConfig = ["lm_tls": "true"]
        #expect(throws: StorageError.self) {
            try makeRemoteTier(
                url: RemoteURL(parsing: "lm://127.0.0.1:1"),
                configuration: configuration,
                logger: Logger(label: "test")
            )
        }
    }

    // MARK: The shared token

    @Test("a server with lm_token serves a client with the token and refuses one without it or with a wrong one")
    func accessToken() async throws {
        let log = LogRecorder()
        try await withServer(token: "correct horse", logger: log.logger) { port async throws in
            let right = LMServerTier(host: "127.0.0.1", port: port, options: Self.options(token: "correct horse"))
            #expect(try await Self.roundTrips(right, 0..<4))
            #expect(await right.isHealthy())

            let none = LMServerTier(host: "127.0.0.1", port: port, options: Self.options())
            #expect(try await none.get(Self.chunk(0).key) == nil)
            #expect(await none.isHealthy() == false)
            #expect(log.contains("did not start with an access token"), "\(log.all)")

            let wrong = LMServerTier(host: "127.0.0.1", port: port, options: Self.options(token: "correct battery"))
            #expect(try await wrong.get(Self.chunk(0).key) == nil)
            #expect(await wrong.contains(Self.chunk(0).key) == false)
            #expect(log.contains("a wrong access token"), "\(log.all)")
            // The refused connections did not disturb the others.
            #expect(try await right.get(Self.chunk(3).key)?.contentEquals(Self.chunk(3)) == true)
            for tier in [right, none, wrong] { await tier.close() }
        }
        // A client that sends a token to a server without one is refused as a protocol error, a miss.
        try await withServer { port async throws in
            let tier = LMServerTier(host: "127.0.0.1", port: port, options: Self.options(token: "correct horse"))
            #expect(try await tier.get(Self.chunk(0).key) == nil)
            await tier.close()
        }
    }

    @Test("the token inside TLS: served with both, refused with TLS alone")
    func tokenOverTLS() async throws {
        let certificates = try await TestCertificates()
        let server = try TLS.server(certificates.serverFiles("lm_tls"))
        try await withServer(security: server, token: "t0ken") { port async throws in
            let client = try TLS.client(TLSFiles(link: "lm_tls", caFile: certificates.caFile))
            let both = LMServerTier(
                host: "127.0.0.1",
                port: port,
                options: Self.options(security: client, token: "t0ken")
            )
            #expect(try await Self.roundTrips(both, 0..<4))
            let tlsOnly = LMServerTier(host: "127.0.0.1", port: port, options: Self.options(security: client))
            #expect(try await tlsOnly.get(Self.chunk(0).key) == nil)
            for tier in [both, tlsOnly] { await tier.close() }
        }
    }

    @Test("token messages: the bytes, partial input, and every refusal")
    func tokenMessage() {
        let message = LMAccessToken.message("abc", allocator: ByteBufferAllocator())
        #expect(Array(message.readableBytesView) == Array("LMCT".utf8) + [3, 0, 0, 0] + Array("abc".utf8))
        let expected = Array("abc".utf8)
        for cut in 0..<message.readableBytes {
            #expect(LMAccessToken.check(message.getSlice(at: 0, length: cut)!, expected: expected) == .needMoreData)
        }
        var followed = message
        followed.writeBytes([1, 0, 0, 0])
        #expect(LMAccessToken.check(followed, expected: expected) == .accepted(consumed: 11))
        #expect(LMAccessToken.check(message, expected: Array("abd".utf8)) != .accepted(consumed: 11))
        #expect(LMAccessToken.check(message, expected: Array("ab".utf8)) != .accepted(consumed: 11))
        var request = ByteBuffer()
        request.writeInteger(Int32(2), endianness: .little)  // an LMCache client's GET
        guard case .refused = LMAccessToken.check(request, expected: expected) else {
            Issue.record("a request without a token was not refused")
            return
        }
        var huge = ByteBuffer(bytes: Array("LMCT".utf8))
        huge.writeInteger(UInt32(1 << 20), endianness: .little)
        guard case .refused = LMAccessToken.check(huge, expected: expected) else {
            Issue.record("an oversized token length was not refused")
            return
        }
    }
}

/// `lmcache_server` as a process, configured for TLS and a token from the environment, as an
/// operator would run it.
@Suite(.enabled(if: TestCertificates.isAvailable, "needs the openssl command"))
struct ServerProcessTLSTests {
    static var executable: String {
        URL(filePath: CommandLine.arguments[0]).deletingLastPathComponent().appending(path: "lmcache_server").path
    }

    @Test(
        "lmcache_server with lm_tls_cert_file, lm_tls_key_file and lm_token from LMCACHE_EXTRA_CONFIG (shared with clients: lm_tls_ca_file asks no client certificate)"
    )
    func serverProcess() async throws {
        let certificates = try await TestCertificates()
        let port = freeLoopbackPort()
        let process = Process()
        process.executableURL = URL(filePath: Self.executable)
        process.arguments = ["127.0.0.1", "\(port)"]
        process.environment = [
            "LMCACHE_SERVER_MAX_SIZE": "0.25", "LMCACHE_LOG_LEVEL": "warning",
            "LMCACHE_EXTRA_CONFIG":
                "{lm_tls: true, lm_tls_ca_file: \(certificates.caFile), lm_tls_cert_file: \(certificates.certificateFile), "
                + "lm_tls_key_file: \(certificates.keyFile), lm_token: s3cret}",
        ]
        try process.run()
        defer {
            process.terminate()
            process.waitUntilExit()
        }
        let client = try TLS.client(TLSFiles(link: "lm_tls", caFile: certificates.caFile))
        let tier = LMServerTier(
            host: "127.0.0.1",
            port: port,
            options: TLSTests.options(security: client, token: "s3cret")
        )
        var healthy = false
        for _ in 0..<200 where !healthy {
            healthy = await tier.isHealthy()
            if !healthy { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(healthy)
        #expect(try await TLSTests.roundTrips(tier, 0..<4))
        let noToken = LMServerTier(host: "127.0.0.1", port: port, options: TLSTests.options(security: client))
        #expect(await noToken.isHealthy() == false)
        for tier in [tier, noToken] { await tier.close() }
    }

    @Test("lmcache_server with a certificate file that does not exist stops with the key and the path")
    func missingCertificate() async throws {
        let result = try await runChildProcess(
            "/usr/bin/env",
            [
                "LMCACHE_EXTRA_CONFIG={lm_tls_cert_file: /nonexistent/server.pem, lm_tls_key_file: /nonexistent/server.key}",
                Self.executable, "127.0.0.1", "0",
            ],
            mergeStandardError: true
        )
        #expect(result.status == 2)
        #expect(result.output.contains("extra_config lm_tls_cert_file (/nonexistent/server.pem)"), "\(result.output)")
    }
}
