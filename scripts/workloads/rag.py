#!/usr/bin/env python3
"""Retrieval-augmented generation against any OpenAI-compatible server: popular documents, any order.

A pool of --pool documents (default 20) of ~--document-tokens tokens each (default 500) is the
knowledge base. Each of --requests requests (default 24) retrieves 4 to 6 of them (--min-docs,
--max-docs), drawn by popularity (Zipf with exponent --zipf, default 1: a few documents recur
often) and in a random order, and asks a question about one of them; so the same documents come
back at different positions of the prompt, the case a prefix cache cannot reuse and CacheBlend-style
blending can. Requests are streamed chat completions at temperature 0, --concurrency at a time
(default 1). Texts, draws and questions depend only on --seed.

Prints a JSON report (per-request TTFT, latency, prompt size; mean/p50/p90/p99 TTFT, requests/s,
wall time, per-group means; groups are the number of documents retrieved; each request's answer)
on stdout or into --json, and a table on stderr. The report's config keeps every request's documents in prompt order.

    python3 scripts/workloads/rag.py --base-url http://127.0.0.1:8000/v1
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
    parser.add_argument("--pool", type=int, default=20, help="documents in the knowledge base (default 20)")
    parser.add_argument("--document-tokens", type=int, default=500, help="tokens per document (default 500)")
    parser.add_argument("--requests", type=int, default=24, help="requests (default 24)")
    parser.add_argument("--min-docs", type=int, default=4, help="fewest documents retrieved per request (default 4)")
    parser.add_argument("--max-docs", type=int, default=6, help="most documents retrieved per request (default 6)")
    parser.add_argument("--zipf", type=float, default=1.0, help="popularity exponent (default 1)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight (default 1)")
    parser.add_argument("--separator", default="\n\n",
                        help="text between the documents (default a blank line; \" # # \" is what lmcache's "
                        "blending splits at by default)")
    args = parser.parse_args(argv)
    common.check_positive(parser, args, ["pool", "document_tokens", "requests", "min_docs", "max_docs",
                                         "concurrency", "max_tokens"])
    if args.min_docs > args.max_docs or args.max_docs > args.pool:
        parser.error("need --min-docs ≤ --max-docs ≤ --pool")
    return args


def build(args: argparse.Namespace) -> tuple[list[str], list[tuple[list[int], str]]]:
    """The documents and, per request, (the documents retrieved, in prompt order; the question)."""
    pool = common.TextPool()
    rng = random.Random(args.seed)
    documents = [pool.take(args.document_tokens) for _ in range(args.pool)]
    weights = [1 / (rank + 1) ** args.zipf for rank in range(args.pool)]
    plan = []
    for _ in range(args.requests):
        count = rng.randint(args.min_docs, args.max_docs)
        chosen: list[int] = []
        while len(chosen) < count:
            pick = rng.choices(range(args.pool), weights)[0]
            if pick not in chosen:
                chosen.append(pick)
        rng.shuffle(chosen)
        plan.append((chosen, common.question(rng, documents[rng.choice(chosen)])))
    return documents, plan


async def workload(args: argparse.Namespace) -> dict:
    documents, plan = build(args)
    chats = []
    for index, (chosen, question) in enumerate(plan):
        context = args.separator.join(f"[Document {d}]\n{documents[d]}" for d in chosen)
        chats.append(([{"role": "user", "content": f"{context}{args.separator}Question: {question}"}], f"request{index}",
                      len(chosen)))
    model, records, wall = await common.run_waves(args, [chats])
    config = {
        "base_url": args.base_url, "model": model, "pool": args.pool, "document_tokens": args.document_tokens,
        "requests": args.requests, "min_docs": args.min_docs, "max_docs": args.max_docs, "zipf": args.zipf,
        "concurrency": args.concurrency, "max_tokens": args.max_tokens, "seed": args.seed, "separator": args.separator,
        "plan": [chosen for chosen, _ in plan],
    }
    return common.report("rag", config, records, wall, "documents")


def main(argv: list[str] | None = None) -> dict:
    return common.main(parse, workload, argv)


if __name__ == "__main__":
    main()
