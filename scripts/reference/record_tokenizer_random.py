#!/usr/bin/env python3
"""Records llama.cpp's tokenization of seeded random strings (a differential test).

Usage: python3 scripts/reference/record_tokenizer_random.py MODEL.gguf OUT.json [COUNT]
The strings mix ASCII, whitespace runs (spaces, tabs, newlines, CR), digits, punctuation, Latin
accents, combining marks, Cyrillic, CJK, emoji, zero-width characters and pieces of special
token texts, with random add_special / parse_special flags. Only ids are stored.
"""

import json
import pathlib
import random
import sys

import llama_cpp

ALPHABET = (
    list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    + list("0123456789")
    + list(".,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`")
    + [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "   "]
    + list("éèêëàâäïîôöùûüçñß") + ["e\u0301", "a\u0308"]
    + list("Привет мир") + list("日本語中文字한국어")
    + ["🤖", "🚀", "👍🏽", "👨‍👩‍👧", "\u200b", "\u00a0"]
)
WORDS = ["the", " the", "hello", " world", "don't", "I'll", "1234567", "3.14", "http://x.y", "<0x41>",
         "<start_of_turn>", "<end_of_turn>", "<unused7>", "<bos>", "<|eot_id|>", "<|begin_of_text|>",
         "<|end_of_text|>", "<pad>", "<start", "turn>", "def", "    return", "\t\t", "\n\n\n"]


def random_text(rng):
    parts = []
    for _ in range(rng.randint(1, 24)):
        if rng.random() < 0.35:
            parts.append(rng.choice(WORDS))
        else:
            parts.append(rng.choice(ALPHABET))
    return "".join(parts)


def main():
    model_path, out_path = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    rng = random.Random(20261129)
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    cases = []
    for _ in range(count):
        text = random_text(rng)
        add_special = rng.random() < 0.5
        parse_special = rng.random() < 0.5
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
        cases.append({"text": text, "add_special": add_special, "parse_special": parse_special, "ids": ids})
    out = {
        "source": "llama.cpp via llama-cpp-python " + llama_cpp.__version__,
        "model": pathlib.Path(model_path).name,
        "script": "scripts/reference/record_tokenizer_random.py",
        "cases": cases,
    }
    pathlib.Path(out_path).write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(cases)} random cases -> {out_path}")


if __name__ == "__main__":
    main()
