/// Keys for non-prefix reuse (CacheBlend): a prompt split at a separator into segments, each
/// segment's chunks keyed by the segment's own tokens.
///
/// A segment's chunk *i* covers its tokens `i*chunkSize ..< (i+1)*chunkSize` and is hashed as
/// ``ChunkKeyer`` hashes prefix chunks (chained to chunk *i−1* of the same segment), except that
/// chunk 0 chains from a segment root over the model identity, the KV layout and the tenant salt
/// instead of from the text before the segment. So the same document gets the same keys wherever
/// it appears in a prompt, and never a prefix chunk's key.
///
/// Because the stored KV of a segment was computed at some position and must be re-rotated to
/// wherever the segment appears next, each stored chunk goes with a *position record*: a small
/// entry under ``positionKey(for:)`` that holds the position of the chunk's first token when it
/// was stored. The KV itself is stored under ``kvKey(for:position:)``, which names that
/// position too, so a record and the KV it points to always agree, whatever a tier evicted.
///
/// ```swift
/// let keyer = SegmentKeyer(model: identity, layout: layout, chunkSize: 256)
/// for segment in SegmentKeyer.segments(of: prompt, separator: separatorIDs) {
///     for chunk in keyer.chunks(for: prompt, segment: segment) { print(chunk.key, chunk.range) }
/// }
/// ```
public struct SegmentKeyer: Sendable, Hashable {
    /// The keyer of segment chunks (its root is the segment root).
    public let chunkKeyer: ChunkKeyer

    /// Creates a keyer.
    /// - Precondition: `chunkSize > 0`.
    public init(
        model: ModelIdentity,
        layout: KVLayout,
        chunkSize: Int = 256,
        saveUnfullChunk: Bool = false,
        salt: String? = nil
    ) {
        let root = ChunkKeyer.rootHash(
            domain: "lmcache-swift/segment-root/v1",
            model: model,
            layout: layout,
            salt: salt
        )
        chunkKeyer = ChunkKeyer(
            model: model,
            layout: layout,
            chunkSize: chunkSize,
            saveUnfullChunk: saveUnfullChunk,
            salt: salt,
            root: root
        )
    }

    /// The segments of `tokens`: the non-empty runs between occurrences of `separator` (the
    /// separator's own tokens belong to no segment). With an empty separator, the whole sequence.
    ///
    /// - Complexity: O(*n* × separator length).
    public static func segments(of tokens: [Int32], separator: [Int32]) -> [Range<Int>] {
        guard !separator.isEmpty else { return tokens.isEmpty ? [] : [0..<tokens.count] }
        var result: [Range<Int>] = []
        var start = 0
        var i = 0
        while i + separator.count <= tokens.count {
            if tokens[i..<(i + separator.count)].elementsEqual(separator) {
                if i > start { result.append(start..<i) }
                i += separator.count
                start = i
            } else {
                i += 1
            }
        }
        if tokens.count > start { result.append(start..<tokens.count) }
        return result
    }

    /// The keyed chunks of the segment `segment` of `tokens`, with ranges in `tokens`' positions.
    ///
    /// - Complexity: O(segment length).
    public func chunks(for tokens: [Int32], segment: Range<Int>) -> [TokenChunk] {
        chunkKeyer.chunks(for: Array(tokens[segment])).map { chunk in
            TokenChunk(
                key: chunk.key,
                range: (chunk.range.lowerBound + segment.lowerBound)..<(chunk.range.upperBound + segment.lowerBound)
            )
        }
    }

    /// The key of the position record of the segment chunk `key`.
    public func positionKey(for key: CacheKey) -> CacheKey {
        CacheKey(
            hash: derived(key.hash, tag: 1, position: 0),
            tokenCount: SegmentPositionRecord.tokens.count,
            modelName: key.modelName,
            dtype: SegmentPositionRecord.layout.dtype
        )
    }

    /// The key under which the KV of the segment chunk `key`, computed with its first token at
    /// `position`, is stored.
    public func kvKey(for key: CacheKey, position: Int) -> CacheKey {
        CacheKey(
            hash: derived(key.hash, tag: 2, position: position),
            tokenCount: key.tokenCount,
            modelName: key.modelName,
            dtype: key.dtype
        )
    }

    private func derived(_ hash: ChunkHash, tag: UInt64, position: Int) -> ChunkHash {
        var hasher = SipHash128()
        hasher.combine("lmcache-swift/segment-entry/v1")
        hasher.combine(hash.low)
        hasher.combine(hash.high)
        hasher.combine(tag)
        hasher.combine(UInt64(position))
        return hasher.finalize()
    }
}

/// The stored form of a segment chunk's position: one entry of 8 bytes, the position as a
/// little-endian 32-bit integer followed by a 32-bit format marker.
public enum SegmentPositionRecord {
    /// The record's layout (1 layer, 1 head, 1 dimension of float32: 8 bytes for its one token).
    public static let layout = KVLayout(layers: 1, kvHeads: 1, headDim: 1, dtype: .float32)
    /// The record's token list, checked on every hit like a chunk's.
    public static let tokens: [Int32] = [0]
    /// The format marker ("LMSP").
    static let marker: UInt32 = 0x504D_534C

    /// The 8 bytes recording `position`.
    public static func encode(_ position: Int) -> [UInt8] {
        let p = UInt32(truncatingIfNeeded: position)
        return [p, marker].flatMap { value in (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    }

    /// The position in `bytes`, or `nil` when they are not a record.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count == 8 else { return nil }
        func word(_ offset: Int) -> UInt32 {
            (0..<4).reduce(0) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
        }
        guard word(4) == marker, word(0) <= UInt32(Int32.max) else { return nil }
        return Int(word(0))
    }
}
