import ArgumentParser
import FoundationEssentials
import LMCacheCommandSupport
import LMCacheCore

/// `lmcache config`: the effective configuration and where each value came from.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Print the effective configuration and where each value came from.",
        discussion: """
            Values come from, in increasing precedence: defaults, the YAML file named by --config or \
            LMCACHE_CONFIG_FILE, LMCACHE_<KEY> environment variables, then --set key=value.
            """
    )

    @OptionGroup var cache: CacheArguments

    @Flag(help: "Print one JSON object: {key: {value, source}}.")
    var json = false

    func run() async throws {
        let logger = CommandLogging.bootstrap(label: "lmcache.config")
        let loaded = try cache.load(logger: logger)
        if json {
            var object: [String: [String: String]] = [:]
            for entry in loaded.entries {
                object[entry.key] = ["value": entry.value, "source": "\(entry.source)"]
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            print(String(decoding: try encoder.encode(object), as: UTF8.self))
            return
        }
        let width = loaded.entries.map(\.key.count).max() ?? 0
        let valueWidth = min(40, loaded.entries.map(\.value.count).max() ?? 0)
        for entry in loaded.entries {
            let key = entry.key.padded(to: width)
            let value =
                entry.value.count < valueWidth
                ? entry.value.padded(to: valueWidth) : entry.value
            print("\(key)  \(value)  (\(entry.source))")
        }
    }
}
