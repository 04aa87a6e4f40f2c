public import LMCacheCore
public import LMCacheStorage
public import Logging

/// The remote tier that `url` (`remote_url`, or `remote_server_addr`) names.
///
/// `lm://host:port` gives an ``LMServerTier``; `redis://[user:password@]host:port[/db]` gives a
/// ``RedisTier`` with `configuration`'s `remote_ttl` and `redis_layout`; every remote tier
/// serializes KV as `remote_serde` says;
/// `redis-cluster://host:port[,host:port…]` a ``RedisTier`` on that cluster (framed layout only).
/// - Throws: ``StorageError`` with code `unavailable` for a scheme this build cannot serve
///   (`rediss://`: this build has no TLS), and `invalidArgument` for `redis_layout: lmcache` on a cluster.
public func makeRemoteTier(
    url: RemoteURL, configuration: LMCacheConfiguration = LMCacheConfiguration(), logger: Logger
) throws -> any StorageTier {
    guard let endpoint = url.endpoints.first else {
        throw StorageError(.invalidArgument, "remote_url \(url) names no host:port")
    }
    switch url.scheme {
    case "lm":
        var options = LMServerTier.Options()
        options.serde = configuration.remoteSerde
        return LMServerTier(host: endpoint.host, port: endpoint.port, options: options, logger: logger)
    case "redis":
        var options = RedisTier.Options(layout: configuration.redisLayout,
            ttl: configuration.remoteTTL > 0 ? .seconds(configuration.remoteTTL) : nil)
        options.user = url.user
        options.password = url.password
        options.database = url.database
        options.serde = configuration.remoteSerde
        return RedisTier(host: endpoint.host, port: endpoint.port, options: options, logger: logger)
    case "redis-cluster":
        guard configuration.redisLayout == .framed else {
            throw StorageError(.invalidArgument,
                "redis_layout lmcache puts a chunk's two keys in different cluster slots; use redis_layout framed with redis-cluster://")
        }
        var options = RedisTier.Options(layout: .framed,
            ttl: configuration.remoteTTL > 0 ? .seconds(configuration.remoteTTL) : nil)
        options.user = url.user
        options.password = url.password
        options.serde = configuration.remoteSerde
        return RedisTier(cluster: url.endpoints.map { ($0.host, $0.port) }, options: options, logger: logger)
    default:
        throw StorageError(.unavailable, "remote_url scheme \(url.scheme):// is not yet supported (lm://, redis:// and redis-cluster:// are)")
    }
}
