// Gemma 3 (text), as described by Google's Gemma 3 technical report and model card, and by the
// GGUF metadata keys `gemma3.*` that llama.cpp's converter writes:
// - token embedding scaled by √hidden; output head tied to the embedding;
// - per block: RMSNorm → attention → RMSNorm (post-attention) → residual; RMSNorm → GeGLU (tanh GELU)
//   → RMSNorm (post-FFN) → residual; the file's norm weights already include Gemma's "+1";
// - RMSNorm of each query and key head (QK norm), RoPE NEOX style, grouped-query attention with q
//   scaled by 1/√head_dim;
// - five local layers (sliding window, RoPE base 10 000) then one global layer (full causal, RoPE base
//   `gemma3.rope.freq_base`, 1 000 000 by default), repeating.

public import GGUF
internal import LMCacheCore
internal import Kernels

/// Gemma 3 text model.
public final class Gemma3Model: LanguageModel {
    /// Defaults of the architecture for keys a file may omit.
    public enum Defaults {
        /// RoPE base of the local (sliding-window) layers.
        public static let localRoPEBase: Float = 10_000
        /// RoPE base of the global layers.
        public static let globalRoPEBase: Float = 1_000_000
        /// Every `layerPatternPeriod`-th layer is global; the others are local.
        public static let layerPatternPeriod = 6
        /// Sliding window of the local layers.
        public static let slidingWindow = 512
        /// RMSNorm epsilon.
        public static let rmsEpsilon: Float = 1e-6
    }

    let core: TransformerCore

    public let identity: String

    /// Whether layer `index` attends over the whole context (the others use the sliding window).
    public func isGlobalLayer(_ index: Int) -> Bool { (index + 1) % Defaults.layerPatternPeriod == 0 }

    /// Reads hyperparameters and maps the weights of a `gemma3` GGUF file.
    /// - Throws: ``InferenceError`` for missing keys or tensors, wrong shapes, or unsupported tensor types.
    public init(file: GGUFFile) throws(InferenceError) {
        let arch = "gemma3"
        let source = TensorSource(file: file)
        let hidden = try file.requireHyperparameter(arch, "embedding_length")
        let layerCount = try file.requireHyperparameter(arch, "block_count")
        let heads = try file.requireHyperparameter(arch, "attention.head_count")
        let kvHeads = file.hyperparameter(arch, "attention.head_count_kv") ?? heads
        let headDim = file.hyperparameter(arch, "attention.key_length") ?? 256
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
            contextLength: file.hyperparameter(arch, "context_length") ?? 32_768)
        let window = file.hyperparameter(arch, "attention.sliding_window") ?? Defaults.slidingWindow
        let globalBase = file.hyperparameterFloat(arch, "rope.freq_base") ?? Defaults.globalRoPEBase
        let localFrequencies = Ops.ropeFrequencies(dimensions: headDim, base: Defaults.localRoPEBase)
        let globalFrequencies = Ops.ropeFrequencies(dimensions: headDim, base: globalBase)
        let isGlobal = (0..<layerCount).map { ($0 + 1) % Defaults.layerPatternPeriod == 0 }
        var spec = TransformerSpec(
            configuration: configuration,
            rmsEpsilon: file.hyperparameterFloat(arch, "attention.layer_norm_rms_epsilon") ?? Defaults.rmsEpsilon,
            embeddingScale: Float(hidden).squareRoot(),
            attentionScale: 1 / Float(headDim).squareRoot(),
            activation: .geluTanh,
            rope: .neox,
            ropeFrequencies: isGlobal.map { $0 ? globalFrequencies : localFrequencies },
            windows: isGlobal.map { $0 ? 0 : window })
        spec.scalesQueries = true
        spec.ropeBases = isGlobal.map { $0 ? globalBase : Defaults.localRoPEBase }

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
                    qBias: nil, kBias: nil, vBias: nil,
                    qNorm: try source.vector(p + "attn_q_norm.weight", count: headDim),
                    kNorm: try source.vector(p + "attn_k_norm.weight", count: headDim),
                    postAttentionNorm: try source.vector(p + "post_attention_norm.weight", count: hidden),
                    ffnNorm: try source.vector(p + "ffn_norm.weight", count: hidden),
                    gate: try source.matrix(p + "ffn_gate.weight", columns: hidden, rows: ffn),
                    up: try source.matrix(p + "ffn_up.weight", columns: hidden, rows: ffn),
                    down: try source.matrix(p + "ffn_down.weight", columns: ffn, rows: hidden),
                    postFFNNorm: try source.vector(p + "post_ffw_norm.weight", count: hidden)))
        }
        let embedding = try source.matrix("token_embd.weight", columns: hidden)
        let output = source.has("output.weight") ? try source.matrix("output.weight", columns: hidden) : embedding
        core = TransformerCore(
            file: file, spec: spec, layers: layers, embedding: embedding,
            outputNorm: try source.vector("output_norm.weight", count: hidden), output: output)
        identity = file.fingerprint
    }
}
