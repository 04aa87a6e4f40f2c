import ArgumentParser
import LMCacheCommandSupport
import LMCacheCore
import LMCacheServer
import LMCacheTLS
import LMCacheWire
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
            configuration), evicted least recently used first. Stops gracefully on SIGTERM or SIGINT. \
            With --disk (or local_disk and max_local_disk_size in the configuration) every value is \
            also written to that directory, read back on a memory miss, and served again after a restart.
            """
    )

    @Option(help: "Address to listen on.")
    var host = "localhost"

    @Option(help: "TCP port.")
    var port = 65432

    @Option(name: .customLong("max-size"), help: "Memory budget in GiB (default: max_local_cpu_size).")
    var maxSize: Double?

    @Option(help: "A directory where values persist (default: local_disk).")
    var disk: String?

    @Option(
        name: .customLong("disk-size"),
        help: "Disk budget in GiB (default: max_local_disk_size, or 16 with --disk)."
    )
    var diskSize: Double?

    @Flag(help: "Touch all of the memory budget at start, so that no PUT pays for page faults.")
    var prefault = false

    @Option(name: .customLong("max-value-size"), help: "Largest value accepted, in MiB.")
    var maxValueSize: Double = 1024

    @Option(name: .customLong("idle-timeout"), help: "Seconds after which a silent connection is closed.")
    var idleTimeout: Int = 3600

    @OptionGroup var cache: CacheArguments

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        if let maxSize, !(maxSize > 0) { throw ValidationError("--max-size must be positive") }
        if let diskSize, !(diskSize > 0) { throw ValidationError("--disk-size must be positive") }
        guard maxValueSize > 0 else { throw ValidationError("--max-value-size must be positive") }
        guard idleTimeout > 0 else { throw ValidationError("--idle-timeout must be positive") }
    }

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.server")
        let config = try cache.load(logger: logger).configuration
        let capacity = maxSize.map { Int($0 * Double(1 << 30)) } ?? config.maxLocalCPUBytes
        var diskStore: LMDiskStore?
        if let directory = disk ?? config.localDisk {
            let gib = diskSize ?? (config.maxLocalDiskSize > 0 ? config.maxLocalDiskSize : (disk != nil ? 16 : 0))
            if gib > 0 {
                do {
                    diskStore = try LMDiskStore(
                        directory: directory,
                        capacity: Int(gib * Double(1 << 30)),
                        fsync: config.localDiskFsync,
                        directIO: config.localDiskDirectIO,
                        logger: logger
                    )
                } catch {
                    throw CommandFailure("\(error)")
                }
            }
        }
        var configuration = LMServerConfiguration(
            host: host,
            port: port,
            capacityBytes: max(capacity, 1 << 20),
            maximumValueBytes: Int(maxValueSize * Double(1 << 20)),
            idleTimeout: .seconds(idleTimeout)
        )
        configuration.prefaultMemory = prefault
        configuration.accessToken = config.lmToken
        let security: ConnectionSecurity?
        do {
            security = try TLS.serverIfConfigured(config.tlsFiles("lm_tls"))
        } catch {
            throw CommandFailure("\(error)")
        }
        let server = LMServer(
            configuration: configuration,
            disk: diskStore,
            security: security,
            logger: logger
        )
        let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        try await group.run()
    }
}
