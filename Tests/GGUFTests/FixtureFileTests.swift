import GGUF
import Testing

/// The tiny model fixtures that scripts/reference/make_tiny_models.py writes with the `gguf`
/// Python package, read from the source tree (they are the Inference tests' resources).
@Suite("GGUF reader on files written by the gguf Python package")
struct FixtureFileTests {
    private static func fixture(_ name: String) -> String {
        // #filePath is …/Tests/GGUFTests/FixtureFileTests.swift.
        let tests = #filePath.split(separator: "/").dropLast(2).joined(separator: "/")
        return "/" + tests + "/InferenceTests/Resources/" + name
    }

    @Test("tiny Llama: metadata, tokenizer arrays and tensors of three types")
    func tinyLlama() throws {
        let file = try GGUFFile(contentsOf: Self.fixture("tiny-llama.gguf"))
        #expect(file.architecture == "llama")
        #expect(file.int("llama.block_count") == 2)
        #expect(file.int("llama.embedding_length") == 64)
        #expect(file.int("llama.attention.head_count_kv") == 2)
        #expect(file.string("tokenizer.ggml.model") == "gpt2")
        let tokens = try #require(file.stringArray("tokenizer.ggml.tokens"))
        #expect(file.stringArray("tokenizer.ggml.merges")?.isEmpty == false)
        let embedding = try #require(file.tensor(named: "token_embd.weight"))
        #expect(embedding.shape == [64, tokens.count])
        #expect(embedding.type == .f16)
        #expect(embedding.byteCount == 64 * tokens.count * 2)
        #expect(file.tensor(named: "output.weight")?.type == .q8_0)
        #expect(file.tensor(named: "blk.1.ffn_down.weight")?.shape == [128, 64])
        #expect(file.tensor(named: "blk.0.attn_k.weight")?.shape == [64, 32])
        #expect(file.tensor(named: "output_norm.weight")?.type == .f32)
        #expect(file.tensors.allSatisfy { $0.offset % file.alignment == 0 })
        #expect(file.tensors.count == 3 + 2 * 9)
    }

    @Test("tiny Qwen2: biases and a tied output")
    func tinyQwen2() throws {
        let file = try GGUFFile(contentsOf: Self.fixture("tiny-qwen2.gguf"))
        #expect(file.architecture == "qwen2")
        #expect(file.tensor(named: "blk.0.attn_q.bias")?.shape == [64])
        #expect(file.tensor(named: "blk.0.attn_k.bias")?.shape == [32])
        #expect(file.tensor(named: "output.weight") == nil)
        #expect(file.tensor(named: "token_embd.weight")?.type == .q8_0)
        #expect(file.fingerprint != (try GGUFFile(contentsOf: Self.fixture("tiny-llama.gguf")).fingerprint))
    }
}
