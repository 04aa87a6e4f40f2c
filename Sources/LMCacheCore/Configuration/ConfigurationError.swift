/// Why one configuration value was rejected, before the key and source are known.
public struct ConfigurationValueError: Error, Hashable, Sendable {
    /// What is wrong with the value.
    public var reason: String

    /// Creates an error with a reason.
    public init(_ reason: String) { self.reason = reason }
}

/// Where a configuration value came from.
public enum ConfigurationSource: Hashable, Sendable, CustomStringConvertible {
    /// The built-in default.
    case `default`
    /// A YAML file.
    case file(String)
    /// An environment variable.
    case environment(String)
    /// A command-line override.
    case commandLine

    public var description: String {
        switch self {
        case .default: "default"
        case .file(let path): "file \(path)"
        case .environment(let name): "environment \(name)"
        case .commandLine: "command line"
        }
    }
}

/// A configuration that could not be loaded: an unreadable or malformed file, or a bad value.
///
/// The message names the key, the value and where it came from, e.g.
/// `invalid value "-1" for max_local_cpu_size (from environment LMCACHE_MAX_LOCAL_CPU_SIZE): must be ≥ 0`.
public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case invalidValue
        case unknownKey
        case unreadableFile
        case malformedFile
    }

    private let code: Code
    /// The key concerned, when there is one.
    public let key: String?
    /// The offending value as given, when there is one.
    public let value: String?
    /// Where the value or file came from.
    public let source: ConfigurationSource
    /// What is wrong.
    public let reason: String

    /// A value of a known key that is not acceptable.
    public static func invalidValue(key: String, value: String, source: ConfigurationSource, reason: String) -> Self {
        Self(code: .invalidValue, key: key, value: value, source: source, reason: reason)
    }

    /// A key that is not a configuration key (command-line overrides only; files warn instead).
    public static func unknownKey(_ key: String, source: ConfigurationSource, reason: String) -> Self {
        Self(code: .unknownKey, key: key, value: nil, source: source, reason: reason)
    }

    /// A configuration file that cannot be read.
    public static func unreadableFile(_ path: String, reason: String) -> Self {
        Self(code: .unreadableFile, key: nil, value: nil, source: .file(path), reason: reason)
    }

    /// A configuration file that is not a YAML mapping of keys to values.
    public static func malformedFile(_ path: String, reason: String) -> Self {
        Self(code: .malformedFile, key: nil, value: nil, source: .file(path), reason: reason)
    }

    /// Whether this error is about a bad value.
    public var isInvalidValue: Bool { code == .invalidValue }
    /// Whether this error is about an unknown key.
    public var isUnknownKey: Bool { code == .unknownKey }
    /// Whether this error is about a file that could not be read or parsed.
    public var isFileError: Bool { code == .unreadableFile || code == .malformedFile }

    public var description: String {
        switch code {
        case .invalidValue:
            "invalid value \"\(value ?? "")\" for \(key ?? "?") (from \(source)): \(reason)"
        case .unknownKey:
            "unknown configuration key \"\(key ?? "")\" (from \(source)): \(reason)"
        case .unreadableFile:
            "cannot read configuration \(source): \(reason)"
        case .malformedFile:
            "malformed configuration \(source): \(reason)"
        }
    }
}
