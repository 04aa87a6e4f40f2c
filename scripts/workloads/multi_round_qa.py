#!/usr/bin/env python3
"""Multi-round QA against any OpenAI-compatible server: U users, R rounds each, C users in flight.

Every user shares one system prompt (~--system-tokens) and has its own context document
(~--document-tokens of real text). Round 1 asks a question about the document; each later round
sends the whole history (earlier questions and answers) plus a new question. Requests are streamed
chat completions at temperature 0. With --fixed-answers the history carries fixed answers instead of
the model's, so every server sees identical prompts. Questions and texts depend only on --seed.

Prints a JSON report (per-request TTFT, latency, prompt size; mean/p50/p90 TTFT, requests/s, wall
time, per-round means) on stdout or into --json, and a table on stderr.

    python3 scripts/workloads/multi_round_qa.py --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--users", type=int, default=4, help="U: users (default 4)")
    parser.add_argument("--rounds", type=int, default=4, help="R: rounds per user (default 4)")
    parser.add_argument("--concurrency", type=int, default=2, help="C: users in flight at once (default 2)")
    parser.add_argument("--system-tokens", type=int, default=1000, help="shared system prompt size (default 1000)")
    parser.add_argument("--document-tokens", type=int, default=2000, help="per-user document size (default 2000)")
    parser.add_argument("--fixed-answers", action="store_true", help="put fixed answers in the history")
    args = parser.parse_args(argv)
    common.check_positive(parser, args, ["users", "rounds", "concurrency", "system_tokens", "document_tokens", "max_tokens"])
    return args


def build(args: argparse.Namespace) -> tuple[str, list[str], list[list[str]]]:
    """The system prompt, each user's document, and each user's questions, from the seed alone."""
    pool = common.TextPool()
    rng = random.Random(args.seed)
    system = (
        "You are a careful assistant that answers questions about documents. Answer in one or two "
        "sentences and quote the document where you can. The following reference text applies to "
        "every conversation.\n\n" + pool.take(args.system_tokens)
    )
    documents = [pool.take(args.document_tokens) for _ in range(args.users)]
    questions = [[common.question(rng, document) for _ in range(args.rounds)] for document in documents]
    return system, documents, questions


async def workload(args: argparse.Namespace) -> dict:
    client = common.make_client(args.base_url, args.timeout)
    model = args.model or await common.first_model(client)
    system, documents, questions = build(args)
    slots = asyncio.Semaphore(args.concurrency)
    records: list[common.RequestRecord] = []
    origin = time.perf_counter()

    async def user(index: int) -> None:
        async with slots:
            messages = [{"role": "system", "content": system}]
            for round_index in range(args.rounds):
                ask = questions[index][round_index]
                if round_index == 0:
                    ask = f"Document:\n{documents[index]}\n\nQuestion: {ask}"
                messages.append({"role": "user", "content": ask})
                record = await common.stream_chat(
                    client, model, messages, args.max_tokens, f"user{index}", round_index + 1, origin
                )
                records.append(record)
                answer = (
                    f"The document addresses this in the passage on user {index}'s topic, round {round_index + 1}."
                    if args.fixed_answers
                    else record.answer
                )
                messages.append({"role": "assistant", "content": answer})

    await asyncio.gather(*(user(index) for index in range(args.users)))
    wall = time.perf_counter() - origin
    await client.close()
    config = {
        "base_url": args.base_url, "model": model, "users": args.users, "rounds": args.rounds,
        "concurrency": args.concurrency, "system_tokens": args.system_tokens,
        "document_tokens": args.document_tokens, "max_tokens": args.max_tokens,
        "fixed_answers": args.fixed_answers, "seed": args.seed,
    }
    return common.report("multi-round-qa", config, records, wall, "round")


def main(argv: list[str] | None = None) -> dict:
    return common.main(parse, workload, argv)


if __name__ == "__main__":
    main()
