#!/usr/bin/env python3
"""Records how often llama.cpp agrees with itself across settings, on the teacher-forced text.

Usage:
  python3 scripts/reference/record_llamacpp_variants.py MODEL.gguf FORWARD.json OUT.json

FORWARD.json is the recording of record_forward.py (flash attention off, batch 512, 2 threads). This
script runs the same tokens through llama.cpp with other settings (flash attention on, as the speed
comparison runs it; a smaller batch; one thread) and writes, per setting, the argmax at every position
and how many positions agree with the recording. The engine's test compares its own agreement with
these: llama.cpp's top-1 choice at near-ties depends on its own settings.
"""

import argparse
import hashlib
import json

import numpy as np
import llama_cpp

VARIANTS = [
    {"name": "flash attention on", "flash_attn": True, "n_batch": 512, "n_threads": 2},
    {"name": "batch 64", "flash_attn": False, "n_batch": 64, "n_threads": 2},
    {"name": "1 thread", "flash_attn": False, "n_batch": 512, "n_threads": 1},
]


def argmaxes(model, ids, variant):
    llm = llama_cpp.Llama(model_path=model, n_ctx=2048, n_threads=variant["n_threads"],
                          n_threads_batch=variant["n_threads"], n_batch=variant["n_batch"],
                          n_ubatch=variant["n_batch"], logits_all=True, verbose=False, seed=0,
                          flash_attn=variant["flash_attn"])
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
    return [int(i) for i in scores.argmax(axis=1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("forward")
    ap.add_argument("out")
    args = ap.parse_args()
    reference = json.load(open(args.forward))
    ids = reference["teacher_forced"]["token_ids"]
    recorded = [p["argmax"] for p in reference["teacher_forced"]["positions"]]
    with open(args.model, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    variants = []
    for v in VARIANTS:
        a = argmaxes(args.model, ids, v)
        agree = sum(int(x == y) for x, y in zip(a, recorded))
        print(f"{v['name']}: {agree}/{len(ids)} positions agree with the recording")
        variants.append({**v, "argmax": a, "agreement_with_recording": agree})
    out = {
        "source": f"llama-cpp-python {llama_cpp.__version__}",
        "script": "scripts/reference/record_llamacpp_variants.py",
        "model_sha256": digest,
        "positions": len(ids),
        "recording_settings": reference.get("settings"),
        "variants": variants,
    }
    with open(args.out, "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
