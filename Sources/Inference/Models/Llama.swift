// Llama family (Llama 2/3, Qwen2), as described by the Llama papers and the GGUF metadata keys
// `llama.*` / `qwen2.*` that llama.cpp's converter writes:
// - pre-norm blocks: RMSNorm → attention → residual; RMSNorm → SwiGLU → residual; final RMSNorm;
// - grouped-query attention with q·k scaled by 1/√head_dim; RoPE base `{arch}.rope.freq_base`,
//   adjacent-pair rotation for Llama and NEOX (half-split) rotation for Qwen2; optional per-frequency
//   factors in `rope_freqs.weight` (Llama 3.1 long-context scaling);
// - Qwen2 adds biases to the q, k and v projections;
// - output head `output.weight`, or the embedding when the file ties them.

public import GGUF
internal import LMCacheCore
internal import Kernels

/// Llama 3 / Qwen2 family text model.
public final class LlamaModel: LanguageModel {
    let core: TransformerCore

    public let identity: String

    /// Reads hyperparameters and maps the weights of a `llama` or `qwen2` GGUF file.
    /// - Throws: ``InferenceError`` for missing keys or tensors, wrong shapes, or unsupported tensor types.
    public init(file: GGUFFile) throws(InferenceError) {
        guard let arch = file.architecture, arch == "llama" || arch == "qwen2" else {
            throw InferenceError.unsupportedModel("not a llama or qwen2 file")
        }
        let source = TensorSource(file: file)
        let hidden = try file.requireHyperparameter(arch, "embedding_length")
        let layerCount = try file.requireHyperparameter(arch, "block_count")
        let heads = try file.requireHyperparameter(arch, "attention.head_count")
        let kvHeads = file.hyperparameter(arch, "attention.head_count_kv") ?? heads
        let headDim = file.hyperparameter(arch, "attention.key_length") ?? hidden / heads
        let ffn = try file.requireHyperparameter(arch, "feed_forward_length")
        guard heads % kvHeads == 0, headDim % 2 == 0 else {
            throw InferenceError.invalidModel("\(heads) heads, \(kvHeads) KV heads, head size \(headDim) do not fit")
        }
        let embedInfo = try source.info("token_embd.weight")
        guard embedInfo.shape.count == 2, embedInfo.shape[0] == hidden else {
            throw InferenceError.invalidModel("token_embd.weight has shape \(embedInfo.shape)")
        }
        let configuration = ModelConfiguration(
            architecture: arch, vocabularySize: embedInfo.shape[1], hiddenSize: hidden, layers: layerCount,
            heads: heads, kvHeads: kvHeads, headDim: headDim, feedForwardSize: ffn,
            contextLength: file.hyperparameter(arch, "context_length") ?? 4096)
        let ropeDims = file.hyperparameter(arch, "rope.dimension_count") ?? headDim
        guard ropeDims <= headDim, ropeDims % 2 == 0 else {
            throw InferenceError.invalidModel("RoPE over \(ropeDims) of \(headDim) values per head")
        }
        let ropeBase = file.hyperparameterFloat(arch, "rope.freq_base") ?? 10_000
        var frequencies = Ops.ropeFrequencies(dimensions: ropeDims, base: ropeBase)
        let ropeFactors = try source.optionalVector("rope_freqs.weight", count: ropeDims / 2)
        if let factors = ropeFactors {
            for i in frequencies.indices { frequencies[i] /= factors[i] }
        }
        var spec = TransformerSpec(
            configuration: configuration,
            rmsEpsilon: file.hyperparameterFloat(arch, "attention.layer_norm_rms_epsilon")
                ?? (arch == "qwen2" ? 1e-6 : 1e-5),
            embeddingScale: nil,
            attentionScale: 1 / Float(headDim).squareRoot(),
            activation: .silu,
            rope: arch == "qwen2" ? .neox : .normal,
            ropeFrequencies: Array(repeating: frequencies, count: layerCount),
            windows: Array(repeating: 0, count: layerCount))
        spec.ropeBases = Array(repeating: ropeBase, count: layerCount)
        spec.ropeFactors = ropeFactors

        var layers: [LayerWeights] = []
        layers.reserveCapacity(layerCount)
        for l in 0..<layerCount {
            let p = "blk.\(l)."
            layers.append(
                LayerWeights(
                    attentionNorm: try source.vector(p + "attn_norm.weight", count: hidden),
                    q: try source.matrix(p + "attn_q.weight", columns: hidden, rows: heads * headDim),
                    k: try source.matrix(p + "attn_k.weight", columns: hidden, rows: kvHeads * headDim),
                    v: try source.matrix(p + "attn_v.weight", columns: hidden, rows: kvHeads * headDim),
                    o: try source.matrix(p + "attn_output.weight", columns: heads * headDim, rows: hidden),
                    qBias: try source.optionalVector(p + "attn_q.bias", count: heads * headDim),
                    kBias: try source.optionalVector(p + "attn_k.bias", count: kvHeads * headDim),
                    vBias: try source.optionalVector(p + "attn_v.bias", count: kvHeads * headDim),
                    qNorm: nil, kNorm: nil, postAttentionNorm: nil,
                    ffnNorm: try source.vector(p + "ffn_norm.weight", count: hidden),
                    gate: try source.matrix(p + "ffn_gate.weight", columns: hidden, rows: ffn),
                    up: try source.matrix(p + "ffn_up.weight", columns: hidden, rows: ffn),
                    down: try source.matrix(p + "ffn_down.weight", columns: ffn, rows: hidden),
                    postFFNNorm: nil))
        }
        let embedding = try source.matrix("token_embd.weight", columns: hidden)
        let output = source.has("output.weight") ? try source.matrix("output.weight", columns: hidden) : embedding
        core = TransformerCore(
            file: file, spec: spec, layers: layers, embedding: embedding,
            outputNorm: try source.vector("output_norm.weight", count: hidden), output: output)
        identity = file.fingerprint
    }
}
