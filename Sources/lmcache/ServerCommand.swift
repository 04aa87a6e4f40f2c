import ArgumentParser
import LMCacheCore
import LMCacheServer
import Logging
import ServiceLifecycle
import UnixSignals

/// `lmcache server`: the `lm://` cache server (the same as `lmcache_server HOST PORT`).
struct ServerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "server",
        abstract: "Run a cache server that speaks LMCache's lm:// protocol.",
        discussion: """
            Values live in memory within --max-size GiB (by default max_local_cpu_size of the \
            configuration), evicted least recently used first. Stops gracefully on SIGTERM or SIGINT.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "localhost"

    @Option(help: "TCP port.")
    var port = 65432

    @Option(name: .customLong("max-size"), help: "Memory budget in GiB (default: max_local_cpu_size).")
    var maxSize: Double?

    @Option(name: .customLong("max-value-size"), help: "Largest value accepted, in MiB.")
    var maxValueSize: Double = 1024

    @Option(name: .customLong("idle-timeout"), help: "Seconds after which a silent connection is closed.")
    var idleTimeout: Int = 3600

    @OptionGroup var cache: CacheArguments

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        if let maxSize, !(maxSize > 0) { throw ValidationError("--max-size must be positive") }
        guard maxValueSize > 0 else { throw ValidationError("--max-value-size must be positive") }
        guard idleTimeout > 0 else { throw ValidationError("--idle-timeout must be positive") }
    }

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.server")
        let config = try cache.load(logger: logger).configuration
        let capacity = maxSize.map { Int($0 * Double(1 << 30)) } ?? config.maxLocalCPUBytes
        let server = LMServer(
            configuration: LMServerConfiguration(
                host: host,
                port: port,
                capacityBytes: max(capacity, 1 << 20),
                maximumValueBytes: Int(maxValueSize * Double(1 << 20)),
                idleTimeout: .seconds(idleTimeout)
            ),
            logger: logger
        )
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}
