public import LMCacheCore
public import LMCacheStorage
public import Logging

/// The remote tier that `url` (`remote_url`, or `remote_server_addr`) names.
///
/// `lm://host:port` gives an ``LMServerTier``. Redis schemes are not supported yet.
/// - Throws: ``StorageError`` with code `unavailable` for a scheme this build cannot serve.
public func makeRemoteTier(url: RemoteURL, logger: Logger) throws -> any StorageTier {
    switch url.scheme {
    case "lm":
        guard let endpoint = url.endpoints.first else {
            throw StorageError(.invalidArgument, "remote_url \(url) names no host:port")
        }
        return LMServerTier(host: endpoint.host, port: endpoint.port, logger: logger)
    default:
        throw StorageError(.unavailable, "remote_url scheme \(url.scheme):// is not yet supported (only lm://)")
    }
}
