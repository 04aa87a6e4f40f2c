// `lmcache_server HOST PORT [DEVICE]`: LMCache's cache-server command line, as LMCache users
// type it. DEVICE (LMCache's `cpu`) is accepted and ignored: values live in CPU memory.
// `lmcache server --help` has the same server with every option.
//
// Persistence: with `local_disk` and `max_local_disk_size` set in the configuration
// (LMCACHE_CONFIG_FILE, or LMCACHE_LOCAL_DISK and LMCACHE_MAX_LOCAL_DISK_SIZE), values are also
// written to that directory, and a restarted server serves them again.

import LMCacheCore
import LMCacheServer
import LMCacheTLS
import LMCacheWire
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func printError(_ text: String) {
    var text = text
    text.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

let arguments = CommandLine.arguments
guard (3...4).contains(arguments.count), let port = Int(arguments[2]), (0...65535).contains(port) else {
    printError("usage: lmcache_server HOST PORT [cpu]\n")
    printError("  a cache server for LMCache's lm:// protocol; budget from LMCACHE_SERVER_MAX_SIZE (GiB, default 4)\n")
    printError("  values persist in local_disk (LMCACHE_LOCAL_DISK) up to max_local_disk_size GiB when both are set\n")
    exit(2)
}
var capacity = 4 << 30
if let text = getenv("LMCACHE_SERVER_MAX_SIZE").map({ String(cString: $0) }) {
    guard let gib = Double(text), gib > 0, gib < 1_048_576 else {
        printError("error: LMCACHE_SERVER_MAX_SIZE must be a positive number of GiB, not \"\(text)\"\n")
        exit(2)
    }
    capacity = Int(gib * Double(1 << 30))
}

let level = getenv("LMCACHE_LOG_LEVEL").map { String(cString: $0) }.flatMap { Logger.Level(rawValue: $0.lowercased()) }
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = level ?? .info
    return handler
}
let logger = Logger(label: "lmcache.server")
var disk: LMDiskStore?
var configuration = LMServerConfiguration(host: arguments[1], port: port, capacityBytes: capacity)
var security: ConnectionSecurity?
do {
    let loaded = try ConfigurationLoader.load()
    for warning in loaded.warnings { logger.warning("\(warning)") }
    let config = loaded.configuration
    if let directory = config.localDisk, config.maxLocalDiskBytes > 0 {
        disk = try LMDiskStore(
            directory: directory, capacity: config.maxLocalDiskBytes, fsync: config.localDiskFsync,
            directIO: config.localDiskDirectIO, logger: logger)
    }
    // Off unless configured (extra_config lm_token, lm_tls_cert_file, lm_tls_key_file): LMCache's
    // own clients speak plain TCP and send no token.
    configuration.accessToken = config.lmToken
    security = try TLS.serverIfConfigured(config.tlsFiles("lm_tls"))
} catch {
    printError("error: \(error)\n")
    exit(2)
}
let server = LMServer(configuration: configuration, disk: disk, security: security, logger: logger)
let group = ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
do {
    try await group.run()
} catch {
    printError("error: \(error)\n")
    exit(1)
}
