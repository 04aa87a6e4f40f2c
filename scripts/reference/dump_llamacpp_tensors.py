#!/usr/bin/env python3
"""Saves llama.cpp's intermediate tensors for the first tokens of a text, to compare the engine's
arithmetic with llama.cpp's op by op.

Usage:
  python3 scripts/reference/dump_llamacpp_tensors.py [--decode-step] MODEL.gguf TEXT_FILE N_TOKENS OUT.npz [LAYERS]

Runs one batch of the text's first N_TOKENS tokens (BOS first) through llama.cpp (llama-cpp-python,
2 threads, flash attention off, batch 512: the settings of record_forward.py) with a graph
evaluation callback, and writes every F32/F16 tensor that the graph computes for the layers in
LAYERS (comma-separated, default 0) plus each layer's output (`l_out-L`), as float32 arrays shaped
[ne3, ne2, ne1, ne0] under ggml's names (a name computed twice gets `#1`, `#2`, ...). `logits`
(N_TOKENS × vocabulary) and `tokens` are added. The names and ops seen are printed.

With --decode-step, the first N_TOKENS − 1 tokens run as one batch unobserved, then the last token
runs alone, as a decode step, and only that step's tensors are saved (llama.cpp computes one-token
batches with other kernels than larger ones).

Used to derive LMCACHE_MATMUL=llamacpp (docs/engine.md): with it, the engine's tensors equal these
bit for bit.
"""

import ctypes
import sys

import numpy as np
import llama_cpp

GGML_MAX_DIMS = 4
GGML_MAX_SRC = 10
GGML_MAX_NAME = 64
GGML_MAX_OP_PARAMS = 64


class GGMLTensor(ctypes.Structure):
    """struct ggml_tensor from the ggml.h installed with llama-cpp-python 0.3.36."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * GGML_MAX_DIMS),
        ("nb", ctypes.c_size_t * GGML_MAX_DIMS),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * (GGML_MAX_OP_PARAMS // 4)),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * GGML_MAX_SRC),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * GGML_MAX_NAME),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


GGML_TYPE_F32, GGML_TYPE_F16 = 0, 1


def main():
    arguments = sys.argv[1:]
    decode_step = "--decode-step" in arguments
    if decode_step:
        arguments.remove("--decode-step")
    if len(arguments) not in (4, 5):
        sys.exit(__doc__)
    model, text_file, n_tokens, out = arguments[0], arguments[1], int(arguments[2]), arguments[3]
    layers = {int(x) for x in arguments[4].split(",")} if len(arguments) == 5 else {0}

    tensors = {}
    seen = []
    observing = [not decode_step]

    def wanted(name):
        base, dash, layer = name.rpartition("-")
        if not dash or not layer.isdigit():
            return True
        return base == "l_out" or int(layer) in layers

    @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p, ctypes.c_bool, ctypes.c_void_p)
    def observe(pointer, ask, _user):
        if not observing[0]:
            return not ask
        t = GGMLTensor.from_address(pointer)
        name = t.name.decode(errors="replace")
        if ask:
            return wanted(name)
        seen.append((name, t.type, list(t.ne), t.op))
        if t.type not in (GGML_TYPE_F32, GGML_TYPE_F16):
            return True
        size = 2 if t.type == GGML_TYPE_F16 else 4
        ne, nb = list(t.ne), list(t.nb)
        span = sum(nb[i] * (ne[i] - 1) for i in range(GGML_MAX_DIMS)) + size
        raw = np.frombuffer(bytes((ctypes.c_char * span).from_address(t.data)), dtype=np.uint8)
        strided = np.lib.stride_tricks.as_strided(
            raw, shape=(ne[3], ne[2], ne[1], ne[0], size), strides=(nb[3], nb[2], nb[1], nb[0], 1))
        dtype = np.float16 if t.type == GGML_TYPE_F16 else np.float32
        array = np.ascontiguousarray(strided).view(dtype).reshape(ne[3], ne[2], ne[1], ne[0])
        key, i = name, 1
        while key in tensors:
            key, i = f"{name}#{i}", i + 1
        tensors[key] = array.astype(np.float32)
        return True

    llm = llama_cpp.Llama(model_path=model, n_ctx=max(1024, n_tokens), n_threads=2, n_threads_batch=2,
                          n_batch=512, n_ubatch=512, logits_all=True, verbose=False, seed=0,
                          flash_attn=False)
    params = llm.context_params
    params.cb_eval = observe
    params.cb_eval_user_data = None
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    with open(text_file, encoding="utf-8") as f:
        tokens = llm.tokenize(f.read().encode("utf-8"), add_bos=True, special=False)[:n_tokens]
    if len(tokens) > 512:
        sys.exit("at most 512 tokens (one batch)")
    batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)

    def run(first, count):
        for i in range(count):
            batch.token[i] = tokens[first + i]
            batch.pos[i] = first + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 1
        batch.n_tokens = count
        if llama_cpp.llama_decode(ctx, batch) != 0:
            sys.exit("llama_decode failed")

    if decode_step:
        if len(tokens) < 2:
            sys.exit("--decode-step needs at least 2 tokens")
        run(0, len(tokens) - 1)
        observing[0] = True
        run(len(tokens) - 1, 1)
        tokens = tokens[-1:]
    else:
        run(0, len(tokens))
    vocabulary = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx), shape=(len(tokens), vocabulary))
    tensors["logits"] = logits.copy()
    tensors["tokens"] = np.array(tokens, dtype=np.int32)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    np.savez(out, **tensors)
    print(f"{len(tokens)} tokens, {len(tensors)} arrays in {out}")
    for name, ggml_type, ne, op in seen:
        print(f"  {name:40s} type {ggml_type} ne {ne} op {op}")


if __name__ == "__main__":
    main()
