// Typed access to GGUF metadata. The optional helpers return `nil` when the key is absent or the
// value has an incompatible type; the `require…` helpers throw a GGUFError naming the key instead.

extension GGUFFile {
    /// The metadata value for `key`, or `nil`.
    public func value(_ key: String) -> GGUFValue? { metadata[key] }

    /// The model architecture (`general.architecture`, such as `gemma3` or `llama`).
    public var architecture: String? { string("general.architecture") }

    /// The value of `key` as an `Int`, when it is an integer of any width that fits.
    public func int(_ key: String) -> Int? { metadata[key]?.intValue }

    /// The value of `key` as a `UInt32`, when it is an integer of any width in `UInt32`'s range.
    public func uint32(_ key: String) -> UInt32? { int(key).flatMap { UInt32(exactly: $0) } }

    /// The value of `key` as a `Float`, when it is a floating-point number or an integer.
    public func float(_ key: String) -> Float? { metadata[key]?.doubleValue.map { Float($0) } }

    /// The value of `key` as a `Double`, when it is a floating-point number or an integer.
    public func double(_ key: String) -> Double? { metadata[key]?.doubleValue }

    /// The value of `key` when it is a boolean.
    public func bool(_ key: String) -> Bool? { metadata[key]?.boolValue }

    /// The value of `key` when it is a string.
    public func string(_ key: String) -> String? { metadata[key]?.stringValue }

    /// The value of `key` when it is an array.
    public func array(_ key: String) -> GGUFArray? { metadata[key]?.arrayValue }

    /// The value of `key` when it is an array of strings.
    public func stringArray(_ key: String) -> [String]? { array(key)?.stringValues }

    /// The value of `key` when it is an array of numbers, as `Float`s.
    /// - Complexity: O(*n*) when a conversion is needed.
    public func floatArray(_ key: String) -> [Float]? { array(key)?.floatValues }

    /// The value of `key` when it is an array of integers that all fit in `Int`.
    /// - Complexity: O(*n*).
    public func intArray(_ key: String) -> [Int]? { array(key)?.intValues }

    /// The value of `key` as an `Int`.
    /// - Throws: ``GGUFError/Code/missingKey`` or ``GGUFError/Code/typeMismatch``.
    public func requireInt(_ key: String) throws(GGUFError) -> Int {
        try require(key, "an integer") { $0.intValue }
    }

    /// The value of `key` as a `Float`.
    /// - Throws: ``GGUFError/Code/missingKey`` or ``GGUFError/Code/typeMismatch``.
    public func requireFloat(_ key: String) throws(GGUFError) -> Float {
        try require(key, "a number") { $0.doubleValue.map { Float($0) } }
    }

    /// The value of `key` as a `String`.
    /// - Throws: ``GGUFError/Code/missingKey`` or ``GGUFError/Code/typeMismatch``.
    public func requireString(_ key: String) throws(GGUFError) -> String {
        try require(key, "a string") { $0.stringValue }
    }

    /// The value of `key` as an array.
    /// - Throws: ``GGUFError/Code/missingKey`` or ``GGUFError/Code/typeMismatch``.
    public func requireArray(_ key: String) throws(GGUFError) -> GGUFArray {
        try require(key, "an array") { $0.arrayValue }
    }

    private func require<T>(_ key: String, _ expected: String, _ convert: (GGUFValue) -> T?) throws(GGUFError) -> T {
        guard let value = metadata[key] else {
            throw GGUFError(.missingKey, "metadata key '\(key)' is missing")
        }
        guard let converted = convert(value) else {
            throw GGUFError(.typeMismatch, "metadata '\(key)' is \(value.type), expected \(expected)")
        }
        return converted
    }
}
