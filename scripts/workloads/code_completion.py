#!/usr/bin/env python3
"""Code assistance against any OpenAI-compatible server: completions at many points of a few files.

The repository's own Swift sources (Sources/, largest first) are the code: --files files (default
4) of at least --min-tokens tokens each (default 1,500, files cut to --max-tokens, default 6,000).
Each of --requests requests (default 24) picks a file, popular ones more often (Zipf, exponent 1),
and a completion point between 40% and 100% of it, and asks the model to continue the code from
there; so requests share long file prefixes and differ in where they stop, as an editor's
completions do. Requests are streamed chat completions at temperature 0, --concurrency at a time
(default 2). The choices depend only on --seed; the sources are those of the checkout.

Prints a JSON report (per-request TTFT, latency, prompt size; mean/p50/p90/p99 TTFT, requests/s,
wall time, per-file means; groups are files by popularity, 0 the most requested) on stdout or into
--json, and a table on stderr.

    python3 scripts/workloads/code_completion.py --base-url http://127.0.0.1:8000/v1
"""

from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--files", type=int, default=4, help="source files to complete in (default 4)")
    parser.add_argument("--requests", type=int, default=24, help="completion requests (default 24)")
    parser.add_argument("--min-tokens", type=int, default=1500, help="smallest file, in tokens (default 1500)")
    parser.add_argument("--max-tokens-per-file", dest="file_tokens", type=int, default=6000,
                        help="files are cut to this many tokens (default 6000)")
    parser.add_argument("--concurrency", type=int, default=2, help="requests in flight (default 2)")
    args = parser.parse_args(argv)
    common.check_positive(parser, args, ["files", "requests", "min_tokens", "file_tokens", "concurrency", "max_tokens"])
    return args


def sources(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(path, text) of the largest Swift sources of the checkout that are long enough."""
    found = []
    for directory, _, names in os.walk(os.path.join(ROOT, "Sources")):
        for name in names:
            if name.endswith(".swift"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as handle:
                    found.append((os.path.relpath(path, ROOT), handle.read()))
    minimum = int(args.min_tokens * common.CHARS_PER_TOKEN)
    found = sorted((f for f in found if len(f[1]) >= minimum), key=lambda f: (-len(f[1]), f[0]))
    if len(found) < args.files:
        raise SystemExit(f"only {len(found)} Swift sources have {args.min_tokens} tokens or more")
    limit = int(args.file_tokens * common.CHARS_PER_TOKEN)
    return [(path, text[:limit]) for path, text in found[: args.files]]


def build(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """The files and, per request, (file index, completion point in characters), from the seed."""
    files = sources(args)
    rng = random.Random(args.seed)
    weights = [1 / (rank + 1) for rank in range(len(files))]
    plan = []
    for _ in range(args.requests):
        index = rng.choices(range(len(files)), weights)[0]
        text = files[index][1]
        point = int(len(text) * rng.uniform(0.4, 1.0))
        while point < len(text) and text[point - 1] != "\n":
            point += 1  # complete from the start of a line
        plan.append((index, point))
    return files, plan


async def workload(args: argparse.Namespace) -> dict:
    files, plan = build(args)
    chats = []
    for index, point in plan:
        path, text = files[index]
        content = f"Continue this Swift file ({path}) from where it stops.\n\n```swift\n{text[:point]}"
        chats.append(([{"role": "user", "content": content}], path, index))
    model, records, wall = await common.run_waves(args, [chats])
    config = {
        "base_url": args.base_url, "model": model, "files": [path for path, _ in files], "requests": args.requests,
        "min_tokens": args.min_tokens, "file_tokens": args.file_tokens, "concurrency": args.concurrency,
        "max_tokens": args.max_tokens, "seed": args.seed,
    }
    return common.report("code-completion", config, records, wall, "file")


def main(argv: list[str] | None = None) -> dict:
    return common.main(parse, workload, argv)


if __name__ == "__main__":
    main()
