public import FoundationEssentials
import Yams

/// A loaded configuration, with where each value came from and what was worth a warning.
public struct LoadedConfiguration: Sendable {
    /// The effective configuration.
    public var configuration: LMCacheConfiguration
    /// The source of each key's effective value; keys left at their default are absent.
    public var sources: [String: ConfigurationSource]
    /// Unknown or ignored keys and other things worth a log line.
    public var warnings: [String]
    /// The YAML file that was read, if any.
    public var file: String?

    /// Every key with its effective value and source, in documentation order.
    public var entries: [(key: String, value: String, source: ConfigurationSource)] {
        ConfigurationKey.all.map { key in
            (key.name, key.render(configuration), sources[key.name] ?? .default)
        }
    }
}

/// Builds an ``LMCacheConfiguration`` the way LMCache users expect.
///
/// Layers, each overriding the one before: the built-in defaults; the YAML file named by the
/// `configFile` argument or else by `LMCACHE_CONFIG_FILE`; `LMCACHE_<KEY>` environment variables
/// (`LMCACHE_CHUNK_SIZE=512`); command-line overrides (`key=value`). Unknown keys in the file
/// are warnings; unknown keys on the command line are errors (a typo there is never intended).
/// A bad value is an error naming the key, the value and its source.
///
/// ```swift
/// let loaded = try ConfigurationLoader.load(overrides: [("chunk_size", "512")])
/// print(loaded.configuration.chunkSize)  // 512
/// ```
public enum ConfigurationLoader {
    /// Environment variables the loader reads besides `LMCACHE_<KEY>`.
    public static let configFileVariable = "LMCACHE_CONFIG_FILE"

    /// Loads the configuration.
    /// - Parameters:
    ///   - environment: The process environment (tests pass their own).
    ///   - configFile: A YAML file to read instead of `LMCACHE_CONFIG_FILE`'s.
    ///   - overrides: `(key, value)` pairs from the command line, applied last, in order.
    /// - Throws: ``ConfigurationError`` for an unreadable or malformed file, a bad value or an
    ///   unknown command-line key.
    public static func load(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        configFile: String? = nil,
        overrides: [(key: String, value: String)] = []
    ) throws(ConfigurationError) -> LoadedConfiguration {
        var file: (path: String, values: [(String, RawConfigValue)])?
        if let path = configFile ?? environment[configFileVariable].flatMap({ $0.isEmpty ? nil : $0 }) {
            file = (path, try readFile(path))
        }
        return try load(file: file, environment: environment, overrides: overrides)
    }

    /// Loads a configuration as ``load(environment:configFile:overrides:)`` does, with the YAML file's
    /// contents given rather than read (a configuration held in memory, or sent by another program).
    ///
    /// - Parameter name: What errors and ``LoadedConfiguration/sources`` call the file.
    public static func load(
        fileContents: Data,
        named name: String,
        environment: [String: String] = [:],
        overrides: [(key: String, value: String)] = []
    ) throws(ConfigurationError) -> LoadedConfiguration {
        try load(file: (name, try parseFile(fileContents, path: name)), environment: environment, overrides: overrides)
    }

    private static func load(
        file: (path: String, values: [(String, RawConfigValue)])?,
        environment: [String: String],
        overrides: [(key: String, value: String)]
    ) throws(ConfigurationError) -> LoadedConfiguration {
        var loaded = LoadedConfiguration(configuration: LMCacheConfiguration(), sources: [:], warnings: [], file: nil)

        if let file {
            loaded.file = file.path
            try apply(file.values, source: .file(file.path), unknownKeysAreErrors: false, to: &loaded)
        }

        var fromEnvironment: [(String, RawConfigValue)] = []
        for key in ConfigurationKey.all {
            if let value = environment[key.environmentName] {
                fromEnvironment.append((key.name, .scalar(value)))
            }
        }
        for (name, value) in fromEnvironment {
            try apply(
                [(name, value)],
                source: .environment("LMCACHE_" + name.uppercased()),
                unknownKeysAreErrors: true,
                to: &loaded
            )
        }

        try apply(
            overrides.map { ($0.key, .scalar($0.value)) },
            source: .commandLine,
            unknownKeysAreErrors: true,
            to: &loaded
        )

        let config = loaded.configuration
        if config.localDisk != nil && config.maxLocalDiskSize == 0 {
            loaded.warnings.append("local_disk is set but max_local_disk_size is 0: the disk tier stays off")
        }
        if config.localDisk == nil && config.maxLocalDiskSize > 0 {
            loaded.warnings.append("max_local_disk_size is set but local_disk is not: the disk tier stays off")
        }
        return loaded
    }

    /// Parses `key=value` as typed on a command line.
    public static func parseOverride(_ text: String) throws(ConfigurationError) -> (key: String, value: String) {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
            throw .unknownKey(text, source: .commandLine, reason: "expected key=value")
        }
        return (String(text[..<equals]).trimmingWhitespace(), String(text[text.index(after: equals)...]))
    }

    private static func apply(
        _ values: [(String, RawConfigValue)],
        source: ConfigurationSource,
        unknownKeysAreErrors: Bool,
        to loaded: inout LoadedConfiguration
    ) throws(ConfigurationError) {
        // Apply in the table's order so that, within one source, newer keys win over their older forms.
        let order = Dictionary(uniqueKeysWithValues: ConfigurationKey.all.enumerated().map { ($1.name, $0) })
        let sorted = values.enumerated().sorted {
            (order[$0.element.0] ?? Int.max, $0.offset) < (order[$1.element.0] ?? Int.max, $1.offset)
        }.map(\.element)
        let names = Set(values.map(\.0))
        if names.contains("remote_url") && names.contains("remote_server_addr") {
            loaded.warnings.append("both remote_url and remote_server_addr are set (\(source)): remote_url wins")
        }
        for (name, value) in sorted {
            guard let key = ConfigurationKey.byName[name] else {
                if ConfigurationKey.acceptedButUnused.contains(name) {
                    loaded.warnings.append("\(name) (\(source)) is an LMCache key that this implementation ignores")
                    continue
                }
                let hint = suggestion(for: name).map { "; did you mean \($0)?" } ?? ""
                if unknownKeysAreErrors {
                    throw .unknownKey(name, source: source, reason: "not a configuration key\(hint)")
                }
                loaded.warnings.append("unknown configuration key \"\(name)\" (\(source)) ignored\(hint)")
                continue
            }
            do {
                try key.apply(&loaded.configuration, value)
            } catch {
                throw .invalidValue(key: name, value: value.text, source: source, reason: error.reason)
            }
            loaded.sources[name] = source
            if name == "remote_server_addr" { loaded.sources["remote_url"] = source }
            if name == "remote_url" { loaded.sources["remote_server_addr"] = source }
        }
    }

    private static func readFile(_ path: String) throws(ConfigurationError) -> [(String, RawConfigValue)] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(filePath: path))
        } catch {
            throw .unreadableFile(path, reason: "\(error)")
        }
        return try parseFile(data, path: path)
    }

    private static func parseFile(_ data: Data, path: String) throws(ConfigurationError) -> [(String, RawConfigValue)] {
        guard let text = String(data: data, encoding: .utf8) else {
            throw .malformedFile(path, reason: "not UTF-8 text")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw .malformedFile(path, reason: "\(error)")
        }
        guard let root else { return [] }  // An empty file sets nothing.
        guard case .mapping(let mapping) = root else {
            throw .malformedFile(path, reason: "expected a mapping of keys to values at the top level")
        }
        var values: [(String, RawConfigValue)] = []
        var seen: Set<String> = []
        for (keyNode, valueNode) in mapping {
            guard case .scalar(let keyScalar) = keyNode else {
                throw .malformedFile(path, reason: "keys must be plain names")
            }
            let key = keyScalar.string
            guard seen.insert(key).inserted else {
                throw .malformedFile(path, reason: "key \(key) appears twice")
            }
            values.append((key, try rawValue(valueNode, key: key, path: path)))
        }
        return values
    }

    private static func rawValue(_ node: Node, key: String, path: String) throws(ConfigurationError) -> RawConfigValue {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string) { return .null }
            return .scalar(scalar.string)
        case .sequence(let sequence):
            var items: [String] = []
            for item in sequence {
                guard case .scalar(let scalar) = item else {
                    throw .invalidValue(
                        key: key,
                        value: "…",
                        source: .file(path),
                        reason: "list items must be plain values"
                    )
                }
                items.append(scalar.string)
            }
            return .list(items)
        case .mapping(let mapping):
            var pairs: [String: String] = [:]
            for (k, v) in mapping {
                guard case .scalar(let ks) = k, case .scalar(let vs) = v else {
                    throw .invalidValue(
                        key: key,
                        value: "…",
                        source: .file(path),
                        reason: "nested values must be plain"
                    )
                }
                pairs[ks.string] = vs.string
            }
            return .mapping(pairs)
        case .alias:
            throw .malformedFile(path, reason: "YAML aliases are not supported (key \(key))")
        }
    }

    /// The known key closest to `name`, for "did you mean" hints.
    private static func suggestion(for name: String) -> String? {
        let candidates = ConfigurationKey.all.map(\.name)
        let scored = candidates.map { ($0, editDistance($0, name)) }.min { $0.1 < $1.1 }
        guard let (best, distance) = scored, distance <= max(2, name.count / 4) else { return nil }
        return best
    }

    private static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.utf8)
        let b = Array(b.utf8)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
