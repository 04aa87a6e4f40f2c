import GGUF
import LMCacheTestSupport
import Testing

@Suite("GGUF reader on hostile and corrupt files")
struct HostileInputTests {
    /// Parses `bytes` and returns the error's code, or `nil` when the file was accepted.
    private func code(_ bytes: [UInt8], in dir: TemporaryDirectory) throws -> GGUFError.Code? {
        let path = try dir.write(bytes)
        do {
            _ = try GGUFFile(contentsOf: path)
            return nil
        } catch {
            #expect(!error.message.isEmpty)
            return error.code
        }
    }

    private func parseError(_ bytes: [UInt8], in dir: TemporaryDirectory) throws -> GGUFError? {
        let path = try dir.write(bytes)
        do {
            _ = try GGUFFile(contentsOf: path)
            return nil
        } catch {
            return error
        }
    }

    @Test("every prefix of the header is rejected as truncated")
    func truncatedHeader() throws {
        let dir = try TemporaryDirectory()
        let (bytes, dataOffset) = GGUFBuilder.sample().build()
        for length in 0..<dataOffset {
            let code = try code(Array(bytes[0..<length]), in: dir)
            #expect(
                code == .truncated || code == .limitExceeded,
                "prefix of \(length) bytes gave \(String(describing: code))"
            )
        }
    }

    @Test("prefixes that cut the tensor data are rejected")
    func truncatedData() throws {
        let dir = try TemporaryDirectory()
        let (bytes, dataOffset) = GGUFBuilder.sample().build()
        for length in stride(from: dataOffset, to: dataOffset + 66, by: 1) {
            let code = try code(Array(bytes[0..<length]), in: dir)
            #expect(code == .tensorOutOfBounds, "prefix of \(length) bytes gave \(String(describing: code))")
        }
        #expect(try code(bytes, in: dir) == nil)
    }

    @Test("wrong magic")
    func wrongMagic() throws {
        let dir = try TemporaryDirectory()
        var bytes = GGUFBuilder.sample().build().bytes
        bytes[0] = UInt8(ascii: "X")
        #expect(try code(bytes, in: dir) == .badMagic)
        #expect(try code(Array("GGML".utf8) + [UInt8](repeating: 0, count: 60), in: dir) == .badMagic)
    }

    @Test("unsupported versions", arguments: [0, 1, 4, 0x0300_0000, 0xFFFF_FFFF] as [UInt32])
    func unsupportedVersion(version: UInt32) throws {
        let dir = try TemporaryDirectory()
        var builder = GGUFBuilder.sample()
        builder.version = version
        let error = try #require(try parseError(builder.build().bytes, in: dir))
        #expect(error.code == .unsupportedVersion)
        #expect(error.offset == 4)
        if version == 0x0300_0000 {
            #expect(error.message.contains("big-endian"))
        }
    }

    @Test("absurd tensor and metadata counts")
    func absurdCounts() throws {
        let dir = try TemporaryDirectory()
        for count in [UInt64.max, UInt64(Int.max), 1 << 40, 1_000_000] {
            var builder = GGUFBuilder.sample()
            builder.tensorCountOverride = count
            #expect(try code(builder.build().bytes, in: dir) == .limitExceeded)
            builder = GGUFBuilder.sample()
            builder.kvCountOverride = count
            #expect(try code(builder.build().bytes, in: dir) == .limitExceeded)
        }
        // One more entry than there is: the parser runs into the tensor infos and fails cleanly.
        var builder = GGUFBuilder.sample()
        builder.kvCountOverride = UInt64(builder.entries.count + 1)
        #expect(try code(builder.build().bytes, in: dir) != nil)
    }

    @Test("absurd string lengths and array counts")
    func absurdLengths() throws {
        let dir = try TemporaryDirectory()
        for length in [UInt64.max, UInt64(Int.max), 1 << 33, 100_000] {
            var builder = GGUFBuilder()
            builder.addRaw("big.string", type: 8, value: GGUFBuilder.le(length) + Array("abc".utf8))
            let error = try #require(try parseError(builder.build().bytes, in: dir))
            #expect(error.code == .limitExceeded)
            #expect(error.message.contains("big.string"))

            for elementType: UInt32 in [0, 4, 8, 9, 12] {
                builder = GGUFBuilder()
                builder.addRaw(
                    "big.array",
                    type: 9,
                    value: GGUFBuilder.le(elementType) + GGUFBuilder.le(length) + [1, 2, 3, 4]
                )
                let error = try #require(try parseError(builder.build().bytes, in: dir))
                #expect(error.code == .limitExceeded, "element type \(elementType): \(error)")
                #expect(error.message.contains("big.array"))
            }
        }
        // A key whose length runs past the end of the file.
        var builder = GGUFBuilder()
        builder.add("general.name", string: "x")
        var bytes = builder.build().bytes
        bytes.replaceSubrange(24..<32, with: GGUFBuilder.le(UInt64(1) << 62))
        #expect(try code(bytes, in: dir) == .limitExceeded)
    }

    @Test("arrays nested too deep")
    func deepNesting() throws {
        let dir = try TemporaryDirectory()
        // Ten levels of one-element arrays of arrays, ending in an empty int32 array.
        var value = GGUFBuilder.le(UInt32(5)) + GGUFBuilder.le(UInt64(0))
        for _ in 0..<10 { value = GGUFBuilder.le(UInt32(9)) + GGUFBuilder.le(UInt64(1)) + value }
        var builder = GGUFBuilder()
        builder.addRaw("deep", type: 9, value: value)
        #expect(try code(builder.build().bytes, in: dir) == .limitExceeded)
    }

    @Test("unknown value types, bad booleans, bad UTF-8, duplicate keys")
    func badMetadata() throws {
        let dir = try TemporaryDirectory()
        var builder = GGUFBuilder()
        builder.addRaw("weird", type: 13, value: [0, 0, 0, 0])
        #expect(try code(builder.build().bytes, in: dir) == .invalidValueType)

        builder = GGUFBuilder()
        builder.addRaw("weird.array", type: 9, value: GGUFBuilder.le(UInt32(99)) + GGUFBuilder.le(UInt64(0)))
        #expect(try code(builder.build().bytes, in: dir) == .invalidValueType)

        builder = GGUFBuilder()
        builder.addRaw("flag", type: 7, value: [2])
        #expect(try code(builder.build().bytes, in: dir) == .invalidValue)

        builder = GGUFBuilder()
        builder.addRaw("text", type: 8, value: GGUFBuilder.le(UInt64(2)) + [0xC3, 0x28])
        #expect(try code(builder.build().bytes, in: dir) == .invalidUTF8)

        builder = GGUFBuilder()
        builder.add("same", uint32: 1)
        builder.add("same", uint32: 2)
        #expect(try code(builder.build().bytes, in: dir) == .duplicateKey)
    }

    @Test("invalid alignment", arguments: [0, 3, 48] as [UInt32])
    func badAlignment(alignment: UInt32) throws {
        let dir = try TemporaryDirectory()
        var builder = GGUFBuilder.sample()
        builder.add("general.alignment", uint32: alignment)
        #expect(try code(builder.build().bytes, in: dir) == .invalidAlignment)
        builder = GGUFBuilder.sample()
        builder.add("general.alignment", uint64: 32)
        #expect(try code(builder.build().bytes, in: dir) == .invalidAlignment)
    }

    @Test("unknown tensor types", arguments: [4, 5, 31, 40, 1000, UInt32.max] as [UInt32])
    func unknownTensorType(type: UInt32) throws {
        let dir = try TemporaryDirectory()
        var builder = GGUFBuilder.sample()
        builder.tensors[0].type = type
        let error = try #require(try parseError(builder.build().bytes, in: dir))
        #expect(error.code == .unknownTensorType)
        #expect(error.message.contains("a.weight"))
    }

    @Test("invalid tensor shapes")
    func badShapes() throws {
        let dir = try TemporaryDirectory()
        let cases: [(shape: [Int64], type: UInt32)] = [
            ([1, 1, 1, 1, 1], 0),  // five dimensions
            ([-1, 4], 0),  // negative
            ([4, Int64.max], 0),  // element count overflows
            ([Int64.max / 2, 3], 0),  // element count overflows
            ([16, 2], 8),  // Q8_0 rows of 16 elements: not whole blocks
            ([1 << 60, 1 << 3], 0),  // byte count overflows
        ]
        for (shape, type) in cases {
            var builder = GGUFBuilder.sample()
            builder.tensors[1].shape = shape
            builder.tensors[1].type = type
            let error = try #require(try parseError(builder.build().bytes, in: dir), "shape \(shape)")
            #expect(error.code == .invalidTensorInfo, "shape \(shape): \(error)")
            #expect(error.message.contains("b.weight"))
        }
    }

    @Test("tensor data out of bounds, misaligned or overlapping")
    func badOffsets() throws {
        let dir = try TemporaryDirectory()
        for offset: UInt64 in [1 << 20, UInt64.max - 31, UInt64.max, 1 << 63, 64] {
            var builder = GGUFBuilder.sample()
            builder.tensors[1].offset = offset
            let (bytes, _) = builder.build()
            // Cut the file back to its real size so that a large offset points past the end.
            let trimmed = Array(bytes.prefix(GGUFBuilder.sample().build().bytes.count))
            let error = try #require(try parseError(trimmed, in: dir), "offset \(offset)")
            #expect(error.code == .tensorOutOfBounds, "offset \(offset): \(error)")
            #expect(error.message.contains("b.weight"))
        }

        var builder = GGUFBuilder.sample()
        builder.tensors[1].offset = 4
        #expect(try code(builder.build().bytes, in: dir) == .tensorOutOfBounds)  // misaligned

        builder = GGUFBuilder.sample()
        builder.tensors[1].offset = 0
        #expect(try code(builder.build().bytes, in: dir) == .tensorOverlap)

        builder = GGUFBuilder.sample()
        builder.tensors[1].name = "a.weight"
        #expect(try code(builder.build().bytes, in: dir) == .duplicateTensor)

        builder = GGUFBuilder.sample()
        builder.tensors[1].name = String(repeating: "n", count: 64)
        #expect(try code(builder.build().bytes, in: dir) == .limitExceeded)
    }

    @Test("a missing file and a directory give I/O errors")
    func ioErrors() throws {
        let dir = try TemporaryDirectory()
        #expect(throws: GGUFError.self) { try GGUFFile(contentsOf: dir.path + "/absent.gguf") }
        do {
            _ = try GGUFFile(contentsOf: dir.path)
            Issue.record("a directory was accepted")
        } catch {
            #expect(error.code == .ioError)
        }
    }

    @Test("random corruption never crashes the reader")
    func randomCorruption() throws {
        let dir = try TemporaryDirectory()
        let (original, dataOffset) = GGUFBuilder.sample().build()
        var generator = SplitMix64(seed: 42)
        for _ in 0..<300 {
            var bytes = original
            for _ in 0..<(1 + Int(generator.next() % 4)) {
                let index = Int(generator.next() % UInt64(dataOffset))
                bytes[index] = UInt8(truncatingIfNeeded: generator.next())
            }
            _ = try code(bytes, in: dir)  // Any outcome but a crash is fine.
        }
    }
}

/// A small deterministic random number generator for corruption tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        // Wrapping arithmetic is the generator's definition.
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
