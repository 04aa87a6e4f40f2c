import FoundationEssentials
import LMCacheCore
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    /// Writes `yaml` to a fresh temporary file and returns its path.
    static func file(_ yaml: String) throws -> String {
        let path = FileManager.default.temporaryDirectory
            .appending(path: "lmcache-config-\(UInt64.random(in: 0...UInt64.max)).yaml").path
        try Data(yaml.utf8).write(to: URL(filePath: path))
        return path
    }

    static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    @Test("defaults match LMCache's")
    func defaults() throws {
        let loaded = try ConfigurationLoader.load(environment: [:])
        let config = loaded.configuration
        #expect(config.chunkSize == 256)
        #expect(config.localCPU)
        #expect(config.maxLocalCPUSize == 5)
        #expect(config.maxLocalCPUBytes == 5 << 30)
        #expect(config.localDisk == nil && config.maxLocalDiskSize == 0)
        #expect(config.remoteURL == nil)
        #expect(config.cachePolicy == .lru)
        #expect(!config.saveUnfullChunk)
        #expect(config.blendSpecialString == " # # ")
        #expect(config.blendRecomputeRatios == [0.15] && config.blendCheckLayers == [1])
        #expect(loaded.sources.isEmpty && loaded.warnings.isEmpty)
    }

    @Test("file < environment < command line, with sources recorded")
    func layering() throws {
        let path = try Self.file(
            """
            chunk_size: 512
            max_local_cpu_size: 2.5
            cache_policy: LFU
            local_disk: "file:///tmp/lmcache-disk/"
            max_local_disk_size: 10
            remote_url: "lm://localhost:65432"
            blend_recompute_ratios: [0.1, 0.2]
            """
        )
        defer { Self.remove(path) }
        let environment = [
            "LMCACHE_CONFIG_FILE": path,
            "LMCACHE_CHUNK_SIZE": "128",
            "LMCACHE_CACHE_POLICY": "fifo",
        ]
        let loaded = try ConfigurationLoader.load(environment: environment, overrides: [("chunk_size", "64")])
        let config = loaded.configuration
        #expect(config.chunkSize == 64)
        #expect(loaded.sources["chunk_size"] == .commandLine)
        #expect(config.cachePolicy == .fifo)
        #expect(loaded.sources["cache_policy"] == .environment("LMCACHE_CACHE_POLICY"))
        #expect(config.maxLocalCPUSize == 2.5)
        #expect(loaded.sources["max_local_cpu_size"] == .file(path))
        #expect(config.localDisk == "/tmp/lmcache-disk/")
        #expect(config.maxLocalDiskBytes == 10 << 30)
        #expect(config.remoteURL?.scheme == "lm")
        #expect(config.remoteURL?.endpoints == [RemoteURL.Endpoint(host: "localhost", port: 65432)])
        #expect(config.blendRecomputeRatios == [0.1, 0.2])
        #expect(loaded.file == path)
        // An explicit file argument replaces LMCACHE_CONFIG_FILE.
        let other = try Self.file("chunk_size: 32\n")
        defer { Self.remove(other) }
        let explicit = try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path], configFile: other)
        #expect(explicit.configuration.chunkSize == 32 && explicit.configuration.cachePolicy == .lru)
    }

    @Test("the older remote_server_addr sets an lm:// remote; remote_url wins over it")
    func remoteServerAddress() throws {
        let old = try ConfigurationLoader.load(environment: ["LMCACHE_REMOTE_SERVER_ADDR": "cache-host:65432"])
        #expect(old.configuration.remoteURL?.description == "lm://cache-host:65432")
        let path = try Self.file("remote_url: redis://127.0.0.1:6379\nremote_server_addr: localhost:1\n")
        defer { Self.remove(path) }
        let both = try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path])
        #expect(both.configuration.remoteURL?.description == "redis://127.0.0.1:6379")
        #expect(both.warnings.contains { $0.contains("remote_url wins") })
    }

    @Test("remote URLs of every supported scheme parse")
    func remoteURLs() throws {
        let redis = try RemoteURL(parsing: "redis://alice:s3cret@10.0.0.1:6380/2")
        #expect(redis.user == "alice" && redis.password == "s3cret" && redis.database == 2)
        #expect(redis.description == "redis://alice:***@10.0.0.1:6380/2")
        let cluster = try RemoteURL(parsing: "redis-cluster://a:7000,b:7001,[::1]:7002")
        #expect(cluster.endpoints.map(\.description) == ["a:7000", "b:7001", "[::1]:7002"])
        let password = try RemoteURL(parsing: "redis://:pw@h:1")
        #expect(password.user == nil && password.password == "pw")
    }

    @Test("unknown keys in a file warn; on the command line they are errors")
    func unknownKeys() throws {
        let path = try Self.file("chunk_sise: 3\nuse_layerwise: true\n")
        defer { Self.remove(path) }
        let loaded = try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path])
        #expect(loaded.configuration.chunkSize == 256)
        #expect(loaded.warnings.contains { $0.contains("chunk_sise") && $0.contains("did you mean chunk_size") })
        #expect(loaded.warnings.contains { $0.contains("use_layerwise") && $0.contains("ignores") })
        #expect(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(environment: [:], overrides: [("chunk_sise", "3")])
        }
    }

    /// Every bad value: key, value, and a fragment the error must contain.
    static let badValues: [(String, String, String)] = [
        ("chunk_size", "0", "must be in 1...1048576"),
        ("chunk_size", "abc", "expected an integer"),
        ("chunk_size", "-256", "must be in"),
        ("max_local_cpu_size", "-1", "must be ≥ 0"),
        ("max_local_cpu_size", "lots", "expected a size in GiB"),
        ("max_local_cpu_size", "nan", "expected a size in GiB"),
        ("max_local_disk_size", "-0.5", "must be ≥ 0"),
        ("local_cpu", "maybe", "expected true or false"),
        ("extra_config", "{use_odirect: maybe}", "use_odirect expects true or false"),
        ("extra_config", "{local_disk_fsync: 2}", "local_disk_fsync expects true or false"),
        ("extra_config", "{lm_tls: sometimes}", "lm_tls expects true or false"),
        ("extra_config", "{lm_token: ''}", "lm_token must be 1...1024 bytes, got 0"),
        ("extra_config", "{p2p_token: \(String(repeating: "x", count: 1025))}", "p2p_token must be 1...1024 bytes"),
        ("remote_url", "rediss://h:1/x", "unexpected path"),
        ("local_disk", "relative/dir", "absolute path"),
        ("local_disk", "s3://bucket/", "expected file:///path/"),
        ("cache_policy", "RANDOM", "expected one of LRU, LFU, FIFO"),
        ("remote_serde", "zip", "expected one of naive"),
        ("remote_url", "localhost:65432", "expected scheme://host:port"),
        ("remote_url", "http://x:1", "unknown scheme \"http\""),
        ("remote_url", "lm://localhost", "expected host:port"),
        ("remote_url", "lm://localhost:0", "port must be 1...65535"),
        ("remote_url", "lm://localhost:99999", "port must be 1...65535"),
        ("remote_url", "lm://:80", "missing host"),
        ("remote_url", "lm://a:1,b:2", "use redis-cluster://"),
        ("remote_url", "redis://h:1/x", "database number"),
        ("remote_server_addr", "nohost", "expected host:port"),
        ("blend_recompute_ratios", "1.5", "(0, 1]"),
        ("blend_recompute_ratios", "[]", "at least one"),
        ("blend_check_layers", "-1", "integer ≥ 0"),
        ("blend_special_str", "", "must not be empty"),
        ("save_unfull_chunk", "2", "expected true or false"),
        ("lmcache_instance_id", "", "must not be empty"),
        ("controller_url", "ctrl", "expected host:port"),
    ]

    @Test("a bad value is an error naming the key, the value and the source", arguments: badValues)
    func badValue(key: String, value: String, fragment: String) throws {
        let variable = "LMCACHE_" + key.uppercased()
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(environment: [variable: value])
        }
        #expect(error.isInvalidValue)
        #expect(error.key == key && error.value == value)
        #expect(error.source == .environment(variable))
        let message = error.description
        #expect(message.contains(key) && message.contains("\"\(value)\"") && message.contains(variable))
        #expect(message.contains(fragment), "\(message)")
    }

    @Test("bad values in a file name the file")
    func badValueInFile() throws {
        let path = try Self.file("max_local_cpu_size: -3\n")
        defer { Self.remove(path) }
        let error = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path])
        }
        #expect(error.description.contains(path) && error.description.contains("max_local_cpu_size"))
    }

    @Test("unreadable and malformed files are clear errors")
    func badFiles() throws {
        let missing = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": "/nonexistent/lmcache.yaml"])
        }
        #expect(missing.isFileError && missing.description.contains("/nonexistent/lmcache.yaml"))
        for yaml in ["- a\n- b\n", "chunk_size: [1\n", "a: 1\na: 2\n", "\u{1}: :"] {
            let path = try Self.file(yaml)
            defer { Self.remove(path) }
            let error = try #require(throws: ConfigurationError.self) {
                try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path])
            }
            #expect(error.isFileError, "\(yaml.debugDescription): \(error)")
        }
        let empty = try Self.file("")
        defer { Self.remove(empty) }
        #expect(
            try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": empty]).configuration
                == LMCacheConfiguration()
        )
    }

    @Test("a file's contents given in memory load as the file does, and errors name them as given")
    func fileContents() throws {
        let yaml = "chunk_size: 512\nremote_url: lm://cache:65432\nmax_local_cpu_size: 1.5\n"
        let path = try Self.file(yaml)
        defer { Self.remove(path) }
        let fromFile = try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path])
        let fromMemory = try ConfigurationLoader.load(
            fileContents: Data(yaml.utf8), named: "inline.yaml", environment: ["LMCACHE_CHUNK_SIZE": "1024"])
        #expect(fromMemory.file == "inline.yaml" && fromMemory.sources["remote_url"] == .file("inline.yaml"))
        var expected = fromFile.configuration
        expected.chunkSize = 1024  // The environment still overrides the file.
        #expect(fromMemory.configuration == expected)
        for bad in ["- a\n", "max_local_cpu_size: -3\n"] {
            let error = try #require(throws: ConfigurationError.self) {
                try ConfigurationLoader.load(fileContents: Data(bad.utf8), named: "inline.yaml")
            }
            #expect(error.description.contains("inline.yaml"), "\(error)")
        }
        let notText = try #require(throws: ConfigurationError.self) {
            try ConfigurationLoader.load(fileContents: Data([0xff, 0xfe, 0x3a]), named: "inline.yaml")
        }
        #expect(notText.isFileError && notText.description.contains("UTF-8"))
    }

    @Test("extra_config's use_odirect and local_disk_fsync, from a file and from LMCACHE_EXTRA_CONFIG")
    func diskExtras() throws {
        #expect(!LMCacheConfiguration().localDiskDirectIO && !LMCacheConfiguration().localDiskFsync)
        let path = try Self.file("extra_config: {use_odirect: True, local_disk_fsync: yes, other: x}\n")
        defer { Self.remove(path) }
        let file = try ConfigurationLoader.load(environment: ["LMCACHE_CONFIG_FILE": path]).configuration
        #expect(file.localDiskDirectIO && file.localDiskFsync)
        let environment = try ConfigurationLoader.load(environment: ["LMCACHE_EXTRA_CONFIG": "{'use_odirect': True}"])
        #expect(environment.configuration.localDiskDirectIO && !environment.configuration.localDiskFsync)
    }

    @Test("extra_config's TLS files and tokens, and rediss-cluster:// with several hosts")
    func tlsExtras() throws {
        let loaded = try ConfigurationLoader.load(environment: [
            "LMCACHE_EXTRA_CONFIG": "{lm_tls: true, lm_tls_ca_file: /ca.pem, lm_token: t, redis_tls_cert_file: /c.pem}",
            "LMCACHE_REMOTE_URL": "rediss-cluster://:pw@a:7000,b:7001",
        ]).configuration
        #expect(loaded.lmTLS && !loaded.p2pTLS)
        #expect(loaded.lmToken == "t" && loaded.p2pToken == nil)
        #expect(loaded.tlsFiles("lm_tls") == TLSFiles(link: "lm_tls", caFile: "/ca.pem"))
        #expect(loaded.tlsFiles("redis_tls") == TLSFiles(link: "redis_tls", certificateFile: "/c.pem"))
        #expect(loaded.remoteURL?.scheme == "rediss-cluster")
        #expect(loaded.remoteURL?.endpoints.count == 2)
        #expect(loaded.remoteURL?.password == "pw")
    }

    @Test("null in a file resets an optional key; lists accept the environment's text forms")
    func nullsAndLists() throws {
        let path = try Self.file("local_disk: null\nremote_url: ~\nextra_config:\n  a: 1\n")
        defer { Self.remove(path) }
        let loaded = try ConfigurationLoader.load(
            environment: ["LMCACHE_CONFIG_FILE": path, "LMCACHE_BLEND_CHECK_LAYERS": "[1, 3]"]
        )
        #expect(loaded.configuration.localDisk == nil && loaded.configuration.remoteURL == nil)
        #expect(loaded.configuration.extraConfig == ["a": "1"])
        #expect(loaded.configuration.blendCheckLayers == [1, 3])
        let commas = try ConfigurationLoader.load(environment: ["LMCACHE_BLEND_RECOMPUTE_RATIOS": "0.1,0.3"])
        #expect(commas.configuration.blendRecomputeRatios == [0.1, 0.3])
    }

    @Test("key=value overrides parse")
    func overrideSyntax() throws {
        #expect(try ConfigurationLoader.parseOverride("chunk_size=512") == ("chunk_size", "512"))
        #expect(try ConfigurationLoader.parseOverride("blend_special_str= # ") == ("blend_special_str", " # "))
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parseOverride("chunk_size") }
        #expect(throws: ConfigurationError.self) { try ConfigurationLoader.parseOverride("=1") }
    }
}
