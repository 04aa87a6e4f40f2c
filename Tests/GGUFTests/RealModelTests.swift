import GGUF
import LMCacheTestSupport
import Testing

@Suite("GGUF reader on the default model (Gemma 3 270M Q4_K_M)")
struct RealModelTests {
    @Test("metadata of the Gemma 3 model")
    func metadata() throws {
        let file = try GGUFFile(contentsOf: try TestModel.requirePath())
        #expect(file.version == 3)
        #expect(file.architecture == "gemma3")
        #expect(file.int("gemma3.block_count") == 18)
        #expect(file.int("gemma3.embedding_length") == 640)
        #expect(file.int("gemma3.attention.head_count") == 4)
        #expect(file.int("gemma3.attention.head_count_kv") == 1)
        #expect(file.int("gemma3.attention.sliding_window") == 512)
        #expect(file.float("gemma3.rope.freq_base") == 1_000_000)
        #expect(file.string("tokenizer.ggml.model") == "llama")
        #expect(file.int("tokenizer.ggml.bos_token_id") == 2)
        #expect(file.bool("tokenizer.ggml.add_bos_token") == true)
        let tokens = try #require(file.stringArray("tokenizer.ggml.tokens"))
        #expect(tokens.count == 262_144)
        #expect(tokens[2] == "<bos>")
        #expect(file.array("tokenizer.ggml.scores")?.count == 262_144)
        #expect(file.array("tokenizer.ggml.token_type")?.elementType == .int32)
        #expect(file.alignment == 32)
        #expect(file.dataOffset == 6_525_120)
    }

    @Test("tensor infos of the Gemma 3 model")
    func tensors() throws {
        let file = try GGUFFile(contentsOf: try TestModel.requirePath())
        #expect(file.tensors.count == 236)
        #expect(file.tensors.first?.name == "output_norm.weight")

        let embedding = try #require(file.tensor(named: "token_embd.weight"))
        #expect(embedding.shape == [640, 262_144])
        #expect(embedding.type == .q8_0)
        #expect(embedding.offset == 6_527_680)
        #expect(embedding.byteCount == 178_257_920)

        let attnK = try #require(file.tensor(named: "blk.0.attn_k.weight"))
        #expect(attnK.shape == [640, 256])
        #expect(attnK.type == .q5_0)
        #expect(attnK.byteCount == 112_640)

        let attnOut = try #require(file.tensor(named: "blk.0.attn_output.weight"))
        #expect(attnOut.shape == [1024, 640])
        #expect(attnOut.type == .q4_K)

        let norm = try #require(file.tensor(named: "blk.17.post_ffw_norm.weight"))
        #expect(norm.shape == [640])
        #expect(norm.type == .f32)
        #expect(norm.offset + norm.byteCount <= file.fileSize)

        file.prefetch()
        // Every tensor's bytes are reachable and have the advertised size.
        for tensor in file.tensors {
            #expect(file.withBytes(of: tensor) { $0.count } == tensor.byteCount)
        }
        let types = Set(file.tensors.map(\.type))
        #expect(types.isSubset(of: [.f32, .q8_0, .q5_0, .q4_K, .q6_K]))

        // A norm weight is ordinary float data.
        let firstNormValue = file.withBytes(of: norm) { $0.loadUnaligned(as: Float.self) }
        #expect(firstNormValue.isFinite)
    }

    @Test("the fingerprint of the model is stable")
    func fingerprint() throws {
        let path = try TestModel.requirePath()
        let a = try GGUFFile(contentsOf: path).fingerprint
        let b = try GGUFFile(contentsOf: path).fingerprint
        #expect(a == b)
        #expect(a.count == 32)
    }
}

@Suite("GGUF reader on truncated copies of the default model")
struct TruncatedModelTests {
    @Test("prefixes of the model's header and data are rejected with a precise error")
    func truncatedModel() throws {
        let path = try TestModel.requirePath()
        let file = try GGUFFile(contentsOf: path)
        let dataOffset = file.dataOffset
        let prefixLength = dataOffset + 4096
        let bytes: [UInt8] = file.withFileBytes { Array($0.prefix(prefixLength)) }
        let dir = try TemporaryDirectory()
        let lengths = [0, 3, 4, 7, 8, 15, 23, 24, 100, 1000, 65_536, 1_000_000, 3_000_000, dataOffset - 1]
        for length in lengths {
            let truncated = try dir.write(Array(bytes.prefix(length)))
            do {
                _ = try GGUFFile(contentsOf: truncated)
                Issue.record("a \(length)-byte prefix was accepted")
            } catch {
                #expect(
                    error.code == .truncated || error.code == .limitExceeded,
                    "\(length)-byte prefix: \(error)"
                )
            }
        }
        // Cut at or inside the tensor data: the header parses, the tensors do not fit.
        for length in [dataOffset, prefixLength] {
            let cut = try dir.write(Array(bytes.prefix(length)))
            do {
                _ = try GGUFFile(contentsOf: cut)
                Issue.record("a file cut at \(length) bytes, in the tensor data, was accepted")
            } catch {
                #expect(error.code == .tensorOutOfBounds)
                #expect(error.message.contains("output_norm.weight") || error.message.contains("token_embd.weight"))
                #expect(error.message.contains("truncated"))
            }
        }
    }
}
