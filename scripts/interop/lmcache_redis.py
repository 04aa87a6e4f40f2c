"""LMCache's own Redis connector (RedisConnector, lmcache 0.5.6) on values our Redis tier wrote.

Usage:
  python lmcache_redis.py check HOST PORT
      For every chunk our tier stored with `redis_layout: lmcache` (every `<key>metadata` key):
      LMCache's connector must see it (exists), read it (get: LMCache's metadata decoded, the
      exact bytes), then, after both keys are deleted, write it back (put); the keys it writes
      must hold the very bytes ours did, metadata included. Our tier then reads what LMCache
      wrote (the caller asks `lmcache serve` again and checks the hit).
  python lmcache_redis.py ask PORT PROMPT_FILE
      One greedy completion from `lmcache serve` on PORT; prints {"text", "cached_tokens"}.

The connector is built without its engine-facing __init__ (it needs a vLLM engine's
configuration); exactly the attributes its exists/get/put use are set, and the CPU backend's
allocator is a small stand-in. Exits non-zero on any mismatch.
"""

import asyncio
import json
import sys
import urllib.request

import redis as redis_sync
import torch

from lmcache.v1.memory_management import MemoryFormat
from lmcache.v1.protocol import init_remote_metadata_info
from lmcache.v1.storage_backend.connector import redis_connector
from lmcache.v1.storage_backend.job_executor.pq_executor import AsyncPQExecutor


class Key:
    """A key as the connector uses it: only `to_string()` (our key strings, kept exact)."""

    def __init__(self, text):
        self.text = text

    def to_string(self):
        return self.text


class Blob:
    """A memory object: a byte array with its shapes, dtypes and format."""

    def __init__(self, shapes, dtypes, fmt):
        count = 1
        for d in shapes[0]:
            count *= max(int(d), 1)
        self.byte_array = bytearray(count * torch.tensor([], dtype=dtypes[0]).element_size())
        self.shapes, self.dtypes, self.fmt = [torch.Size(s) for s in shapes], list(dtypes), fmt

    def get_shapes(self):
        return self.shapes

    def get_dtypes(self):
        return self.dtypes

    def get_memory_format(self):
        return self.fmt


class Allocator:
    """What the connector asks of LMCache's CPU backend on GET: room for the value."""

    def allocate(self, shapes, dtypes, fmt):
        return Blob(shapes, dtypes, fmt)


def check(condition, message):
    if not condition:
        print("FAIL:", message)
        sys.exit(1)


async def check_values(host, port):
    init_remote_metadata_info(1)  # one KV group: length, format, then dtype and 4 dims
    loop = asyncio.get_running_loop()
    connector = redis_connector.RedisConnector.__new__(redis_connector.RedisConnector)
    connector.max_connections = 8
    connector.sem = asyncio.Semaphore(8)
    connector.pool = redis_connector.redis.ConnectionPool.from_url(f"redis://{host}:{port}", max_connections=8)
    connector.connection = redis_connector.redis.Redis.from_pool(connector.pool)
    connector.loop = loop
    connector.local_cpu_backend = Allocator()
    connector.pq_executor = AsyncPQExecutor(loop)

    raw = redis_sync.Redis(host=host, port=port)
    names = sorted(k.decode()[: -len("metadata")] for k in raw.scan_iter(match="*metadata"))
    check(len(names) >= 2, f"our tier stored {len(names)} chunks; expected at least 2")
    for name in names:
        key = Key(name)
        metadata = raw.get(name + "metadata")
        value = raw.get(name + "kv_bytes")
        check(await connector.exists(key), f"exists({name})")
        got = await connector.get(key)
        check(got is not None, f"get({name}) missed")
        check(got.get_memory_format() == MemoryFormat.BINARY, f"format of {name}: {got.get_memory_format()}")
        check(got.get_dtypes() == [torch.uint8], f"dtype of {name}: {got.get_dtypes()}")
        # Opaque bytes: one dimension, the length (LMCache keeps the zero padding of BINARY shapes).
        dims = list(got.get_shapes()[0])
        check(dims[:1] == [len(value)] and not any(dims[1:]), f"shape of {name}: {got.get_shapes()}")
        check(bytes(got.byte_array) == value, f"bytes of {name}")
        # LMCache writes it back: the same two keys, the same bytes, byte for byte.
        raw.delete(name + "metadata", name + "kv_bytes")
        await connector.put(key, got)
        check(raw.get(name + "kv_bytes") == value, f"kv_bytes LMCache wrote for {name}")
        check(raw.get(name + "metadata") == metadata, f"metadata LMCache wrote for {name}")
    check(await connector.get(Key(names[0] + "-absent")) is None, "get() of a missing key")
    # Not connector.close(): it waits, blocking, for its executor on the loop it runs on (LMCache
    # runs that loop in a thread of its own); the executor's tasks end with this loop.
    await connector.connection.aclose()
    print(f"OK: LMCache's RedisConnector read {len(names)} chunks our tier wrote, and wrote them back byte for byte")


def ask(port, prompt_file):
    with open(prompt_file, encoding="utf-8") as f:
        prompt = f.read()
    body = json.dumps({"prompt": prompt, "max_tokens": 12, "temperature": 0}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        reply = json.load(response)
    details = reply.get("usage", {}).get("prompt_tokens_details") or {}
    print(json.dumps({"text": reply["choices"][0]["text"], "cached_tokens": details.get("cached_tokens", 0)}))


if __name__ == "__main__":
    if sys.argv[1] == "check":
        asyncio.run(check_values(sys.argv[2], int(sys.argv[3])))
    elif sys.argv[1] == "ask":
        ask(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
