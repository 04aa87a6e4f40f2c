public import LMCacheCore
public import LMCacheStorage
public import LMCacheWire
public import Logging

/// Makes the handlers that secure client connections from a link's certificate files:
/// `LMCacheTLS`'s `TLS.client`, passed in by the programs that link TLS.
public typealias ClientSecurityFactory = @Sendable (TLSFiles) throws -> ConnectionSecurity

/// The remote tier that `url` (`remote_url`, or `remote_server_addr`) names.
///
/// `lm://host:port` gives an ``LMServerTier`` (over TLS with `extra_config: {lm_tls: true}`,
/// presenting `lm_token` when set); `redis://[user:password@]host:port[/db]` gives a
/// ``RedisTier`` with `configuration`'s `remote_ttl` and `redis_layout`;
/// `redis-cluster://host:port[,host:port…]` a ``RedisTier`` on that cluster (framed layout only);
/// `rediss://` and `rediss-cluster://` the same over TLS, with `extra_config`'s `redis_tls_ca_file`,
/// `redis_tls_cert_file` and `redis_tls_key_file`. Every remote tier serializes KV as
/// `remote_serde` says.
/// - Parameter security: What makes TLS handlers (`TLS.client`); without it, TLS links are refused.
/// - Throws: ``StorageError`` with code `unavailable` for a TLS link without `security`, and
///   `invalidArgument` for `redis_layout: lmcache` on a cluster or certificate files that
///   cannot be used (the message names the key and the path).
public func makeRemoteTier(
    url: RemoteURL,
    configuration: LMCacheConfiguration = LMCacheConfiguration(),
    security: ClientSecurityFactory? = nil,
    logger: Logger
) throws -> any StorageTier {
    guard let endpoint = url.endpoints.first else {
        throw StorageError(.invalidArgument, "remote_url \(url) names no host:port")
    }
    func secure(_ link: String, _ why: String) throws -> ConnectionSecurity {
        guard let security else {
            throw StorageError(.unavailable, "\(why) needs TLS, which this program was built without")
        }
        do {
            return try security(configuration.tlsFiles(link))
        } catch {
            throw StorageError(.invalidArgument, "\(error)")
        }
    }
    switch url.scheme {
    case "lm":
        var options = LMServerTier.Options()
        options.serde = configuration.remoteSerde
        options.token = configuration.lmToken
        if configuration.lmTLS { options.security = try secure("lm_tls", "extra_config lm_tls") }
        return LMServerTier(host: endpoint.host, port: endpoint.port, options: options, logger: logger)
    case "redis", "rediss":
        var options = RedisTier.Options(
            layout: configuration.redisLayout,
            ttl: configuration.remoteTTL > 0 ? .seconds(configuration.remoteTTL) : nil
        )
        options.user = url.user
        options.password = url.password
        options.database = url.database
        options.serde = configuration.remoteSerde
        if url.scheme == "rediss" { options.security = try secure("redis_tls", "rediss://") }
        return RedisTier(host: endpoint.host, port: endpoint.port, options: options, logger: logger)
    case "redis-cluster", "rediss-cluster":
        guard configuration.redisLayout == .framed else {
            throw StorageError(
                .invalidArgument,
                "redis_layout lmcache puts a chunk's two keys in different cluster slots; use redis_layout framed with \(url.scheme)://"
            )
        }
        var options = RedisTier.Options(
            layout: .framed,
            ttl: configuration.remoteTTL > 0 ? .seconds(configuration.remoteTTL) : nil
        )
        options.user = url.user
        options.password = url.password
        options.serde = configuration.remoteSerde
        if url.scheme == "rediss-cluster" { options.security = try secure("redis_tls", "rediss-cluster://") }
        return RedisTier(cluster: url.endpoints.map { ($0.host, $0.port) }, options: options, logger: logger)
    default:
        throw StorageError(
            .unavailable,
            "remote_url scheme \(url.scheme):// is not yet supported (\(RemoteURL.schemes.map { "\($0)://" }.joined(separator: ", ")) are)"
        )
    }
}
