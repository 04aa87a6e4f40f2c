import ArgumentParser
import LMCacheCommandSupport
import LMCacheCore
import LMCacheServer
import LMCacheTLS
import LMCacheWire
import Logging
import ServiceLifecycle
import UnixSignals

/// `lmcache controller`: the P2P controller that instances with `enable_p2p` register with.
struct ControllerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "controller",
        abstract: "Run the P2P controller: it maps chunks to the instances that hold them.",
        discussion: """
            Instances started with enable_p2p (or enable_controller) and controller_url pointing here \
            register, report the chunks they store and evict, and send heartbeats; a lookup answers \
            with the live peer holding the longest leading run of a prompt's chunks. The map lives \
            in memory: after a restart the instances register again and re-report what they hold. \
            From the configuration (LMCACHE_CONFIG_FILE, --config, LMCACHE_* variables, --set), \
            extra_config's p2p_token makes every connection present that token first, and \
            p2p_tls (with p2p_tls_cert_file and p2p_tls_key_file, a certificate for the address in \
            the instances' controller_url) makes the controller speak TLS: give it the instances' \
            configuration. Stops gracefully on SIGTERM or SIGINT. See docs/p2p.md.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "localhost"

    @Option(help: "TCP port (0: any free port).")
    var port = 9000

    @Option(
        name: .customLong("heartbeat-timeout"),
        help: "Seconds without a heartbeat after which an instance is dropped."
    )
    var heartbeatTimeout: Double = 10

    @OptionGroup var cache: CacheArguments

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        guard heartbeatTimeout >= 0.1, heartbeatTimeout <= 86_400 else {
            throw ValidationError("--heartbeat-timeout must be in 0.1...86400 seconds")
        }
    }

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.controller")
        let config = try cache.load(logger: logger).configuration
        var configuration = LMController.Configuration(
            host: host,
            port: port,
            heartbeatTimeout: .milliseconds(Int(heartbeatTimeout * 1000))
        )
        configuration.accessToken = config.p2pToken
        var security: ConnectionSecurity?
        if config.p2pTLS {
            do {
                let files = config.tlsFiles("p2p_tls")
                security = try TLS.server(
                    TLSFiles(link: files.link, certificateFile: files.certificateFile, keyFile: files.keyFile))
            } catch {
                throw CommandFailure("\(error)")
            }
        }
        let controller = LMController(configuration: configuration, security: security, logger: logger)
        let group = ServiceGroup(services: [controller], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}
