#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Memory that holds one chunk's KV bytes, owned by whoever made it (a tier's pool, a heap
/// allocation, a mapped file).
///
/// The bytes stay valid and unchanged for as long as the storage object lives; releasing the
/// object (when the last ``KVChunk`` that uses it goes away) returns the memory to its owner.
/// This is how pins work: a reader holds a ``KVChunk``, and a pin cannot outlive it or leak.
public protocol KVChunkStorage: AnyObject, Sendable {
    /// The chunk's bytes; valid while `self` is alive.
    var bytes: UnsafeRawBufferPointer { get }
}

/// One chunk of KV for all layers of a model: the bytes, their layout, and the tokens they encode.
///
/// The bytes are laid out as ``KVLayout`` documents (`layers × {K,V} × tokens × kvHeads × headDim`).
/// A chunk is immutable and reference-counted: while any reference exists its memory is pinned
/// (a tier never evicts or reuses it); when the last reference goes away the pin is released,
/// whatever path the code took. Read the bytes only inside ``withUnsafeBytes(_:)``.
///
/// ```swift
/// if let chunk = try await tier.get(key, verifying: tokens) {
///     chunk.withUnsafeBytes { engine.load($0) }
/// }
/// ```
public final class KVChunk: Sendable {
    /// The chunk's key.
    public let key: CacheKey
    /// The token ids whose KV this is; checked on every hit so that a hash collision can never
    /// serve another text's KV.
    public let tokens: [Int32]
    /// The layout of the bytes.
    public let layout: KVLayout
    private let storage: any KVChunkStorage

    /// Wraps bytes held by `storage`.
    /// - Precondition: `storage.bytes.count == layout.byteCount(tokens: tokens.count)` and
    ///   `tokens.count == key.tokenCount`.
    public init(key: CacheKey, tokens: [Int32], layout: KVLayout, storage: any KVChunkStorage) {
        precondition(tokens.count == key.tokenCount, "KVChunk: \(tokens.count) tokens for a key of \(key.tokenCount)")
        precondition(
            storage.bytes.count == layout.byteCount(tokens: tokens.count),
            "KVChunk: \(storage.bytes.count) bytes for \(tokens.count) tokens of \(layout)"
        )
        self.key = key
        self.tokens = tokens
        self.layout = layout
        self.storage = storage
    }

    /// Copies `bytes` into a new heap allocation.
    public convenience init(key: CacheKey, tokens: [Int32], layout: KVLayout, copying bytes: UnsafeRawBufferPointer) {
        self.init(key: key, tokens: tokens, layout: layout, storage: HeapChunkStorage(copying: bytes))
    }

    /// Number of bytes of KV.
    public var byteCount: Int { storage.bytes.count }

    /// Calls `body` with the chunk's bytes, which are valid only during the call.
    public func withUnsafeBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        // `storage` is a stored `let` of `self`, so it outlives the call.
        try body(storage.bytes)
    }

    /// Whether `other` holds the same tokens and bytes.
    public func contentEquals(_ other: KVChunk) -> Bool {
        guard tokens == other.tokens, layout == other.layout, byteCount == other.byteCount else { return false }
        return withUnsafeBytes { a in
            other.withUnsafeBytes { b in
                guard let pa = a.baseAddress, let pb = b.baseAddress else { return a.count == b.count }
                return memcmp(pa, pb, a.count) == 0
            }
        }
    }
}

/// Bytes in a heap allocation owned by this object (64-byte aligned).
///
/// `@unchecked Sendable`: the bytes are written only during `init` and never after, and they are
/// freed only in `deinit`, when no thread can hold a reference.
public final class HeapChunkStorage: KVChunkStorage, @unchecked Sendable {
    /// The bytes; never written after `init`.
    public let bytes: UnsafeRawBufferPointer

    /// Copies `source` into a new allocation.
    public init(copying source: UnsafeRawBufferPointer) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: source.count, alignment: 64)
        if source.count > 0 { memory.copyMemory(from: source) }
        bytes = UnsafeRawBufferPointer(memory)
    }

    /// Allocates `count` bytes and lets `fill` write all of them.
    public init<E: Error>(count: Int, fill: (UnsafeMutableRawBufferPointer) throws(E) -> Void) throws(E) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 64)
        do {
            try fill(memory)
        } catch {
            memory.deallocate()
            throw error
        }
        bytes = UnsafeRawBufferPointer(memory)
    }

    deinit { bytes.deallocate() }
}
