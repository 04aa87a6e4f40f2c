import LMCacheCore
import LMCacheRemote
public import LMCacheServer
public import LMCacheStorage
import LMCacheWire
public import NIOCore

/// What a P2P instance serves to its peers: the chunks in its own CPU tier, each framed as a
/// ``KVChunkFrame`` under ``P2PTier/wireKey(_:)``.
///
/// An ``LMServer`` with this source as its fallback is the instance's chunk server: peers GET
/// chunks over the `lm://` protocol, exactly as they would from a cache server. Keys that are
/// not P2P keys, or chunks no longer held, are misses.
///
/// ```swift
/// let server = LMServer(configuration: peerConfiguration, fallback: PeerChunkSource(cpu: manager.cpu!))
/// ```
public struct PeerChunkSource: LMValueSource {
    /// The tier served.
    public let cpu: LocalCPUTier

    /// Creates a source over `cpu`.
    public init(cpu: LocalCPUTier) { self.cpu = cpu }

    public func value(forKey key: String, allocator: ByteBufferAllocator) async -> LMStoredValue? {
        guard let cacheKey = P2PTier.cacheKey(wireKey: key), let chunk = cpu.get(cacheKey) else { return nil }
        // One copy, from the pinned pool extent into the reply; the pin ends with `chunk`.
        let payload = KVChunkFrame.encode(chunk, allocator: allocator)
        let length = Int32(payload.readableBytes)
        return LMStoredValue(
            payload: payload,
            format: KVChunkFrame.wireFormat,
            dtype: KVChunkFrame.wireDType,
            shape: LMShape([length])
        )
    }

    public func contains(_ key: String) async -> Bool {
        guard let cacheKey = P2PTier.cacheKey(wireKey: key) else { return false }
        return cpu.contains(cacheKey)
    }
}
