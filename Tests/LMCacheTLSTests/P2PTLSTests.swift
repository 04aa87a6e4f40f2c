import LMCacheCore
import LMCacheP2P
import LMCacheRemote
import LMCacheServer
import LMCacheStorage
import LMCacheTLS
import LMCacheWire
import Logging
import Testing

/// P2P with `p2p_tls` and `p2p_token` as `lmcache serve` sets them up: a controller, instance A's
/// chunk server (TLS, token) and agent, and P2P tiers of other instances fetching from it.
@Suite(.enabled(if: TestCertificates.isAvailable, "needs the openssl command"))
struct P2PTLSTests {
    @Test("a peer with the CA and the token fetches A's chunks over TLS; without the token or with another CA, misses")
    func fetchOverTLS() async throws {
        let certificates = try await TestCertificates()
        let controller = LMController(configuration: .init(host: "127.0.0.1", port: 0))
        let logger = Logger(label: "test.p2p")
        try await withRunningServices([controller], logger: logger) {
            let controllerPort = try await controller.listeningPort()
            let cpu = try LocalCPUTier(capacity: 8 << 20, prefault: false)
            var configuration = LMServerConfiguration(host: "127.0.0.1", port: 0, capacityBytes: 1 << 20)
            configuration.accessToken = "peers only"
            let server = LMServer(
                configuration: configuration,
                fallback: PeerChunkSource(cpu: cpu),
                security: try TLS.server(certificates.serverFiles("p2p_tls"))
            )
            var agentOptions = P2PAgent.Options()
            agentOptions.reportInterval = .milliseconds(20)
            let agent = P2PAgent(
                instanceID: "a",
                cpu: cpu,
                controller: ControllerClient(host: "127.0.0.1", port: controllerPort),
                advertisedHost: "127.0.0.1",
                options: agentOptions
            ) { try await server.listeningPort() }
            try await withRunningServices([server, agent], logger: logger) {
                let chunks = (0..<3).map { TLSTests.chunk(100 + $0) }
                for chunk in chunks { #expect(cpu.put(chunk)) }
                let deadline = ContinuousClock.now + .seconds(20)
                while controller.snapshot.instances["a"]?.keys.count != chunks.count, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }

                func peer(_ id: String, caFile: String, token: String?) throws -> P2PTier {
                    var options = P2PTier.Options()
                    options.peer.security = try TLS.client(TLSFiles(link: "p2p_tls", caFile: caFile))
                    options.peer.token = token
                    return P2PTier(
                        instanceID: id,
                        controller: ControllerClient(host: "127.0.0.1", port: controllerPort),
                        options: options
                    )
                }
                let b = try peer("b", caFile: certificates.caFile, token: "peers only")
                #expect(await b.contains(chunks.map(\.key)) == [true, true, true])
                for chunk in chunks { #expect(try await b.get(chunk.key)?.contentEquals(chunk) == true) }
                await b.close()
                // A failed fetch makes the fetcher tell the controller to forget the entry, so each
                // refused peer asks for a chunk of its own, one the controller still routes to A.
                for (i, (id, caFile, token)) in [
                    ("c", certificates.caFile, nil), ("d", certificates.otherCAFile, "peers only"),
                    ("e", certificates.caFile, "guess"),
                ].enumerated() {
                    let tier = try peer(id, caFile: caFile, token: token)
                    #expect(await tier.contains([chunks[i].key]) == [true], "instance \(id)")
                    #expect(try await tier.get(chunks[i].key) == nil, "instance \(id)")
                    await tier.close()
                }
            }
        }
    }

    @Test("a controller with p2p_tls and p2p_token serves only instances with the CA and the token")
    func controllerOverTLS() async throws {
        let certificates = try await TestCertificates()
        var configuration = LMController.Configuration(host: "127.0.0.1", port: 0)
        configuration.accessToken = "members"
        let controller = LMController(
            configuration: configuration,
            security: try TLS.server(certificates.serverFiles("p2p_tls"))
        )
        try await withRunningServices([controller], logger: Logger(label: "test.controller")) {
            let port = try await controller.listeningPort()
            func client(caFile: String?, token: String?) throws -> ControllerClient {
                var options = ControllerClient.Options()
                options.token = token
                options.security = try caFile.map { try TLS.client(TLSFiles(link: "p2p_tls", caFile: $0)) }
                options.retryDelay = .zero
                // A TLS handshake under the address sanitizer, beside other suites, can take seconds.
                options.connectTimeout = .seconds(20)
                options.requestTimeout = .seconds(20)
                return ControllerClient(host: "127.0.0.1", port: port, options: options)
            }
            let member = try client(caFile: certificates.caFile, token: "members")
            #expect(try await member.send(.register(instanceID: "a", host: "127.0.0.1", port: 8200)) == .ok)
            // Without the token, with a wrong one, with another CA or without TLS: no answer, and
            // nothing registered or forgotten.
            for (id, caFile, token) in [
                ("b", certificates.caFile, nil), ("c", certificates.caFile, "guess"),
                ("d", certificates.otherCAFile, "members"), ("e", nil, "members"),
            ] {
                let outsider = try client(caFile: caFile, token: token)
                await #expect(throws: ControllerClientError.self, "instance \(id)") {
                    _ = try await outsider.send(.register(instanceID: id, host: "127.0.0.1", port: 8200))
                }
                await #expect(throws: ControllerClientError.self, "instance \(id)") {
                    _ = try await outsider.send(.deregister(instanceID: "a"))
                }
                await outsider.close()
            }
            #expect(controller.snapshot.instances.keys.sorted() == ["a"])
            await member.close()
        }
    }
}
