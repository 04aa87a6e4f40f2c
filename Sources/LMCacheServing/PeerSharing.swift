internal import LMCacheCore
internal import LMCacheP2P
internal import LMCacheRemote
internal import LMCacheServer
internal import LMCacheStorage
internal import LMCacheTLS
internal import LMCacheWire
internal import Logging
internal import ServiceLifecycle

/// What `enable_p2p` and `enable_controller` add to a serving process: the controller client, the
/// P2P tier (searched after the local and remote tiers), the chunk server peers fetch from
/// (an `lm://` server over the CPU tier), and the agent that registers, reports and heartbeats.
struct PeerSharing: Sendable {
    let configuration: LMCacheConfiguration
    let controller: ControllerClient
    /// The P2P tier, with `enable_p2p`.
    let tier: P2PTier?
    /// TLS of the chunk server (`p2p_tls`), if on.
    let serverSecurity: ConnectionSecurity?
    let logger: Logger

    /// `nil` when neither `enable_p2p` nor `enable_controller` is on.
    /// - Throws: ``ServingCacheError`` for a configuration that cannot work.
    init?(configuration: LMCacheConfiguration, logger: Logger) throws {
        guard configuration.enableP2P || configuration.enableController else { return nil }
        let keys = configuration.enableP2P ? "enable_p2p" : "enable_controller"
        guard let address = configuration.controllerURL else {
            throw ServingCacheError("\(keys) needs controller_url: the host:port of `lmcache controller`")
        }
        guard configuration.instanceID != LMCacheConfiguration().instanceID else {
            throw ServingCacheError(
                "\(keys) needs lmcache_instance_id: a name unique among the instances sharing the controller"
            )
        }
        guard configuration.localCPU && configuration.maxLocalCPUBytes > 0 else {
            throw ServingCacheError("\(keys) needs the CPU tier (local_cpu: true and max_local_cpu_size > 0)")
        }
        let endpoint = try RemoteURL.endpoint(address)
        self.configuration = configuration
        self.logger = logger
        // TLS and the token are off by default, as for lm://; with p2p_tls every instance serves
        // with its certificate and verifies its peers' and the controller's; with p2p_token it
        // presents the token to both.
        var options = P2PTier.Options()
        options.peer.token = configuration.p2pToken
        var controllerOptions = ControllerClient.Options()
        controllerOptions.token = configuration.p2pToken
        var serverSecurity: ConnectionSecurity?
        if configuration.p2pTLS {
            do {
                let files = configuration.tlsFiles("p2p_tls")
                options.peer.security = try TLS.client(TLSFiles(link: files.link, caFile: files.caFile))
                controllerOptions.security = options.peer.security
                if configuration.enableP2P {
                    serverSecurity = try TLS.server(
                        TLSFiles(link: files.link, certificateFile: files.certificateFile, keyFile: files.keyFile))
                }
            } catch {
                throw ServingCacheError("\(error)")
            }
        }
        self.serverSecurity = serverSecurity
        controller = ControllerClient(
            host: endpoint.host, port: endpoint.port, options: controllerOptions, logger: logger)
        tier =
            configuration.enableP2P
            ? P2PTier(instanceID: configuration.instanceID, controller: controller, options: options, logger: logger)
            : nil
    }

    /// The services to run beside the HTTP server: with `enable_p2p` the chunk server and the agent;
    /// with `enable_controller` alone the agent, announcing no chunk server.
    func services(cpu: LocalCPUTier) -> [any Service] {
        guard tier != nil else {
            return [
                P2PAgent(
                    instanceID: configuration.instanceID,
                    cpu: cpu,
                    controller: controller,
                    advertisedHost: configuration.p2pHost,
                    logger: logger
                ) { 0 }
            ]
        }
        var serverConfiguration = LMServerConfiguration(
            host: configuration.p2pHost,
            port: configuration.p2pPort,
            // Peers only read (from the CPU tier, through the fallback); the store stays empty.
            capacityBytes: 1 << 20,
            idleTimeout: .seconds(600),
            stallTimeout: .seconds(10)
        )
        serverConfiguration.accessToken = configuration.p2pToken
        let server = LMServer(
            configuration: serverConfiguration,
            fallback: PeerChunkSource(cpu: cpu),
            security: serverSecurity,
            logger: logger
        )
        let agent = P2PAgent(
            instanceID: configuration.instanceID,
            cpu: cpu,
            controller: controller,
            advertisedHost: configuration.p2pHost,
            logger: logger
        ) { try await server.listeningPort() }
        return [server, agent]
    }
}
