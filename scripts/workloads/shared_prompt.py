#!/usr/bin/env python3
"""Many users on one system prompt, against any OpenAI-compatible server.

U users (--users, default 16) share one ~S-token system prompt (--system-tokens, default 2,000)
and each asks a short question of their own, all at once; then W more waves (--waves, default 1)
ask new questions the same way. A server that reuses the shared prompt computes it once; one
that does not computes it for every request. Requests are streamed chat completions at
temperature 0, --concurrency at a time (default: all users). Texts and questions depend only on
--seed.

Prints a JSON report (per-request TTFT, latency, prompt size; mean/p50/p90/p99 TTFT, requests/s,
wall time, per-wave means; wave 0 is the first) on stdout or into --json, and a table on stderr.

    python3 scripts/workloads/shared_prompt.py --base-url http://127.0.0.1:8000/v1
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
    parser.add_argument("--users", type=int, default=16, help="U: users sharing the system prompt (default 16)")
    parser.add_argument("--system-tokens", type=int, default=2000, help="S: tokens of the shared system prompt")
    parser.add_argument("--waves", type=int, default=1, help="W: waves of questions after the first (default 1)")
    parser.add_argument("--concurrency", type=int, help="requests in flight (default: --users)")
    args = parser.parse_args(argv)
    if args.concurrency is None:
        args.concurrency = args.users
    common.check_positive(parser, args, ["users", "system_tokens", "concurrency", "max_tokens"])
    if args.waves < 0:
        parser.error("--waves must not be negative")
    return args


def build(args: argparse.Namespace) -> tuple[str, list[list[str]]]:
    """The system prompt and, per wave, one question per user, from the seed alone."""
    pool = common.TextPool()
    rng = random.Random(args.seed)
    system = "You answer questions about the following text.\n\n" + pool.take(args.system_tokens)
    waves = [[common.question(rng, system) for _ in range(args.users)] for _ in range(args.waves + 1)]
    return system, waves


async def workload(args: argparse.Namespace) -> dict:
    system, waves = build(args)
    chats = [
        [([{"role": "system", "content": system}, {"role": "user", "content": questions[user]}], f"user{user}", wave)
            for user in range(args.users)]
        for wave, questions in enumerate(waves)
    ]
    model, records, wall = await common.run_waves(args, chats)
    config = {
        "base_url": args.base_url, "model": model, "users": args.users, "system_tokens": args.system_tokens,
        "waves": args.waves, "concurrency": args.concurrency, "max_tokens": args.max_tokens, "seed": args.seed,
    }
    return common.report("shared-prompt", config, records, wall, "wave")


def main(argv: list[str] | None = None) -> dict:
    return common.main(parse, workload, argv)


if __name__ == "__main__":
    main()
