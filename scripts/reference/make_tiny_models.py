#!/usr/bin/env python3
"""Writes small, seeded GGUF files for tests of the engine and the byte-level BPE tokenizer.

Outputs (paths relative to the repository root):
  Tests/InferenceTests/Resources/tiny-llama.gguf      Llama architecture, F32/F16/Q8_0 weights
  Tests/InferenceTests/Resources/tiny-qwen2.gguf      Qwen2 architecture (QKV biases, tied output)
  Tests/TokenizersTests/Resources/tiny-bpe-llama3.gguf  tokenizer only, pre-tokenizer "llama-bpe"
  Tests/TokenizersTests/Resources/tiny-bpe-qwen2.gguf   tokenizer only, pre-tokenizer "qwen2"

The vocabulary is a byte-level BPE (GPT-2 byte-to-unicode alphabet) trained here on
scripts/reference/passage.txt plus a few code and multilingual lines, so it is deterministic and
needs no download. Weights are random (numpy seed fixed) and mean nothing; they exist so that two
engines can be compared on the same file.

Usage: python3 scripts/reference/make_tiny_models.py  (needs: gguf, numpy)
"""

import collections
import pathlib
import re

import numpy as np
import gguf

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent

EXTRA_CORPUS = """
def main(argc, argv):
    for i in range(10):
        print(f"value {i}: {i * i}")
    return 0

let numbers = [1, 22, 333, 4444, 55555]; // Swift array
if x >= 100 && y != nil { return x + y }
I'm sure they'll say it's fine, but we've seen what you'd done. Don't!
Hello world. HELLO WORLD. hello, world!
Café, naïve, résumé, coöperation, Ünïcödé.
日本語のテキスト。你好，世界！ 한국어 텍스트. Привет, мир! مرحبا 🤖🚀
"""

N_MERGES = 700
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|pad|>"]


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable unicode characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_bpe(text, n_merges):
    """Plain BPE training on byte-level words; returns the merges in order."""
    b2u = bytes_to_unicode()
    words = re.findall(r" ?[^\W\d_]+| ?\d{1,3}| ?[^\s\w]+|\s+", text)
    counts = collections.Counter(tuple(b2u[b] for b in w.encode("utf-8")) for w in words)
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for word, c in counts.items():
            for a, b in zip(word, word[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        # Most frequent pair; ties broken by the pair itself so the result is deterministic.
        (a, b), freq = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if freq < 2:
            break
        merges.append((a, b))
        merged = collections.Counter()
        for word, c in counts.items():
            out = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += c
        counts = merged
    return merges


def build_vocab():
    corpus = (HERE / "passage.txt").read_text(encoding="utf-8") + EXTRA_CORPUS
    merges = train_bpe(corpus, N_MERGES)
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    seen = set(tokens)
    for a, b in merges:
        if a + b not in seen:
            tokens.append(a + b)
            seen.add(a + b)
    types = [gguf.TokenType.NORMAL] * len(tokens)
    for s in SPECIALS:
        tokens.append(s)
        types.append(gguf.TokenType.CONTROL)
    return tokens, types, [f"{a} {b}" for a, b in merges]


def add_tokenizer(w, tokens, types, merges, pre, add_bos):
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(tokens.index("<|begin_of_text|>"))
    w.add_eos_token_id(tokens.index("<|end_of_text|>"))
    w.add_pad_token_id(tokens.index("<|pad|>"))
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)


def add_weight(w, name, array, qtype):
    """Adds a tensor given as a numpy array of shape (rows, cols), stored as `qtype`."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        w.add_tensor(name, array)
    elif qtype == gguf.GGMLQuantizationType.F16:
        w.add_tensor(name, array.astype(np.float16))
    else:
        q = gguf.quants.quantize(array, qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)


def write_model(path, arch, tokens, types, merges, seed):
    rng = np.random.default_rng(seed)
    n_vocab = len(tokens)
    n_embd, n_layer, n_head, n_head_kv, n_ff = 64, 2, 4, 2, 128
    head_dim = n_embd // n_head
    F32, F16, Q8 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    add_tokenizer(w, tokens, types, merges, "llama-bpe" if arch == "llama" else "qwen2", arch == "llama")

    def normal(*shape, std):
        return rng.normal(0.0, std, size=shape).astype(np.float32)

    def norm_weight():
        return (1.0 + normal(n_embd, std=0.1)).astype(np.float32)

    embd = normal(n_vocab, n_embd, std=0.5)
    add_weight(w, "token_embd.weight", embd, F16 if arch == "llama" else Q8)
    add_weight(w, "output_norm.weight", norm_weight(), F32)
    if arch == "llama":
        add_weight(w, "output.weight", normal(n_vocab, n_embd, std=0.3), Q8)
    for il in range(n_layer):
        p = f"blk.{il}."
        add_weight(w, p + "attn_norm.weight", norm_weight(), F32)
        add_weight(w, p + "attn_q.weight", normal(n_embd, n_embd, std=0.25), Q8)
        add_weight(w, p + "attn_k.weight", normal(n_head_kv * head_dim, n_embd, std=0.25), Q8 if arch == "llama" else F16)
        add_weight(w, p + "attn_v.weight", normal(n_head_kv * head_dim, n_embd, std=0.2), F16)
        add_weight(w, p + "attn_output.weight", normal(n_embd, n_embd, std=0.15), Q8)
        if arch == "qwen2":
            add_weight(w, p + "attn_q.bias", normal(n_embd, std=0.1), F32)
            add_weight(w, p + "attn_k.bias", normal(n_head_kv * head_dim, std=0.1), F32)
            add_weight(w, p + "attn_v.bias", normal(n_head_kv * head_dim, std=0.1), F32)
        add_weight(w, p + "ffn_norm.weight", norm_weight(), F32)
        add_weight(w, p + "ffn_gate.weight", normal(n_ff, n_embd, std=0.2), Q8)
        add_weight(w, p + "ffn_up.weight", normal(n_ff, n_embd, std=0.2), F16 if arch == "llama" else Q8)
        add_weight(w, p + "ffn_down.weight", normal(n_embd, n_ff, std=0.15), Q8 if arch == "llama" else F32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_vocab_only(path, tokens, types, merges, pre, add_bos):
    # A tokenizer-only file: llama.cpp loads it with vocab_only; it still names an architecture.
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(f"tiny-bpe-{pre}")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    add_tokenizer(w, tokens, types, merges, pre, add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    tokens, types, merges = build_vocab()
    inference = ROOT / "Tests/InferenceTests/Resources"
    tokenizers = ROOT / "Tests/TokenizersTests/Resources"
    inference.mkdir(parents=True, exist_ok=True)
    tokenizers.mkdir(parents=True, exist_ok=True)
    write_model(inference / "tiny-llama.gguf", "llama", tokens, types, merges, seed=1234)
    write_model(inference / "tiny-qwen2.gguf", "qwen2", tokens, types, merges, seed=5678)
    write_vocab_only(tokenizers / "tiny-bpe-llama3.gguf", tokens, types, merges, "llama-bpe", True)
    write_vocab_only(tokenizers / "tiny-bpe-qwen2.gguf", tokens, types, merges, "qwen2", False)
    print(f"vocab {len(tokens)} tokens, {len(merges)} merges")
    for p in [inference / "tiny-llama.gguf", inference / "tiny-qwen2.gguf", tokenizers / "tiny-bpe-llama3.gguf",
              tokenizers / "tiny-bpe-qwen2.gguf"]:
        print(p.relative_to(ROOT), p.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
