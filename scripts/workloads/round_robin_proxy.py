#!/usr/bin/env python3
"""A round-robin HTTP proxy: each request goes to the next backend, as a load balancer without
session affinity sends it.

    python3 scripts/workloads/round_robin_proxy.py --port 8000 --backend 127.0.0.1:8001 --backend 127.0.0.1:8002

With `--policy random` each request goes to a backend drawn at random (seeded by `--seed`) instead.
Round robin over a few clients that take turns in a fixed order sends each client to the same
backend every time (two users in flight, alternating: user 1 to the first backend, user 2 to the
second), which is session affinity by accident; random draws do not keep a client anywhere.

Requests (any method; bodies by Content-Length) are forwarded as they came, with `Connection:
close`; the backend's reply, streamed ones included, is passed back byte for byte until the backend
closes, and then the client's connection is closed too (clients reconnect for their next request).
POST requests (the completions) take their turns apart from the others, so that the GETs before them
(a readiness check polling until the backends answer, a client listing the models) do not decide
which backend the first completion goes to. GET /proxy/backends answers the backends and how many
requests each got, as JSON.
Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None


def rewrite(head: bytes) -> tuple[bytes, int]:
    """The request head with `Connection: close`, and its Content-Length."""
    lines = head.decode("latin-1").split("\r\n")
    kept = [lines[0]]
    length = 0
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        lowered = name.strip().lower()
        if lowered == "content-length":
            length = int(value.strip())
        if lowered in ("connection", "keep-alive", "proxy-connection"):
            continue
        kept.append(line)
    kept.append("Connection: close")
    return ("\r\n".join(kept) + "\r\n\r\n").encode("latin-1"), length


class Proxy:
    def __init__(self, backends: list[str], policy: str = "round-robin", seed: int = 0) -> None:
        self.backends = backends
        if policy == "random":
            draw = random.Random(seed)
            self.turn = (draw.randrange(len(backends)) for _ in itertools.count())
        else:
            self.turn = itertools.cycle(range(len(backends)))  # POST requests
        self.other_turn = itertools.cycle(range(len(backends)))
        self.counts = [0] * len(backends)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader)
            if head is None:
                return
            if head.startswith(b"GET /proxy/backends "):
                body = json.dumps({"backends": self.backends, "requests": self.counts}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
                return
            request, length = rewrite(head)
            body = await reader.readexactly(length) if length else b""
            index = next(self.turn if head.startswith(b"POST ") else self.other_turn)
            self.counts[index] += 1
            host, _, port = self.backends[index].rpartition(":")
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
            except OSError as error:
                message = f"backend {self.backends[index]} unreachable: {error}".encode()
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Length: "
                             + str(len(message)).encode() + b"\r\n\r\n" + message)
                return
            upstream_writer.write(request + body)
            await upstream_writer.drain()
            while True:
                data = await upstream_reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            upstream_writer.close()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                await writer.drain()
                writer.close()
            except ConnectionError:
                pass


async def serve(host: str, port: int, backends: list[str], policy: str, seed: int) -> None:
    proxy = Proxy(backends, policy, seed)
    server = await asyncio.start_server(proxy.handle, host, port, limit=1 << 20)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True, help="host:port (repeat for each backend)")
    parser.add_argument("--policy", choices=["round-robin", "random"], default="round-robin",
                        help="the next backend in turn (default), or one drawn at random for each completion")
    parser.add_argument("--seed", type=int, default=0, help="the random draws' seed (--policy random)")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.backend, args.policy, args.seed))


if __name__ == "__main__":
    main()
