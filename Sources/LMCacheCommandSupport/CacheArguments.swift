package import ArgumentParser
package import LMCacheCore
package import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Options every command that uses the cache shares: where the configuration comes from.
package struct CacheArguments: ParsableArguments {
    @Option(name: .long, help: "A YAML configuration file (instead of LMCACHE_CONFIG_FILE).")
    package var config: String?

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp(
            "Override one configuration key, e.g. --set chunk_size=512 (repeatable).",
            valueName: "key=value"
        )
    )
    package var overrides: [String] = []

    package init() {}

    /// Loads file < environment < `--set`, logging warnings; exits with a clear message on errors.
    package func load(logger: Logger) throws -> LoadedConfiguration {
        do {
            var pairs: [(key: String, value: String)] = []
            for text in overrides { pairs.append(try ConfigurationLoader.parseOverride(text)) }
            let loaded = try ConfigurationLoader.load(configFile: config, overrides: pairs)
            for warning in loaded.warnings { logger.warning("\(warning)") }
            return loaded
        } catch {
            throw CommandFailure("\(error)")
        }
    }
}

/// Sets up logging for a command: stderr, level from `LMCACHE_LOG_LEVEL` (default `info`).
package enum CommandLogging {
    package static func bootstrap(label: String) -> Logger {
        let level =
            getenv("LMCACHE_LOG_LEVEL").map { String(cString: $0) }.flatMap { Logger.Level(rawValue: $0.lowercased()) }
            ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

/// Fails the command with `message` on stderr and exit status 1.
package struct CommandFailure: Error, CustomStringConvertible {
    package let description: String
    package init(_ message: String) { description = message }
}

extension String {
    /// The string padded with spaces to `width` characters (unchanged if already as long).
    package func padded(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
