/// One chunk of a token sequence and its key.
public struct TokenChunk: Hashable, Sendable {
    /// The chunk's key.
    public var key: CacheKey
    /// The chunk's token positions in the sequence.
    public var range: Range<Int>
}

/// Splits token sequences into chunks and computes their prefix-chained keys.
///
/// Chunk *i* covers tokens `i*chunkSize ..< (i+1)*chunkSize`. Its hash is SipHash-2-4-128 (fixed
/// public key) over chunk *i−1*'s hash followed by chunk *i*'s token ids as little-endian 32-bit
/// integers; chunk 0 chains from a root hash over the model identity, the KV layout and the
/// tenant salt. So a key names a chunk's tokens *and everything before them*: the same text
/// after a different prefix, under another model or format, or for another tenant, gets a
/// different key, and every process on every machine computes the same keys.
///
/// A trailing partial chunk (fewer than `chunkSize` tokens) gets a key only when
/// `saveUnfullChunk` is set, as LMCache's `save_unfull_chunk` (default off): with it off, the
/// tail of a prompt is always recomputed, and full chunks are what is stored and looked up.
///
/// ```swift
/// let keyer = ChunkKeyer(model: identity, layout: layout, chunkSize: 256)
/// for chunk in keyer.chunks(for: promptTokens) { print(chunk.key, chunk.range) }
/// ```
public struct ChunkKeyer: Sendable, Hashable {
    /// The model whose KV the keys address.
    public let model: ModelIdentity
    /// The KV format; part of every key.
    public let layout: KVLayout
    /// Tokens per chunk.
    public let chunkSize: Int
    /// Whether a trailing partial chunk gets a key.
    public let saveUnfullChunk: Bool
    /// An optional tenant salt: tenants with different salts never share chunks.
    public let salt: String?
    /// Which part of each chunk's KV the keys address when a chunk is stored in several objects (for
    /// example one per group of layers); `nil` for the whole chunk. Parts never share keys.
    public let part: String?
    /// The hash chunk 0 chains from.
    public let root: ChunkHash

    /// Creates a keyer.
    /// - Precondition: `chunkSize > 0`.
    public init(
        model: ModelIdentity,
        layout: KVLayout,
        chunkSize: Int = 256,
        saveUnfullChunk: Bool = false,
        salt: String? = nil,
        part: String? = nil
    ) {
        self.init(
            model: model,
            layout: layout,
            chunkSize: chunkSize,
            saveUnfullChunk: saveUnfullChunk,
            salt: salt,
            part: part,
            root: Self.rootHash(
                domain: "lmcache-swift/chunk-root/v1", model: model, layout: layout, salt: salt, part: part)
        )
    }

    /// A keyer whose chunk 0 chains from `root` instead of the prefix root (segment keys).
    package init(
        model: ModelIdentity,
        layout: KVLayout,
        chunkSize: Int,
        saveUnfullChunk: Bool,
        salt: String?,
        part: String? = nil,
        root: ChunkHash
    ) {
        precondition(chunkSize > 0, "chunkSize must be positive")
        self.model = model
        self.layout = layout
        self.chunkSize = chunkSize
        self.saveUnfullChunk = saveUnfullChunk
        self.salt = salt
        self.part = part
        self.root = root
    }

    /// A root hash over a domain string, the model identity, the KV layout, the tenant salt and the part.
    package static func rootHash(
        domain: String, model: ModelIdentity, layout: KVLayout, salt: String?, part: String? = nil
    ) -> ChunkHash {
        var hasher = SipHash128()
        hasher.combine(domain)
        hasher.combine(model.name)
        hasher.combine(model.fingerprint)
        hasher.combine(layout.description)
        if let salt {
            hasher.combine(1)
            hasher.combine(salt)
        } else {
            hasher.combine(0)
        }
        if let part {
            hasher.combine("part")
            hasher.combine(part)
        }
        return hasher.finalize()
    }

    /// Number of chunks that get keys for a sequence of `tokenCount` tokens.
    public func chunkCount(tokenCount: Int) -> Int {
        let full = tokenCount / chunkSize
        return saveUnfullChunk && tokenCount % chunkSize != 0 ? full + 1 : full
    }

    /// The hash of a chunk whose predecessor has hash `parent`.
    public static func chainedHash(parent: ChunkHash, tokens: UnsafeBufferPointer<Int32>) -> ChunkHash {
        var hasher = SipHash128()
        hasher.combine(parent.low)
        hasher.combine(parent.high)
        hasher.combine(UnsafeRawBufferPointer(tokens))
        return hasher.finalize()
    }

    /// The chunks of `tokens` that get keys, in order.
    ///
    /// - Complexity: O(*n*) in the number of tokens.
    public func chunks(for tokens: [Int32]) -> [TokenChunk] {
        let count = chunkCount(tokenCount: tokens.count)
        var result = [TokenChunk]()
        result.reserveCapacity(count)
        var parent = root
        tokens.withUnsafeBufferPointer { all in
            for index in 0..<count {
                let start = index * chunkSize
                let end = min(start + chunkSize, all.count)
                let hash = Self.chainedHash(parent: parent, tokens: UnsafeBufferPointer(rebasing: all[start..<end]))
                result.append(
                    TokenChunk(
                        key: CacheKey(hash: hash, tokenCount: end - start, modelName: model.name, dtype: layout.dtype),
                        range: start..<end
                    )
                )
                parent = hash
            }
        }
        return result
    }

    /// The keys of ``chunks(for:)``.
    public func keys(for tokens: [Int32]) -> [CacheKey] { chunks(for: tokens).map(\.key) }
}
