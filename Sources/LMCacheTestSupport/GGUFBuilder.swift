/// Builds GGUF files byte by byte, so that tests can write valid files and then break them.
package struct GGUFBuilder {
    package struct Tensor {
        package var name: String
        package var shape: [Int64]
        package var type: UInt32
        /// Offset relative to the data section; `nil` means "next aligned offset".
        package var offset: UInt64?
        package var data: [UInt8]
    }

    package var version: UInt32 = 3
    package var alignment = 32
    /// Pre-encoded metadata entries (key, type id, value bytes).
    package var entries: [(key: String, type: UInt32, value: [UInt8])] = []
    package var tensors: [Tensor] = []
    /// Overrides the counts written in the header.
    package var tensorCountOverride: UInt64?
    package var kvCountOverride: UInt64?

    /// An empty version-3 file.
    package init() {}

    package mutating func add(_ key: String, uint32 value: UInt32) { entries.append((key, 4, Self.le(value))) }
    package mutating func add(_ key: String, int32 value: Int32) { entries.append((key, 5, Self.le(value))) }
    package mutating func add(_ key: String, uint8 value: UInt8) { entries.append((key, 0, [value])) }
    package mutating func add(_ key: String, int8 value: Int8) { entries.append((key, 1, [UInt8(bitPattern: value)])) }
    package mutating func add(_ key: String, uint16 value: UInt16) { entries.append((key, 2, Self.le(value))) }
    package mutating func add(_ key: String, int16 value: Int16) { entries.append((key, 3, Self.le(value))) }
    package mutating func add(_ key: String, uint64 value: UInt64) { entries.append((key, 10, Self.le(value))) }
    package mutating func add(_ key: String, int64 value: Int64) { entries.append((key, 11, Self.le(value))) }
    package mutating func add(_ key: String, float32 value: Float) {
        entries.append((key, 6, Self.le(value.bitPattern)))
    }
    package mutating func add(_ key: String, float64 value: Double) {
        entries.append((key, 12, Self.le(value.bitPattern)))
    }
    package mutating func add(_ key: String, bool value: Bool) { entries.append((key, 7, [value ? 1 : 0])) }
    package mutating func add(_ key: String, string value: String) { entries.append((key, 8, Self.string(value))) }
    package mutating func add(_ key: String, strings: [String]) {
        entries.append((key, 9, Self.le(UInt32(8)) + Self.le(UInt64(strings.count)) + strings.flatMap(Self.string)))
    }
    package mutating func add(_ key: String, int32s: [Int32]) {
        entries.append((key, 9, Self.le(UInt32(5)) + Self.le(UInt64(int32s.count)) + int32s.flatMap { Self.le($0) }))
    }
    package mutating func add(_ key: String, float32s: [Float]) {
        entries.append(
            (key, 9, Self.le(UInt32(6)) + Self.le(UInt64(float32s.count)) + float32s.flatMap { Self.le($0.bitPattern) })
        )
    }
    package mutating func addRaw(_ key: String, type: UInt32, value: [UInt8]) { entries.append((key, type, value)) }

    package mutating func addTensor(_ name: String, shape: [Int64], type: UInt32, data: [UInt8], offset: UInt64? = nil)
    {
        tensors.append(Tensor(name: name, shape: shape, type: type, offset: offset, data: data))
    }

    /// The file's bytes, and the offset where the data section starts.
    package func build() -> (bytes: [UInt8], dataOffset: Int) {
        var out: [UInt8] = Array("GGUF".utf8)
        out += Self.le(version)
        out += Self.le(tensorCountOverride ?? UInt64(tensors.count))
        out += Self.le(kvCountOverride ?? UInt64(entries.count))
        for entry in entries {
            out += Self.string(entry.key) + Self.le(entry.type) + entry.value
        }
        var next: UInt64 = 0
        var placed: [(offset: Int, data: [UInt8])] = []
        for tensor in tensors {
            out += Self.string(tensor.name)
            out += Self.le(UInt32(tensor.shape.count))
            for dim in tensor.shape { out += Self.le(dim) }
            out += Self.le(tensor.type)
            let offset = tensor.offset ?? next
            out += Self.le(offset)
            // Offsets beyond a small file are written into the header only (tests of bad offsets).
            guard offset < 1 << 24 else { continue }
            placed.append((Int(offset), tensor.data))
            let end = Int(offset) + tensor.data.count
            next = UInt64((end + alignment - 1) / alignment * alignment)
        }
        while out.count % alignment != 0 { out.append(0) }
        let dataOffset = out.count
        var data: [UInt8] = []
        for (offset, bytes) in placed where !bytes.isEmpty {
            if data.count < offset + bytes.count {
                data += [UInt8](repeating: 0, count: offset + bytes.count - data.count)
            }
            data.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        }
        while data.count % alignment != 0 { data.append(0) }
        return (out + data, dataOffset)
    }

    package static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    package static func string(_ s: String) -> [UInt8] { le(UInt64(s.utf8.count)) + Array(s.utf8) }

    /// A small valid file with metadata of every type and two tensors.
    package static func sample() -> GGUFBuilder {
        var b = GGUFBuilder()
        b.add("general.architecture", string: "llama")
        b.add("test.u8", uint8: 200)
        b.add("test.i8", int8: -5)
        b.add("test.u16", uint16: 60000)
        b.add("test.i16", int16: -30000)
        b.add("test.u32", uint32: 4_000_000_000)
        b.add("test.i32", int32: -2_000_000_000)
        b.add("test.u64", uint64: 1 << 40)
        b.add("test.i64", int64: -(1 << 40))
        b.add("test.f32", float32: 1.5)
        b.add("test.f64", float64: -2.25)
        b.add("test.bool", bool: true)
        b.add("test.strings", strings: ["a", "", "▁héllo"])
        b.add("test.ints", int32s: [1, -2, 3])
        b.add("test.floats", float32s: [0.5, -1])
        // [[1, 2], ["x"]]: an array of arrays with different element types.
        let inner1 = le(UInt32(5)) + le(UInt64(2)) + le(Int32(1)) + le(Int32(2))
        let inner2 = le(UInt32(8)) + le(UInt64(1)) + string("x")
        b.addRaw("test.nested", type: 9, value: le(UInt32(9)) + le(UInt64(2)) + inner1 + inner2)
        b.addTensor("a.weight", shape: [4, 2], type: 0, data: (0..<8).flatMap { le(Float($0).bitPattern) })
        b.addTensor("b.weight", shape: [32], type: 8, data: [UInt8](repeating: 7, count: 34))
        return b
    }
}
