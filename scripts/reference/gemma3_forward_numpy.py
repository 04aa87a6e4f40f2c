#!/usr/bin/env python3
"""An exact-arithmetic forward pass of Gemma 3 (numpy) over the first tokens of the recorded
teacher-forced text, written from the public description of the architecture, as a semantic
reference for the engine and a check of llama.cpp's recording.

Usage: python3 scripts/reference/gemma3_forward_numpy.py MODEL.gguf gemma3-forward.json OUT.json [N]

Gemma 3 as implemented here: embeddings scaled by sqrt(n_embd); per layer RMSNorm (weights in the
file already include Gemma's +1) before attention, per-head RMSNorm of Q and K, NeoX RoPE with base
10,000 on local layers and the file's base (1,000,000) on every sixth (global) layer, grouped-query
attention scaled by 1/sqrt(head_dim), causal mask (and a 512-token sliding window on local layers,
which N < 512 never reaches), RMSNorm after attention, pre-FFN RMSNorm, GeGLU with tanh-GELU,
RMSNorm after the FFN, final RMSNorm, output tied to the embedding. Epsilon from the file.

OUT.json: {token_ids, n, top20: per position [[id, logit]...], max_abs_diff_top5_vs_llamacpp,
argmax_agreement, activations: {"l_out-<layer>": rows, "result_norm": rows} for the first 4
positions (layers 0, 5 and 17)}.
"""

import json
import math
import sys

import numpy as np
import gguf


def main():
    model, forward_json, out_path = sys.argv[1:4]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 32
    r = gguf.GGUFReader(model)

    def kv(key):
        f = r.fields[key]
        return f.parts[f.data[0]][0]

    n_embd = int(kv("gemma3.embedding_length"))
    n_layer = int(kv("gemma3.block_count"))
    H = int(kv("gemma3.attention.head_count"))
    Hkv = int(kv("gemma3.attention.head_count_kv"))
    d = int(kv("gemma3.attention.key_length"))
    eps = float(kv("gemma3.attention.layer_norm_rms_epsilon"))
    base_global = float(kv("gemma3.rope.freq_base"))
    base_local = 10000.0
    tensors = {t.name: t for t in r.tensors}

    def W(name, dtype=np.float64):
        t = tensors[name]
        return gguf.quants.dequantize(t.data, t.tensor_type).astype(dtype).reshape([int(x) for x in reversed(t.shape)])

    ref = json.load(open(forward_json))
    tokens = np.array(ref["teacher_forced"]["token_ids"][:n])
    n = len(tokens)

    def rms(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w

    def rope_neox(x, base):
        half = x.shape[-1] // 2
        inv = base ** (-np.arange(0, half, dtype=np.float64) * 2 / x.shape[-1])
        ang = np.arange(n, dtype=np.float64)[:, None] * inv[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def gelu_tanh(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    emb = W("token_embd.weight", np.float32)
    x = emb[tokens].astype(np.float64) * math.sqrt(n_embd)
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    acts = {}
    for il in range(n_layer):
        p = f"blk.{il}."
        is_global = (il + 1) % 6 == 0
        h = rms(x, W(p + "attn_norm.weight"))
        q = (h @ W(p + "attn_q.weight").T).reshape(n, H, d)
        k = (h @ W(p + "attn_k.weight").T).reshape(n, Hkv, d)
        v = (h @ W(p + "attn_v.weight").T).reshape(n, Hkv, d)
        q = rms(q, W(p + "attn_q_norm.weight"))
        k = rms(k, W(p + "attn_k_norm.weight"))
        base = base_global if is_global else base_local
        q, k = rope_neox(q, base), rope_neox(k, base)
        out = np.empty((n, H, d))
        for head in range(H):
            g = head // (H // Hkv)
            s = q[:, head, :] @ k[:, g, :].T / math.sqrt(d) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, head, :] = s @ v[:, g, :]
        a = out.reshape(n, H * d) @ W(p + "attn_output.weight").T
        x = x + rms(a, W(p + "post_attention_norm.weight"))
        h = rms(x, W(p + "ffn_norm.weight"))
        f = (gelu_tanh(h @ W(p + "ffn_gate.weight").T) * (h @ W(p + "ffn_up.weight").T)) @ W(p + "ffn_down.weight").T
        x = x + rms(f, W(p + "post_ffw_norm.weight"))
        if il in (0, 5, n_layer - 1):
            acts[f"l_out-{il}"] = x
    x = rms(x, W("output_norm.weight"))
    acts["result_norm"] = x
    logits = x.astype(np.float32) @ emb.T

    positions = ref["teacher_forced"]["positions"]
    top20, worst, agree = [], 0.0, 0
    for i in range(n):
        row = logits[i]
        idx = np.argsort(-row, kind="stable")[:20]
        top20.append([[int(j), round(float(row[j]), 5)] for j in idx])
        agree += int(idx[0] == positions[i]["argmax"])
        for j, lv in positions[i]["top5"]:
            worst = max(worst, abs(float(row[j]) - lv))
    print(f"gemma3: {n} positions, argmax agreement {agree}/{n}, max |logit - llama.cpp| over llama.cpp's "
          f"top-5 = {worst:.3f}")
    out = {
        "script": "scripts/reference/gemma3_forward_numpy.py",
        "model_sha256": ref.get("model_sha256"),
        "token_ids": [int(t) for t in tokens],
        "n": n,
        "argmax_agreement_with_llamacpp": agree,
        "max_abs_diff_top5_vs_llamacpp": worst,
        "top20": top20,
        "activations": {k: [[round(float(v), 5) for v in row] for row in a[:4]] for k, a in acts.items()},
    }
    with open(out_path, "w") as fh:
        json.dump(out, fh)
        fh.write("\n")


if __name__ == "__main__":
    main()
