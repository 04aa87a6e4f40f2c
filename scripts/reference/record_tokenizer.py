#!/usr/bin/env python3
"""Records llama.cpp's tokenization of the strings in tokenizer_cases.py for one GGUF file.

Usage: python3 scripts/reference/record_tokenizer.py MODEL.gguf OUT.json
Needs llama-cpp-python (built from source; see scripts/reference/README.md).
The file records, per case, the ids, each id's piece (special tokens rendered; bytes that are
not UTF-8 on their own become U+FFFD) with its raw bytes in hex, and llama.cpp's
llama_detokenize of the ids without special tokens.
"""

import ctypes
import hashlib
import json
import pathlib
import sys

import llama_cpp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from tokenizer_cases import cases  # noqa: E402


def piece_bytes(vocab, token):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[:n]


def detokenize(vocab, ids):
    """llama.cpp's own llama_detokenize (no special tokens, nothing removed)."""
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    size = 64 + 16 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, False)
        if n >= 0:
            return buf.raw[:n]
        size = -n


def main():
    model_path, out_path = sys.argv[1], sys.argv[2]
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    records = []
    for text, add_special, parse_special in cases():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
        pieces = [piece_bytes(vocab, t) for t in ids]
        records.append({
            "text": text,
            "add_special": add_special,
            "parse_special": parse_special,
            "ids": ids,
            "pieces": [p.decode("utf-8", errors="replace") for p in pieces],
            "piece_bytes": [p.hex() for p in pieces],
            "decoded": detokenize(vocab, ids).decode("utf-8", errors="replace"),
        })
    sha = hashlib.sha256(pathlib.Path(model_path).read_bytes()).hexdigest()
    out = {
        "source": "llama.cpp via llama-cpp-python " + llama_cpp.__version__,
        "model": pathlib.Path(model_path).name,
        "model_sha256": sha,
        "script": "scripts/reference/record_tokenizer.py",
        "cases": records,
    }
    pathlib.Path(out_path).write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{len(records)} cases -> {out_path}")


if __name__ == "__main__":
    main()
