#!/usr/bin/env python3
"""A float64 forward pass of the tiny Llama/Qwen2 fixtures, written with numpy from the public
descriptions of the architectures: an exact-arithmetic reference for the engine, and a check of
llama.cpp's recorded logits.

Usage: python3 scripts/reference/tiny_forward_numpy.py TINY.gguf FORWARD.json OUT.json

Reads the teacher-forced token ids from FORWARD.json (recorded by record_forward.py) and computes
the logits twice:
- exact: float64 throughout, weights dequantized with gguf.quants.dequantize;
- emulated: the same, but rounding activations as llama.cpp's CPU backend does: to Q8_0 blocks
  (scale rounded to F16) before products with Q8_0 weights, to F16 before products with F16
  weights, K and V stored as F16 (the KV cache), Q and the attention weights rounded to F16
  before their products with K and V.
The emulated logits match llama.cpp's recording to about 1e-4 (printed), which shows that the
fixtures mean what the recording says and where llama.cpp departs from exact arithmetic.

OUT.json: {token_ids, positions: [i…], exact_logits, emulated_logits (rows for those positions),
activations: {"l_out-<layer>": [[…] per position], "result_norm": …} (exact, every position)}.
"""

import json
import sys

import numpy as np
import gguf


def load(path):
    r = gguf.GGUFReader(path)
    arch = bytes(r.fields["general.architecture"].parts[-1]).decode()

    def kv(key):
        f = r.fields[f"{arch}.{key}"]
        return f.parts[f.data[0]][0]

    hp = {
        "arch": arch,
        "n_embd": int(kv("embedding_length")),
        "n_layer": int(kv("block_count")),
        "n_head": int(kv("attention.head_count")),
        "n_head_kv": int(kv("attention.head_count_kv")),
        "eps": float(kv("attention.layer_norm_rms_epsilon")),
        "rope_base": float(kv("rope.freq_base")),
    }
    weights, types = {}, {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        weights[t.name] = w.reshape([int(d) for d in reversed(t.shape)])  # numpy order: outermost first
        types[t.name] = t.tensor_type
    return hp, weights, types


def to_f16(x):
    return x.astype(np.float16).astype(np.float64)


def to_q8_0(x):
    shape = x.shape
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127.0
    safe = np.where(d > 0, d, 1.0)
    q = np.where(d > 0, np.round(blocks / safe), 0.0)
    return (q * to_f16(d)).reshape(shape)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, base, neox):
    """x: [n_tokens, n_heads, head_dim]; NeoX rotates (i, i + d/2) pairs, normal rotates (2i, 2i + 1)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = positions[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if neox:
        a, b = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


def forward(hp, W, types, tokens, emulate):
    ident = lambda v: v  # noqa: E731
    r16 = to_f16 if emulate else ident

    def mm(h, name):
        if emulate and types[name] == gguf.GGMLQuantizationType.Q8_0:
            h = to_q8_0(h)
        elif emulate and types[name] == gguf.GGMLQuantizationType.F16:
            h = to_f16(h)
        return h @ W[name].T

    n = len(tokens)
    H, Hkv = hp["n_head"], hp["n_head_kv"]
    d = hp["n_embd"] // H
    neox = hp["arch"] == "qwen2"
    pos = np.arange(n, dtype=np.float64)
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    acts = {}
    x = W["token_embd.weight"][tokens]
    for il in range(hp["n_layer"]):
        p = f"blk.{il}."
        h = rms_norm(x, W[p + "attn_norm.weight"], hp["eps"])
        q, k, v = mm(h, p + "attn_q.weight"), mm(h, p + "attn_k.weight"), mm(h, p + "attn_v.weight")
        if p + "attn_q.bias" in W:
            q, k, v = q + W[p + "attn_q.bias"], k + W[p + "attn_k.bias"], v + W[p + "attn_v.bias"]
        q = rope(q.reshape(n, H, d), pos, hp["rope_base"], neox)
        k = r16(rope(k.reshape(n, Hkv, d), pos, hp["rope_base"], neox))
        v = r16(v.reshape(n, Hkv, d))
        out = np.empty((n, H, d))
        for head in range(H):
            g = head // (H // Hkv)  # grouped-query attention: consecutive query heads share a KV head
            s = r16(q[:, head, :]) @ k[:, g, :].T / np.sqrt(d) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            out[:, head, :] = r16(s) @ v[:, g, :]
        x = x + mm(out.reshape(n, H * d), p + "attn_output.weight")
        h = rms_norm(x, W[p + "ffn_norm.weight"], hp["eps"])
        gate, up = mm(h, p + "ffn_gate.weight"), mm(h, p + "ffn_up.weight")
        x = x + mm(gate / (1 + np.exp(-gate)) * up, p + "ffn_down.weight")
        acts[f"l_out-{il}"] = x
    x = rms_norm(x, W["output_norm.weight"], hp["eps"])
    acts["result_norm"] = x
    return mm(x, "output.weight" if "output.weight" in W else "token_embd.weight"), acts


def rows(a, idx):
    return [[round(float(v), 5) for v in a[i]] for i in idx]


def main():
    model, forward_json, out_path = sys.argv[1:4]
    hp, W, types = load(model)
    ref = json.load(open(forward_json))
    tokens = np.array(ref["teacher_forced"]["token_ids"])
    exact, acts = forward(hp, W, types, tokens, emulate=False)
    emulated, _ = forward(hp, W, types, tokens, emulate=True)
    full = [i for i, p in enumerate(ref["teacher_forced"]["positions"]) if "logits" in p]
    diff_exact = max(float(np.max(np.abs(exact[i] - ref["teacher_forced"]["positions"][i]["logits"]))) for i in full)
    diff_emul = max(float(np.max(np.abs(emulated[i] - ref["teacher_forced"]["positions"][i]["logits"]))) for i in full)
    agree = sum(int(np.argmax(exact[i]) == p["argmax"]) for i, p in enumerate(ref["teacher_forced"]["positions"]))
    print(f"{hp['arch']}: max |logit - llama.cpp|: exact {diff_exact:.4f}, emulated {diff_emul:.6f}; "
          f"exact argmax agrees at {agree}/{len(tokens)} positions")
    out = {
        "script": "scripts/reference/tiny_forward_numpy.py",
        "model": model.split("/")[-1],
        "token_ids": [int(t) for t in tokens],
        "positions": full,
        "max_abs_diff_vs_llamacpp": {"exact": diff_exact, "emulated": diff_emul},
        "exact_logits": rows(exact, full),
        "emulated_logits": rows(emulated, full),
        "activations": {name: rows(a, range(len(tokens))) for name, a in acts.items()},
    }
    with open(out_path, "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
