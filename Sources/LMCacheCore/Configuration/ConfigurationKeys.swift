import Yams

/// A configuration value as given, before it is checked: a scalar, a list or a mapping.
enum RawConfigValue: Hashable, Sendable {
    case null
    case scalar(String)
    case list([String])
    case mapping([String: String])

    var text: String {
        switch self {
        case .null: "null"
        case .scalar(let text): text
        case .list(let items): "[" + items.joined(separator: ", ") + "]"
        case .mapping(let pairs):
            "{" + pairs.sorted { $0.key < $1.key }.map { "\($0): \($1)" }.joined(separator: ", ") + "}"
        }
    }
}

/// One configuration key: its LMCache name, how to apply a value, how to print the effective one.
struct ConfigurationKey: Sendable {
    let name: String
    let apply: @Sendable (inout LMCacheConfiguration, RawConfigValue) throws(ConfigurationValueError) -> Void
    let render: @Sendable (LMCacheConfiguration) -> String

    /// `LMCACHE_<NAME>`.
    var environmentName: String { "LMCACHE_" + name.uppercased() }
}

extension ConfigurationKey {
    /// Every key this implementation uses, in the order `lmcache config` prints them and values of
    /// one source are applied (`remote_server_addr` before `remote_url`, so that the newer key wins).
    static let all: [ConfigurationKey] = [
        int("chunk_size", \.chunkSize, range: 1...1 << 20),
        bool("local_cpu", \.localCPU),
        size("max_local_cpu_size", \.maxLocalCPUSize),
        ConfigurationKey(
            name: "local_disk",
            apply: { config, value throws(ConfigurationValueError) in
                config.localDisk = try diskPath(value)
            },
            render: { $0.localDisk.map { "file://\($0)" } ?? "null" }
        ),
        size("max_local_disk_size", \.maxLocalDiskSize),
        ConfigurationKey(
            name: "remote_server_addr",
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: true), !text.isEmpty else { return }
                let endpoint = try RemoteURL.endpoint(text)
                config.remoteURL = try RemoteURL(parsing: "lm://\(endpoint)")
            },
            render: { config in
                guard let url = config.remoteURL, url.scheme == "lm" else { return "null" }
                return url.endpoints.map(\.description).joined()
            }
        ),
        ConfigurationKey(
            name: "remote_url",
            apply: { config, value throws(ConfigurationValueError) in
                let text = try scalar(value, allowNull: true)
                config.remoteURL = try text.flatMap { text throws(ConfigurationValueError) in
                    text.isEmpty ? nil : try RemoteURL(parsing: text)
                }
            },
            render: { $0.remoteURL?.description ?? "null" }
        ),
        int("remote_ttl", \.remoteTTL, range: 0...Int(Int32.max)),
        choice("redis_layout", \.redisLayout),
        choice("remote_serde", \.remoteSerde),
        choice("local_disk_serde", \.localDiskSerde),
        choice("cache_policy", \.cachePolicy, caseInsensitive: true),
        bool("save_unfull_chunk", \.saveUnfullChunk),
        bool("window_aware_loading", \.windowAwareLoading),
        bool("save_decode_cache", \.saveDecodeCache),
        bool("enable_blending", \.enableBlending),
        ConfigurationKey(
            name: "blend_recompute_ratios",
            apply: { config, value throws(ConfigurationValueError) in
                let ratios = try list(value).map { text throws(ConfigurationValueError) in
                    guard let ratio = Double(text), ratio > 0, ratio <= 1 else {
                        throw ConfigurationValueError("each ratio must be a number in (0, 1], got \"\(text)\"")
                    }
                    return ratio
                }
                guard !ratios.isEmpty else { throw ConfigurationValueError("needs at least one ratio") }
                config.blendRecomputeRatios = ratios
            },
            render: { "[" + $0.blendRecomputeRatios.map { "\($0)" }.joined(separator: ", ") + "]" }
        ),
        ConfigurationKey(
            name: "blend_check_layers",
            apply: { config, value throws(ConfigurationValueError) in
                let layers = try list(value).map { text throws(ConfigurationValueError) in
                    guard let layer = Int(text), layer >= 0 else {
                        throw ConfigurationValueError("each layer must be an integer ≥ 0, got \"\(text)\"")
                    }
                    return layer
                }
                guard !layers.isEmpty else { throw ConfigurationValueError("needs at least one layer") }
                config.blendCheckLayers = layers
            },
            render: { "[" + $0.blendCheckLayers.map { "\($0)" }.joined(separator: ", ") + "]" }
        ),
        ConfigurationKey(
            name: "blend_special_str",
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false), !text.isEmpty else {
                    throw ConfigurationValueError("must not be empty")
                }
                config.blendSpecialString = text
            },
            render: { "\"\($0.blendSpecialString)\"" }
        ),
        int("blend_min_tokens", \.blendMinTokens, range: 0...Int.max),
        bool("enable_p2p", \.enableP2P),
        bool("enable_controller", \.enableController),
        ConfigurationKey(
            name: "controller_url",
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: true), !text.isEmpty else {
                    config.controllerURL = nil
                    return
                }
                config.controllerURL = try RemoteURL.endpoint(text).description
            },
            render: { $0.controllerURL ?? "null" }
        ),
        ConfigurationKey(
            name: "lmcache_instance_id",
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false), !text.isEmpty else {
                    throw ConfigurationValueError("must not be empty")
                }
                config.instanceID = text
            },
            render: { $0.instanceID }
        ),
        ConfigurationKey(
            name: "p2p_host",
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false)?.trimmingWhitespace(), !text.isEmpty else {
                    throw ConfigurationValueError("must not be empty")
                }
                config.p2pHost = text
            },
            render: { $0.p2pHost }
        ),
        int("p2p_port", \.p2pPort, range: 0...65535),
        ConfigurationKey(
            name: "p2p_init_ports",
            apply: { config, value throws(ConfigurationValueError) in
                // LMCache lists one port per worker; this engine has one worker, so the first is used.
                guard let first = try list(value).first else { return }
                guard let port = Int(first), (0...65535).contains(port) else {
                    throw ConfigurationValueError("each port must be in 0...65535, got \"\(first)\"")
                }
                config.p2pPort = port
            },
            render: { "[\($0.p2pPort)]" }
        ),
        ConfigurationKey(
            name: "extra_config",
            apply: { config, value throws(ConfigurationValueError) in
                switch value {
                case .null: config.extraConfig = [:]
                case .mapping(let pairs): config.extraConfig = pairs
                case .scalar(let text): config.extraConfig = try flowMapping(text)
                case .list: throw ConfigurationValueError("must be a mapping of keys to values")
                }
                // The extensions this implementation reads must hold booleans.
                for name in LMCacheConfiguration.booleanExtras {
                    guard let text = config.extraConfig[name] else { continue }
                    guard Self.boolean(text) != nil else {
                        throw ConfigurationValueError("\(name) expects true or false, got \"\(text)\"")
                    }
                }
                // The access tokens travel in a message that holds 1...1024 bytes (LMAccessToken).
                for name in ["lm_token", "p2p_token"] {
                    guard let text = config.extraConfig[name] else { continue }
                    guard (1...1024).contains(text.utf8.count) else {
                        throw ConfigurationValueError("\(name) must be 1...1024 bytes, got \(text.utf8.count)")
                    }
                }
            },
            render: { RawConfigValue.mapping($0.extraConfig).text }
        ),
    ]

    /// LMCache keys that this implementation accepts and ignores (vLLM- or GPU-specific ones).
    static let acceptedButUnused: Set<String> = [
        "use_layerwise", "enable_async_loading", "numa_mode", "error_handling", "pd_role", "enable_pd",
        "transfer_channel", "nixl_role", "nixl_buffer_size", "nixl_buffer_device", "gds_path", "cufile_buffer_size",
        "weka_path", "internal_api_server_enabled", "internal_api_server_port_start", "priority_limit",
        "local_cpu_memory_limit", "lookup_url", "distributed_url", "lmcache_worker_port",
        "audit_actual_remove", "external_lookup_client", "enable_scheduler_bypass_lookup",
    ]

    static let byName: [String: ConfigurationKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    // MARK: Value parsers

    static func scalar(_ value: RawConfigValue, allowNull: Bool) throws(ConfigurationValueError) -> String? {
        switch value {
        case .null:
            guard allowNull else { throw ConfigurationValueError("must not be null") }
            return nil
        case .scalar(let text): return text
        case .list: throw ConfigurationValueError("expected a single value, got a list")
        case .mapping: throw ConfigurationValueError("expected a single value, got a mapping")
        }
    }

    /// A YAML list, a scalar, or text such as `[0.1, 0.2]` or `0.1,0.2` (the environment's form).
    static func list(_ value: RawConfigValue) throws(ConfigurationValueError) -> [String] {
        switch value {
        case .null: return []
        case .list(let items): return items
        case .mapping: throw ConfigurationValueError("expected a list, got a mapping")
        case .scalar(var text):
            text = text.trimmingWhitespace()
            if text.hasPrefix("[") && text.hasSuffix("]") { text = String(text.dropFirst().dropLast()) }
            return text.split(separator: ",").map { String($0).trimmingWhitespace() }.filter { !$0.isEmpty }
        }
    }

    /// A mapping of plain values written on one line, as the environment and the command line give
    /// it: YAML's flow form (`{use_odirect: True}`), which also reads JSON and Python's dict text
    /// with quoted keys (`{'use_odirect': True}`).
    static func flowMapping(_ text: String) throws(ConfigurationValueError) -> [String: String] {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { return [:] }
        let node: Node?
        do {
            node = try Yams.compose(yaml: trimmed)
        } catch {
            throw ConfigurationValueError("must be a mapping of keys to values, such as {use_odirect: true}")
        }
        guard case .mapping(let mapping) = node else {
            throw ConfigurationValueError("must be a mapping of keys to values, such as {use_odirect: true}")
        }
        var pairs: [String: String] = [:]
        for (key, value) in mapping {
            guard case .scalar(let name) = key, case .scalar(let scalar) = value else {
                throw ConfigurationValueError("nested values must be plain")
            }
            pairs[name.string] = scalar.string
        }
        return pairs
    }

    /// `true`/`yes`/`on`/`1` or `false`/`no`/`off`/`0`, in any case; `nil` otherwise.
    static func boolean(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "yes", "on", "1": true
        case "false", "no", "off", "0": false
        default: nil
        }
    }

    static func bool(_ name: String, _ path: any WritableKeyPath<LMCacheConfiguration, Bool> & Sendable) -> Self {
        ConfigurationKey(
            name: name,
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false) else { return }
                guard let flag = boolean(text) else { throw ConfigurationValueError("expected true or false") }
                config[keyPath: path] = flag
            },
            render: { $0[keyPath: path] ? "true" : "false" }
        )
    }

    static func int(
        _ name: String,
        _ path: any WritableKeyPath<LMCacheConfiguration, Int> & Sendable,
        range: ClosedRange<Int>
    ) -> Self {
        ConfigurationKey(
            name: name,
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false), let number = Int(text.trimmingWhitespace()) else {
                    throw ConfigurationValueError("expected an integer")
                }
                guard range.contains(number) else {
                    throw ConfigurationValueError(
                        range.upperBound == Int.max
                            ? "must be ≥ \(range.lowerBound)" : "must be in \(range.lowerBound)...\(range.upperBound)"
                    )
                }
                config[keyPath: path] = number
            },
            render: { "\($0[keyPath: path])" }
        )
    }

    /// A size in GiB: a finite number ≥ 0.
    static func size(_ name: String, _ path: any WritableKeyPath<LMCacheConfiguration, Double> & Sendable) -> Self {
        ConfigurationKey(
            name: name,
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false), let number = Double(text.trimmingWhitespace()),
                    number.isFinite
                else { throw ConfigurationValueError("expected a size in GiB, such as 5 or 0.5") }
                guard number >= 0 else { throw ConfigurationValueError("must be ≥ 0") }
                config[keyPath: path] = number
            },
            render: { "\($0[keyPath: path])" }
        )
    }

    static func choice<Choice: RawRepresentable & CaseIterable & Sendable>(
        _ name: String,
        _ path: any WritableKeyPath<LMCacheConfiguration, Choice> & Sendable,
        caseInsensitive: Bool = false
    ) -> Self where Choice.RawValue == String {
        ConfigurationKey(
            name: name,
            apply: { config, value throws(ConfigurationValueError) in
                guard let text = try scalar(value, allowNull: false) else { return }
                let match = Choice.allCases.first {
                    caseInsensitive ? $0.rawValue.lowercased() == text.lowercased() : $0.rawValue == text
                }
                guard let match else {
                    let names = Choice.allCases.map(\.rawValue).joined(separator: ", ")
                    throw ConfigurationValueError("expected one of \(names)")
                }
                config[keyPath: path] = match
            },
            render: { $0[keyPath: path].rawValue }
        )
    }

    /// `file:///path/`, an absolute path, or null/empty for none.
    static func diskPath(_ value: RawConfigValue) throws(ConfigurationValueError) -> String? {
        guard let text = try scalar(value, allowNull: true), !text.isEmpty else { return nil }
        var path = text
        if text.hasPrefix("file://") {
            path = String(text.dropFirst("file://".count))
        } else if text.contains("://") {
            throw ConfigurationValueError("expected file:///path/ or an absolute path")
        }
        guard path.hasPrefix("/") else {
            throw ConfigurationValueError("expected an absolute path, as file:///path/")
        }
        return path
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
