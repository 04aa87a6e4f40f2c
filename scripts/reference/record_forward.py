#!/usr/bin/env python3
"""Records llama.cpp's forward pass on a GGUF model as test data for the engine.

Usage:
  python3 scripts/reference/record_forward.py MODEL.gguf OUT.json [--text FILE] [--prompts gemma|tiny]
                                              [--full-logits N]

Records (llama-cpp-python, 2 threads, flash attention off, logits for every position):
- teacher_forced: the text tokenized with BOS; for each position the argmax, the top-5 (id, logit),
  the top-2 margin, the logit of the next text token and the log-sum-exp of the logits (so a
  perplexity can be compared); with --full-logits N also every logit of the first N positions
  and of the last.
- greedy: for each prompt, the prompt ids, 32 greedy tokens (16 for tiny models), and at each step
  the top-5 (id, logit) and the top-2 margin. The last Gemma prompt (554 tokens of the text) is
  longer than the 512-token sliding window.
"""

import argparse
import hashlib
import json
import pathlib

import numpy as np
import llama_cpp

HERE = pathlib.Path(__file__).resolve().parent

GEMMA_PROMPTS = [
    "The capital of France is",
    "Here is a short poem about the sea:\n",
    "def fibonacci(n):\n",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
]

TINY_PROMPTS = [
    "The lighthouse keeper",
    "Hello world",
    "def main():\n",
]

N_THREADS = 2
N_BATCH = 512


def make_llm(model_path, n_ctx):
    kwargs = dict(model_path=model_path, n_ctx=n_ctx, n_threads=N_THREADS, n_threads_batch=N_THREADS,
                  n_batch=N_BATCH, n_ubatch=N_BATCH, logits_all=True, verbose=False, seed=0)
    try:
        return llama_cpp.Llama(flash_attn=False, **kwargs)
    except TypeError:
        return llama_cpp.Llama(**kwargs)


def top(logits, k):
    idx = np.argsort(-logits, kind="stable")[:k]
    return [[int(i), float(logits[i])] for i in idx]


def logsumexp(x):
    m = float(np.max(x))
    return m + float(np.log(np.sum(np.exp(x.astype(np.float64) - m))))


def teacher_forced(llm, text, full):
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    llm.reset()
    llm.eval(tokens)
    scores = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    positions = []
    for i in range(len(tokens)):
        row = scores[i]
        t5 = top(row, 5)
        entry = {
            "argmax": t5[0][0],
            "top5": t5,
            "margin": t5[0][1] - t5[1][1],
            "logsumexp": logsumexp(row),
        }
        if i + 1 < len(tokens):
            entry["next_id"] = int(tokens[i + 1])
            entry["next_logit"] = float(row[tokens[i + 1]])
        if full and (i < full or i == len(tokens) - 1):
            entry["logits"] = [round(float(v), 5) for v in row]
        positions.append(entry)
    return {"text": text, "token_ids": list(map(int, tokens)), "positions": positions}


def greedy(llm, prompt, steps, parse_special):
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=parse_special)
    llm.reset()
    llm.eval(tokens)
    out, tops, margins = [], [], []
    for _ in range(steps):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        t5 = top(row, 5)
        out.append(t5[0][0])
        tops.append(t5)
        margins.append(t5[0][1] - t5[1][1])
        llm.eval([t5[0][0]])
    return {
        "prompt": prompt,
        "parse_special": parse_special,
        "prompt_ids": list(map(int, tokens)),
        "greedy_ids": out,
        "greedy_text": llm.detokenize(out).decode("utf-8", errors="replace"),
        "top5_per_step": tops,
        "top2_margin_per_step": margins,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--text", default=str(HERE / "passage.txt"))
    ap.add_argument("--prompts", choices=["gemma", "tiny"], default="gemma")
    ap.add_argument("--full-logits", type=int, default=0, metavar="N",
                    help="store every logit for the first N positions and the last one")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--n-ctx", type=int, default=2048)
    args = ap.parse_args()

    text = pathlib.Path(args.text).read_text(encoding="utf-8")
    llm = make_llm(args.model, args.n_ctx)
    record = {
        "source": "llama.cpp via llama-cpp-python " + llama_cpp.__version__,
        "script": "scripts/reference/record_forward.py",
        "model": pathlib.Path(args.model).name,
        "model_sha256": hashlib.sha256(pathlib.Path(args.model).read_bytes()).hexdigest(),
        "settings": {"n_threads": N_THREADS, "n_batch": N_BATCH, "n_ubatch": N_BATCH, "n_ctx": args.n_ctx,
                     "flash_attn": False, "logits_all": True},
        "notes": "llama.cpp quantizes activations to 8 bits inside quantized matmuls (and to F16 for F16 "
                 "weights), so exact-arithmetic logits differ slightly; compare argmax where the margin is "
                 "large, and logits with a tolerance.",
    }
    record["teacher_forced"] = teacher_forced(llm, text, args.full_logits)
    prompts = GEMMA_PROMPTS if args.prompts == "gemma" else TINY_PROMPTS
    if args.prompts == "gemma":
        # A prompt longer than Gemma's 512-token sliding window: the first five paragraphs (554 tokens).
        prompts = prompts + ["\n\n".join(text.split("\n\n")[:5]) + "\n\n"]
    record["greedy"] = [greedy(llm, p, args.steps, "<start_of_turn>" in p) for p in prompts]
    pathlib.Path(args.out).write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    n = len(record["teacher_forced"]["token_ids"])
    print(f"{n} teacher-forced positions, {len(record['greedy'])} greedy prompts -> {args.out}")


if __name__ == "__main__":
    main()
