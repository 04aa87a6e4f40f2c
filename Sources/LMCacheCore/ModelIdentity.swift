/// Which model produced a chunk's KV: part of every chunk key, so that two models never share KV.
///
/// `name` is what users call the model (it appears in key strings, as LMCache's keys carry the
/// model name); `fingerprint` pins the exact weights, e.g. a hash of the GGUF file's metadata and
/// tensor table, so that two different files with the same name never share KV either.
public struct ModelIdentity: Hashable, Sendable, CustomStringConvertible {
    /// The model's name as users know it, e.g. `"gemma-3-270m"`.
    public var name: String
    /// A deterministic fingerprint of the weights (hex or any stable text).
    public var fingerprint: String

    /// Creates an identity.
    public init(name: String, fingerprint: String) {
        self.name = name
        self.fingerprint = fingerprint
    }

    public var description: String { "\(name)#\(fingerprint)" }
}
