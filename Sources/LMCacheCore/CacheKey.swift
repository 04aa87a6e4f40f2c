/// The address of one chunk of KV in every tier.
///
/// Equality and hashing use ``hash`` (which already covers the model identity, the KV format,
/// the tenant salt and every token up to the end of the chunk) together with the token count.
/// ``modelName`` and ``dtype`` are carried for the key's text form, which follows LMCache's
/// `model@world_size@worker_id@hash@dtype` so that tools reading an LMCache store recognise it.
public struct CacheKey: Hashable, Sendable, CustomStringConvertible {
    /// The chained content hash of the chunk.
    public var hash: ChunkHash
    /// Tokens in the chunk (the chunk size, or fewer for a trailing partial chunk).
    public var tokenCount: Int
    /// The model name, shortened to at most ``maxModelNameBytes`` UTF-8 bytes for the text form.
    public var modelName: String
    /// The KV element type.
    public var dtype: KVDType

    /// Longest model name kept in key strings; LMCache's `lm://` header holds keys of at most 150 bytes.
    public static let maxModelNameBytes = 64

    /// Creates a key.
    public init(hash: ChunkHash, tokenCount: Int, modelName: String, dtype: KVDType) {
        self.hash = hash
        self.tokenCount = tokenCount
        self.modelName = Self.shortened(modelName)
        self.dtype = dtype
    }

    /// `model@1@0@<32 hex digits>@dtype`, with the dtype spelled as LMCache spells it (`half`,
    /// `bfloat16`, `float`); at most 110 bytes.
    public var description: String { "\(modelName)@1@0@\(hash)@\(dtype.lmcacheName)" }

    public static func == (lhs: CacheKey, rhs: CacheKey) -> Bool {
        lhs.hash == rhs.hash && lhs.tokenCount == rhs.tokenCount
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(hash.low)
        hasher.combine(hash.high)
    }

    /// Parses the text form; `nil` when it is not `name@int@int@32hex@dtype`.
    public init?(parsing text: some StringProtocol, tokenCount: Int) {
        let parts = text.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 5, Int(parts[1]) != nil, Int(parts[2]) != nil,
            let hash = ChunkHash(hex: parts[3]), let dtype = KVDType(keyName: parts[4])
        else { return nil }
        self.init(hash: hash, tokenCount: tokenCount, modelName: String(parts[0]), dtype: dtype)
    }

    private static func shortened(_ name: String) -> String {
        // "@" separates the fields of the text form, and spaces pad `lm://` headers.
        var cleaned = String(name.map { $0 == "@" || $0 == " " ? "_" : $0 })
        while cleaned.utf8.count > maxModelNameBytes { cleaned.removeLast() }
        return cleaned
    }
}
