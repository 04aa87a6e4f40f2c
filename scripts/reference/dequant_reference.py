#!/usr/bin/env python3
"""Writes dequantization references made with the `gguf` package (gguf.quants.dequantize).

Usage: dequant_reference.py OUTDIR [MODEL.gguf]

For every case it writes OUTDIR/NAME.raw (the tensor bytes) and OUTDIR/NAME.f32 (little-endian
float32 values from the reference dequantizer), and OUTDIR/manifest.tsv with lines
"NAME<TAB>TYPE<TAB>ELEMENTS". Cases: random blocks of every supported type (scales kept finite),
and, when a model is given, the first rows of one real tensor of each type the model holds.
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize
from gguf.constants import GGML_QUANT_SIZES

# (offsets of f16 scale fields inside one block) per type; random bytes there could be NaN/Inf.
SCALE_OFFSETS = {
    T.Q8_0: [0], T.Q4_0: [0], T.Q5_0: [0],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q5_0, T.Q4_K, T.Q5_K, T.Q6_K]


def random_case(rng, qtype, blocks):
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n = blocks * block_size
    if qtype == T.F32:
        return rng.standard_normal(n).astype(np.float32).view(np.uint8), n
    if qtype == T.F16:
        return (rng.standard_normal(n) * 4).astype(np.float16).view(np.uint8), n
    if qtype == T.BF16:
        f = rng.standard_normal(n).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8), n
    raw = rng.integers(0, 256, size=(blocks, type_size), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        scales = (rng.random(blocks) * 0.02 + 0.0005).astype(np.float16)
        if qtype in (T.Q4_K, T.Q5_K) and off == 2:
            scales = (rng.random(blocks) * 0.01).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(blocks, 2)
    return raw.reshape(-1), n


def write_case(out, manifest, name, qtype, raw, n):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    ref = dequantize(raw, qtype).astype(np.float32).reshape(-1)
    assert ref.size == n, (name, ref.size, n)
    raw.tofile(os.path.join(out, name + ".raw"))
    ref.astype("<f4").tofile(os.path.join(out, name + ".f32"))
    manifest.append(f"{name}\t{qtype.name}\t{n}")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = []
    rng = np.random.default_rng(1234)
    for qtype in TYPES:
        raw, n = random_case(rng, qtype, 64 if GGML_QUANT_SIZES[qtype][0] > 1 else 4096)
        write_case(out, manifest, f"random-{qtype.name}", qtype, raw, n)
    if len(sys.argv) > 2:
        reader = GGUFReader(sys.argv[2])
        seen = set()
        for t in reader.tensors:
            if t.tensor_type in seen or t.tensor_type not in TYPES:
                continue
            seen.add(t.tensor_type)
            row_elems = int(t.shape[0])
            rows = min(int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1, 64)
            block_size, type_size = GGML_QUANT_SIZES[t.tensor_type]
            nbytes = rows * row_elems // block_size * type_size
            raw = np.asarray(t.data).view(np.uint8).reshape(-1)[:nbytes]
            name = "model-" + t.name.replace(".", "_")
            write_case(out, manifest, name, t.tensor_type, raw, rows * row_elems)
    with open(os.path.join(out, "manifest.tsv"), "w") as f:
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
