#!/usr/bin/env python3
"""Long-document QA against any OpenAI-compatible server: N documents, a first pass, K repeat passes.

Each of --documents documents is ~--document-tokens tokens of real text. The first pass asks one
question per document; each of the --repeats passes after it asks a new question about every
document again (so a cache can reuse the documents). Requests are streamed chat completions at
temperature 0, --concurrency at a time (default 1, in order). Texts and questions depend only on --seed.

Prints a JSON report (per-request TTFT, latency, prompt size; mean/p50/p90 TTFT, requests/s, wall
time, per-pass means; pass 0 is the first pass) on stdout or into --json, and a table on stderr.

    python3 scripts/workloads/long_doc_qa.py --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--documents", type=int, default=4, help="N: documents (default 4)")
    parser.add_argument("--document-tokens", type=int, default=3000, help="T: tokens per document (default 3000)")
    parser.add_argument("--repeats", type=int, default=2, help="K: passes after the first (default 2)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight (default 1)")
    args = parser.parse_args(argv)
    common.check_positive(parser, args, ["documents", "document_tokens", "concurrency", "max_tokens"])
    if args.repeats < 0:
        parser.error("--repeats must not be negative")
    return args


def build(args: argparse.Namespace) -> tuple[list[str], list[list[str]]]:
    """The documents and, per pass, one question per document, from the seed alone."""
    pool = common.TextPool()
    rng = random.Random(args.seed)
    documents = [pool.take(args.document_tokens) for _ in range(args.documents)]
    passes = [[common.question(rng, document) for document in documents] for _ in range(args.repeats + 1)]
    return documents, passes


async def workload(args: argparse.Namespace) -> dict:
    documents, passes = build(args)
    waves = [
        [([{"role": "user", "content": f"Document:\n{document}\n\nQuestion: {questions[index]}"}], f"doc{index}", p)
            for index, document in enumerate(documents)]
        for p, questions in enumerate(passes)
    ]
    model, records, wall = await common.run_waves(args, waves)
    config = {
        "base_url": args.base_url, "model": model, "documents": args.documents,
        "document_tokens": args.document_tokens, "repeats": args.repeats, "concurrency": args.concurrency,
        "max_tokens": args.max_tokens, "seed": args.seed,
    }
    return common.report("long-doc-qa", config, records, wall, "pass")


def main(argv: list[str] | None = None) -> dict:
    return common.main(parse, workload, argv)


if __name__ == "__main__":
    main()
