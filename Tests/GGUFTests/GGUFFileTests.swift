import GGUF
import LMCacheTestSupport
import Testing

@Suite("GGUF reader on well-formed files")
struct GGUFFileTests {
    @Test("reads metadata of every value type, nested arrays and tensor infos")
    func readsSample() throws {
        let dir = try TemporaryDirectory()
        let (bytes, dataOffset) = GGUFBuilder.sample().build()
        let file = try GGUFFile(contentsOf: try dir.write(bytes))

        #expect(file.version == 3)
        #expect(file.fileSize == bytes.count)
        #expect(file.dataOffset == dataOffset)
        #expect(file.alignment == 32)
        #expect(file.architecture == "llama")
        #expect(file.metadata["test.u8"] == .uint8(200))
        #expect(file.metadata["test.i8"] == .int8(-5))
        #expect(file.metadata["test.u16"] == .uint16(60000))
        #expect(file.metadata["test.i16"] == .int16(-30000))
        #expect(file.metadata["test.u32"] == .uint32(4_000_000_000))
        #expect(file.metadata["test.i32"] == .int32(-2_000_000_000))
        #expect(file.metadata["test.u64"] == .uint64(1 << 40))
        #expect(file.metadata["test.i64"] == .int64(-(1 << 40)))
        #expect(file.metadata["test.f32"] == .float32(1.5))
        #expect(file.metadata["test.f64"] == .float64(-2.25))
        #expect(file.metadata["test.bool"] == .bool(true))
        #expect(file.stringArray("test.strings") == ["a", "", "▁héllo"])
        #expect(file.intArray("test.ints") == [1, -2, 3])
        #expect(file.floatArray("test.floats") == [0.5, -1])
        #expect(file.array("test.nested") == .array([.int32([1, 2]), .string(["x"])]))
        #expect(file.metadataKeys.first == "general.architecture")
        #expect(file.metadataKeys.count == file.metadata.count)

        // Typed helpers convert between integer widths and reject other types.
        #expect(file.int("test.u8") == 200)
        #expect(file.int("test.i64") == -(1 << 40))
        #expect(file.uint32("test.u32") == 4_000_000_000)
        #expect(file.uint32("test.i8") == nil)
        #expect(file.float("test.f64") == -2.25)
        #expect(file.float("test.u16") == 60000)
        #expect(file.string("test.u8") == nil)
        #expect(file.bool("test.bool") == true)
        #expect(throws: GGUFError.self) { try file.requireInt("missing.key") }
        do {
            _ = try file.requireString("test.u8")
            Issue.record("expected a type mismatch")
        } catch {
            #expect(error.code == .typeMismatch)
            #expect(error.message.contains("test.u8"))
        }

        #expect(file.tensors.map(\.name) == ["a.weight", "b.weight"])
        let a = try #require(file.tensor(named: "a.weight"))
        #expect(a.shape == [4, 2])
        #expect(a.type == .f32)
        #expect(a.offset == dataOffset)
        #expect(a.byteCount == 32)
        #expect(a.rowCount == 2)
        #expect(a.rowByteCount == 16)
        let values = file.withBytes(of: a) { raw in
            (0..<8).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        }
        #expect(values == (0..<8).map(Float.init))
        let viaSpan = file.withSpan(of: a) { span in
            (0..<8).map { span.unsafeLoadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        }
        #expect(viaSpan == values)
        #expect(file.withSpan(of: a) { $0.byteCount } == 32)
        let b = try #require(file.tensor(named: "b.weight"))
        #expect(b.type == .q8_0)
        #expect(b.byteCount == 34)
        #expect(b.offset == dataOffset + 32)
        #expect(file.tensor(named: "c.weight") == nil)
    }

    @Test("reads version 2 files and honours general.alignment")
    func versionTwoAndAlignment() throws {
        let dir = try TemporaryDirectory()
        var builder = GGUFBuilder.sample()
        builder.version = 2
        builder.alignment = 64
        builder.add("general.alignment", uint32: 64)
        let (bytes, dataOffset) = builder.build()
        let file = try GGUFFile(contentsOf: try dir.write(bytes))
        #expect(file.version == 2)
        #expect(file.alignment == 64)
        #expect(file.dataOffset == dataOffset)
        #expect(file.dataOffset % 64 == 0)
        #expect(file.tensor(named: "b.weight")?.offset == dataOffset + 64)
    }

    @Test("a file without tensors needs no data section")
    func noTensors() throws {
        let dir = try TemporaryDirectory()
        var builder = GGUFBuilder()
        builder.add("general.name", string: "empty")
        let file = try GGUFFile(contentsOf: try dir.write(builder.build().bytes))
        #expect(file.tensors.isEmpty)
        #expect(file.string("general.name") == "empty")
        #expect(file.fingerprint.count == 32)
    }

    @Test("the fingerprint is deterministic and depends on metadata and tensor data")
    func fingerprint() throws {
        let dir = try TemporaryDirectory()
        let sample = GGUFBuilder.sample()
        let one = try GGUFFile(contentsOf: try dir.write(sample.build().bytes, name: "one.gguf"))
        let same = try GGUFFile(contentsOf: try dir.write(sample.build().bytes, name: "same.gguf"))
        #expect(one.fingerprint == same.fingerprint)
        #expect(one.fingerprint.count == 32)
        #expect(one.fingerprint.allSatisfy { $0.isHexDigit && !$0.isUppercase })

        var renamed = sample
        renamed.add("general.name", string: "other")
        let other = try GGUFFile(contentsOf: try dir.write(renamed.build().bytes, name: "other.gguf"))
        #expect(other.fingerprint != one.fingerprint)

        var changedData = sample
        changedData.tensors[1].data[0] = 8
        let changed = try GGUFFile(contentsOf: try dir.write(changedData.build().bytes, name: "changed.gguf"))
        #expect(changed.fingerprint != one.fingerprint)
    }

    @Test("errors describe themselves with code, offset and message")
    func errorDescription() {
        let error = GGUFError(.truncated, "file ends early", offset: 12)
        #expect(error.description == "GGUF truncated at offset 12: file ends early")
        #expect(GGUFError(.badMagic, "x").description == "GGUF badMagic: x")
    }
}
