/// How a tier chooses what to evict when it is full.
public enum CachePolicy: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Least recently used first (LMCache's default).
    case lru = "LRU"
    /// Least frequently used first; ties go to the least recently used.
    case lfu = "LFU"
    /// Oldest stored first, whatever its use.
    case fifo = "FIFO"

    public var description: String { rawValue }
}

/// How chunks are laid out in Redis (`redis_layout`).
public enum RedisLayout: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// One self-describing value per chunk under `{<key>}`: safe on Redis Cluster.
    case framed
    /// LMCache's Redis connector layout: `<key>kv_bytes` and the 28-byte `<key>metadata`.
    case lmcache

    public var description: String { rawValue }
}

/// How a tier serializes chunks' KV bytes (`remote_serde`, `local_disk_serde`).
///
/// The codecs work on float16 KV (the engine's default); float32 and bfloat16 chunks are stored
/// as they are whatever the serde. Every stored chunk records its codec, so a reader decodes what
/// any writer stored. The lossy serdes change the KV, so they are also part of the chunk keys'
/// identity (``LMCacheConfiguration/lossySerdeIdentity``): an instance that stores exact KV never
/// loads theirs, and the reverse.
public enum KVSerde: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The KV bytes as they are in memory (lossless).
    case naive
    /// Bit-exact compression: float16 byte planes, the high one entropy-coded (zstd).
    case lossless
    /// 8 bits per value: one float16 scale per head of each token (lossy, about 2× smaller).
    case q8
    /// CacheGen-style: quantization steps per layer, K/V and channel, entropy-coded (lossy, about
    /// 4× smaller or more).
    case cachegen

    /// Whether decoding gives back exactly the bytes that were encoded.
    public var isLossless: Bool { self == .naive || self == .lossless }

    public var description: String { rawValue }
}

/// A remote tier's address, parsed from `remote_url` (or the older `remote_server_addr`).
///
/// Supported schemes: `lm://host:port` (an LMCache-compatible cache server),
/// `redis://[user:password@]host:port[/db]`, `redis-cluster://host:port[,host:port…]`, and
/// `rediss://…` and `rediss-cluster://…`, the same over TLS.
public struct RemoteURL: Hashable, Sendable, CustomStringConvertible {
    /// `lm`, `redis`, `rediss`, `redis-cluster` or `rediss-cluster`.
    public var scheme: String
    /// One or more `host:port` endpoints (several only for `redis-cluster` and `rediss-cluster`).
    public var endpoints: [Endpoint]
    /// The user name, for Redis ACL authentication.
    public var user: String?
    /// The password, for Redis authentication.
    public var password: String?
    /// The Redis database number.
    public var database: Int?

    /// A host and port.
    public struct Endpoint: Hashable, Sendable, CustomStringConvertible {
        /// Host name or address (IPv6 without brackets).
        public var host: String
        /// TCP port, 1...65535.
        public var port: Int

        /// Creates an endpoint.
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// The schemes this build understands (`rediss` and `rediss-cluster` are their Redis
    /// counterparts over TLS).
    public static let schemes = ["lm", "redis", "rediss", "redis-cluster", "rediss-cluster"]

    /// Parses `text`; throws a message naming what is wrong.
    public init(parsing text: String) throws(ConfigurationValueError) {
        guard let schemeEnd = text.firstRange(of: "://") else {
            throw ConfigurationValueError("expected scheme://host:port, one of \(Self.schemes.map { "\($0)://" })")
        }
        let scheme = String(text[..<schemeEnd.lowerBound]).lowercased()
        guard Self.schemes.contains(scheme) else {
            throw ConfigurationValueError(
                "unknown scheme \"\(scheme)\"; supported: \(Self.schemes.joined(separator: ", "))"
            )
        }
        var rest = Substring(text[schemeEnd.upperBound...])
        var user: String?
        var password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let name = credentials[..<colon]
                user = name.isEmpty ? nil : String(name)
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
        }
        var database: Int?
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard scheme == "redis" || scheme == "rediss", let number = Int(path), number >= 0 else {
                    throw ConfigurationValueError("unexpected path \"/\(path)\"; only redis:// takes a database number")
                }
                database = number
            }
        }
        let hosts = rest.split(separator: ",", omittingEmptySubsequences: false)
        guard scheme.hasSuffix("-cluster") || hosts.count == 1 else {
            throw ConfigurationValueError("\(scheme):// takes one host:port; use redis-cluster:// for several")
        }
        var endpoints: [Endpoint] = []
        for host in hosts {
            endpoints.append(try Self.endpoint(host))
        }
        guard user == nil && password == nil || scheme.hasPrefix("redis") else {
            throw ConfigurationValueError("\(scheme):// takes no credentials")
        }
        self.scheme = scheme
        self.endpoints = endpoints
        self.user = user
        self.password = password
        self.database = database
    }

    /// Parses `host:port` (IPv6 as `[addr]:port`).
    public static func endpoint(_ text: some StringProtocol) throws(ConfigurationValueError) -> Endpoint {
        let text = Substring(text)
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ConfigurationValueError("expected [address]:port, got \"\(text)\"")
            }
            host = text[text.index(after: text.startIndex)..<close]
            port = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ConfigurationValueError("expected host:port, got \"\(text)\"")
            }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty else { throw ConfigurationValueError("missing host in \"\(text)\"") }
        guard let number = Int(port), (1...65535).contains(number) else {
            throw ConfigurationValueError("port must be 1...65535, got \"\(port)\"")
        }
        return Endpoint(host: String(host), port: number)
    }

    /// The URL as configured, with the password masked.
    public var description: String {
        var text = "\(scheme)://"
        if user != nil || password != nil {
            text += "\(user ?? "")\(password == nil ? "" : ":***")@"
        }
        text += endpoints.map(\.description).joined(separator: ",")
        if let database { text += "/\(database)" }
        return text
    }
}

/// Everything that configures a cache instance, under LMCache's key names.
///
/// Build one with ``ConfigurationLoader``, which reads the YAML file named by
/// `LMCACHE_CONFIG_FILE`, then `LMCACHE_<KEY>` environment variables, then command-line
/// overrides, and records where each value came from. Every property documents its key.
public struct LMCacheConfiguration: Hashable, Sendable {
    /// `chunk_size`: tokens per chunk. Default 256.
    public var chunkSize: Int = 256
    /// `local_cpu`: whether the CPU-memory tier is on. Default true.
    public var localCPU: Bool = true
    /// `max_local_cpu_size`: the CPU tier's budget in GiB (2³⁰ bytes). Default 5.
    public var maxLocalCPUSize: Double = 5
    /// `local_disk`: directory of the disk tier (`file:///path/` or an absolute path). Default none.
    public var localDisk: String?
    /// `max_local_disk_size`: the disk tier's budget in GiB; the tier is on when > 0 and
    /// `local_disk` is set. Default 0.
    public var maxLocalDiskSize: Double = 0
    /// `remote_url`: the remote tier (`lm://`, `redis://`, `rediss://`, `redis-cluster://`, `rediss-cluster://`). Default none.
    /// The older `remote_server_addr: host:port` sets `lm://host:port`.
    public var remoteURL: RemoteURL?
    /// `remote_ttl`: seconds a chunk stored in Redis lives (`SET … EX`); 0 keeps it until Redis
    /// evicts it. Default 0.
    public var remoteTTL: Int = 0
    /// `redis_layout`: how chunks are laid out in Redis, `framed` (one self-describing value per
    /// chunk under a hash-tagged key, cluster-safe) or `lmcache` (LMCache's `<key>kv_bytes` and
    /// `<key>metadata`). Default `framed`.
    public var redisLayout: RedisLayout = .framed
    /// `remote_serde`: how the remote tier serializes KV (``KVSerde``). Default `lossless`: 15%
    /// fewer bytes, bit-exact, and measured no slower than `naive` even on loopback.
    public var remoteSerde: KVSerde = .lossless
    /// `local_disk_serde`: how the disk tier serializes KV (``KVSerde``). Default `lossless`.
    public var localDiskSerde: KVSerde = .lossless
    /// `cache_policy`: eviction order, `LRU`, `LFU` or `FIFO`. Default LRU.
    public var cachePolicy: CachePolicy = .lru
    /// `save_unfull_chunk`: also store a prompt's trailing partial chunk. Default false.
    public var saveUnfullChunk: Bool = false

    /// `window_aware_loading`: for models with sliding-window layers, store each chunk as two objects
    /// (the full-attention layers, the windowed layers) and load the windowed layers' KV only for the
    /// chunks inside the window of the first computed token. Default true.
    public var windowAwareLoading: Bool = true
    /// `save_decode_cache`: also store KV of generated tokens. Default false.
    public var saveDecodeCache: Bool = false
    /// `enable_blending`: non-prefix reuse (CacheBlend). Default false.
    public var enableBlending: Bool = false
    /// `blend_recompute_ratios`: fraction of tokens recomputed when blending. Default [0.15].
    public var blendRecomputeRatios: [Double] = [0.15]
    /// `blend_check_layers`: layers where deviations are measured. Default [1].
    public var blendCheckLayers: [Int] = [1]
    /// `blend_special_str`: separator between reusable segments. Default `" # # "`.
    public var blendSpecialString: String = " # # "
    /// `blend_min_tokens`: shortest segment worth blending. Default 256.
    public var blendMinTokens: Int = 256
    /// `enable_p2p`: look chunks up on peer instances. Default false.
    public var enableP2P: Bool = false
    /// `enable_controller`: report to a controller. Default false.
    public var enableController: Bool = false
    /// `controller_url`: the controller's `host:port`. Default none.
    public var controllerURL: String?
    /// `lmcache_instance_id`: this instance's name among peers. Default `lmcache_default_instance`.
    public var instanceID: String = "lmcache_default_instance"
    /// `p2p_host`: the address this instance serves its chunks to peers at, and announces to the
    /// controller (so it must be reachable by the peers). Default `127.0.0.1`.
    public var p2pHost: String = "127.0.0.1"
    /// `p2p_port` (or the first of `p2p_init_ports`): the TCP port of that chunk server; 0 picks a
    /// free one, which is what the controller is told. Default 0.
    public var p2pPort: Int = 0
    /// `extra_config`: free-form settings for extensions. This implementation reads the booleans
    /// in ``booleanExtras`` (`use_odirect`, LMCache's name, ``localDiskDirectIO``; `local_disk_fsync`,
    /// ``localDiskFsync``; `lm_tls` and `p2p_tls`), the certificate files of the TLS links
    /// (``tlsFiles(_:)``) and the shared tokens `lm_token` and `p2p_token`.
    public var extraConfig: [String: String] = [:]

    /// The `extra_config` entries this implementation reads that must be booleans.
    public static let booleanExtras = ["use_odirect", "local_disk_fsync", "lm_tls", "p2p_tls"]

    /// `extra_config: {use_odirect: true}`: the disk tier reads and writes its chunk files with
    /// `O_DIRECT`, bypassing the kernel's page cache (the KV is then held once, in the CPU tier, not
    /// a second time as cached file pages). Default off.
    public var localDiskDirectIO: Bool { extraFlag("use_odirect") }

    /// `extra_config: {local_disk_fsync: true}`: the disk tier flushes each chunk file (and the
    /// directory) to the device before the chunk becomes visible, so stored chunks survive power
    /// loss, not only process crashes. Default off (a rename alone is atomic for crashes).
    public var localDiskFsync: Bool { extraFlag("local_disk_fsync") }

    /// `extra_config: {lm_tls: true}`: `remote_url: lm://…` connects with TLS, verifying the server's
    /// certificate against `lm_tls_ca_file` or the system's trust store. Default off (LMCache's own
    /// servers speak plain TCP).
    public var lmTLS: Bool { extraFlag("lm_tls") }

    /// `extra_config: {p2p_tls: true}`: the P2P chunk server speaks TLS with `p2p_tls_cert_file` and
    /// `p2p_tls_key_file`, and fetches from peers verify their certificates against `p2p_tls_ca_file`
    /// or the system's trust store. Default off.
    public var p2pTLS: Bool { extraFlag("p2p_tls") }

    /// `extra_config: {lm_token: …}`: the shared token our `lm://` server requires, and that the
    /// `lm://` remote tier presents. Default none.
    public var lmToken: String? { extraConfig["lm_token"] }

    /// `extra_config: {p2p_token: …}`: the shared token every P2P chunk server requires and every
    /// fetch presents. Default none.
    public var p2pToken: String? { extraConfig["p2p_token"] }

    /// The certificate files of one TLS link from `extra_config`: `<link>_ca_file`,
    /// `<link>_cert_file` and `<link>_key_file`, for `link` `redis_tls`, `lm_tls` or `p2p_tls`.
    public func tlsFiles(_ link: String) -> TLSFiles {
        TLSFiles(
            link: link,
            caFile: extraConfig["\(link)_ca_file"],
            certificateFile: extraConfig["\(link)_cert_file"],
            keyFile: extraConfig["\(link)_key_file"]
        )
    }

    private func extraFlag(_ name: String) -> Bool {
        extraConfig[name].flatMap { ConfigurationKey.boolean($0) } ?? false
    }

    /// The defaults.
    public init() {}

    /// The CPU tier's budget in bytes.
    public var maxLocalCPUBytes: Int { Self.bytes(gib: maxLocalCPUSize) }
    /// The disk tier's budget in bytes.
    public var maxLocalDiskBytes: Int { Self.bytes(gib: maxLocalDiskSize) }

    /// The lossy serdes of the tiers that are on (`local_disk_serde` with a disk tier,
    /// `remote_serde` with a remote one), joined by `+`; `nil` when every tier stores exact KV.
    /// Connectors put it in the chunk keys' identity, so lossy KV is only ever loaded by instances
    /// configured for it.
    public var lossySerdeIdentity: String? {
        var lossy: [KVSerde] = []
        if localDisk != nil && maxLocalDiskSize > 0 && !localDiskSerde.isLossless { lossy.append(localDiskSerde) }
        if remoteURL != nil && !remoteSerde.isLossless && !lossy.contains(remoteSerde) { lossy.append(remoteSerde) }
        return lossy.isEmpty ? nil : lossy.map(\.rawValue).joined(separator: "+")
    }

    static func bytes(gib: Double) -> Int {
        let bytes = (gib * Double(1 << 30)).rounded(.down)
        return bytes >= Double(Int.max) ? Int.max : Int(bytes)
    }
}

/// The certificate files of one TLS link (`extra_config`'s `<link>_ca_file`, `<link>_cert_file`,
/// `<link>_key_file`); paths as written, checked when the link is set up.
public struct TLSFiles: Hashable, Sendable {
    /// The keys' common prefix: `redis_tls`, `lm_tls` or `p2p_tls`.
    public var link: String
    /// PEM certificates to verify the other side against instead of the system's trust store.
    public var caFile: String?
    /// This side's PEM certificate chain (a server's; a client's for mutual TLS).
    public var certificateFile: String?
    /// The PEM private key of ``certificateFile``.
    public var keyFile: String?

    /// Creates the set.
    public init(link: String, caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.link = link
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }
}
