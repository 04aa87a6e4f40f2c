#!/usr/bin/env python3
"""Exact repeats against any OpenAI-compatible server: one long document sent cold, then again
unchanged, then with a new question appended. Streams /v1/completions at temperature 0 and times the
first token of each request (TTFT). The document is the first --characters characters of the texts in
/usr/share/common-licenses, so its token count is not a multiple of any chunk size.

    python3 scripts/workloads/exact_repeat.py --port 8000 [--characters 30000] [--repeats 2]

Prints one line per request: label, TTFT in seconds, prompt tokens, cached tokens.
"""

import argparse
import glob
import http.client
import json
import time


def document(characters: int) -> str:
    text = ""
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        try:
            with open(path, encoding="utf-8") as f:
                text += f.read()
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) >= characters:
            break
    return text[:characters]


def ttft(host: str, port: int, prompt: str) -> tuple[float, dict]:
    connection = http.client.HTTPConnection(host, port, timeout=3600)
    body = json.dumps({"prompt": prompt, "max_tokens": 2, "temperature": 0, "stream": True,
                       "stream_options": {"include_usage": True}})
    start = time.perf_counter()
    connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    first, usage = None, {}
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if first is None and event.get("choices") and event["choices"][0].get("text"):
            first = time.perf_counter() - start
        usage = event.get("usage") or usage
    connection.close()
    return first if first is not None else float("nan"), usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--characters", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    text = document(args.characters)
    question = "\n\nQuestion: Which obligations does the text above place on someone who distributes copies? Answer:"
    runs = [("cold", text)] + [("exact repeat", text)] * args.repeats + [("+ new question", text + question)]
    for label, prompt in runs:
        seconds, usage = ttft(args.host, args.port, prompt)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        print(f"{label:<16} ttft {seconds:8.4f} s  prompt {usage.get('prompt_tokens')}  cached {cached}")


if __name__ == "__main__":
    main()
