/// Settings of ``LMServer``.
public struct LMServerConfiguration: Hashable, Sendable {
    /// Address to listen on (`localhost`, `0.0.0.0`, an IPv6 address).
    public var host: String
    /// TCP port; 0 picks a free one (see ``LMServer/listeningPort()``).
    public var port: Int
    /// The byte budget of the store. Default 4 GiB.
    public var capacityBytes: Int
    /// The largest PUT payload accepted; a larger length closes the connection. Default
    /// 1 GiB, and never more than ``capacityBytes``.
    public var maximumValueBytes: Int
    /// A connection that sends nothing for this long, between requests and with every reply taken,
    /// is closed. Default 1 hour (LMCache clients keep one connection open for the life of the
    /// engine).
    public var idleTimeout: Duration
    /// A connection that stops sending in the middle of a request, or stops taking a reply, for
    /// this long is closed. Default 30 seconds.
    public var stallTimeout: Duration
    /// Connections beyond this many are closed as soon as they are accepted. Default 1024.
    public var maximumConnections: Int
    /// Touch all of the store's value pool (as much memory as ``capacityBytes``) at start, so
    /// that no PUT pays for first-touch page faults. Default off.
    public var prefaultMemory = false
    /// The shared token every connection must present first (``LMAccessToken``; `lm_token`, or
    /// `p2p_token` on a P2P chunk server); a connection without it is closed with a log line.
    /// Default none: the server speaks LMCache's protocol unchanged, as LMCache's clients (which
    /// cannot send a token) need.
    public var accessToken: String?

    /// Creates a configuration.
    public init(
        host: String = "localhost",
        port: Int = 65432,
        capacityBytes: Int = 4 << 30,
        maximumValueBytes: Int = 1 << 30,
        idleTimeout: Duration = .seconds(3600),
        stallTimeout: Duration = .seconds(30),
        maximumConnections: Int = 1024
    ) {
        self.host = host
        self.port = port
        self.capacityBytes = capacityBytes
        self.maximumValueBytes = maximumValueBytes
        self.idleTimeout = idleTimeout
        self.stallTimeout = stallTimeout
        self.maximumConnections = maximumConnections
    }

    /// ``maximumValueBytes``, bounded by the budget and the protocol's `int32` length.
    var effectiveMaximumValueBytes: Int {
        min(maximumValueBytes, capacityBytes, Int(Int32.max))
    }
}
