"""LMCache's own lm:// client (LMCServerConnector, lmcache 0.5.6) against a running server.

Usage: python lmcache_client.py HOST PORT

Drives the connector's exists/put/get coroutines exactly as LMCache's remote backend does, with
LMCache's own key type and wire messages. Only the memory objects are small stand-ins (the
connector needs `byte_array`, shape, dtype and format from them, and an allocator for GET),
because LMCache's CPU backend needs an engine configuration to build. Exits non-zero on any
mismatch.
"""

import asyncio
import sys

import torch

from lmcache.utils import CacheEngineKey
from lmcache.v1.memory_management import MemoryFormat
from lmcache.v1.storage_backend.connector.lm_connector import LMCServerConnector


class Blob:
    """A memory object: a byte array with its shape, dtype and format."""

    def __init__(self, data, shape, dtype, fmt):
        self.byte_array = data
        self._shape, self._dtype, self._fmt = torch.Size(shape), dtype, fmt

    def get_shape(self):
        return self._shape

    def get_dtype(self):
        return self._dtype

    def get_memory_format(self):
        return self._fmt


class Allocator:
    """What the connector asks of LMCache's CPU backend on GET: room for the reply."""

    def __init__(self):
        self.requests = []

    def allocate(self, shape, dtype, fmt):
        self.requests.append((tuple(shape), dtype, fmt))
        count = 1
        for d in shape:
            count *= max(int(d), 1)
        return Blob(bytearray(count * torch.tensor([], dtype=dtype).element_size()), shape, dtype, fmt)


def check(condition, message):
    if not condition:
        print("FAIL:", message)
        sys.exit(1)


async def main(host, port):
    loop = asyncio.get_running_loop()
    allocator = Allocator()
    # The connector's own __init__ also reads engine metadata for features this test does not use;
    # set exactly the attributes its exists/put/get/close use.
    connector = LMCServerConnector.__new__(LMCServerConnector)
    import socket

    connector.client_socket = socket.create_connection((host, port))
    connector.loop = loop
    connector.local_cpu_backend = allocator
    connector.async_socket_lock = asyncio.Lock()

    def key(n):
        return CacheEngineKey("Qwen/Qwen3-8B", 1, 0, 0x7F3A9C21E4B05D18 + n, torch.bfloat16)

    check(not await connector.exists(key(0)), "exists() on an empty server")
    check(await connector.get(key(0)) is None, "get() of a missing key")

    cases = [
        # The LM_PROTOCOL.md example: a 256-token bf16 chunk of shape [2, 36, 256, 1024].
        ([2, 36, 256, 1024], torch.bfloat16, MemoryFormat.KV_2LTD),
        ([2, 4, 16, 64], torch.float16, MemoryFormat.KV_2LTD),
        ([16, 2, 128], torch.float32, MemoryFormat.KV_T2D),
        ([1000, 0, 0, 0], torch.uint8, MemoryFormat.BINARY),
    ]
    stored = {}
    for n, (shape, dtype, fmt) in enumerate(cases):
        count = 1
        for d in shape:
            count *= max(d, 1)
        data = torch.randint(0, 256, (count * torch.tensor([], dtype=dtype).element_size(),), dtype=torch.uint8)
        blob = Blob(bytearray(data.numpy().tobytes()), shape, dtype, fmt)
        await connector.put(key(n), blob)
        stored[n] = blob
    for n, blob in stored.items():
        check(await connector.exists(key(n)), f"exists() after put {n}")
        got = await connector.get(key(n))
        check(got is not None, f"get() after put {n}")
        check(bytes(got.byte_array) == bytes(blob.byte_array), f"bytes of value {n}")
        shape, dtype, fmt = allocator.requests[-1]
        want = tuple(blob.get_shape())
        check(shape[: len(want)] == want, f"shape echoed for {n}: {shape} vs {want}")
        check(dtype == blob.get_dtype() and fmt == blob.get_memory_format(), f"dtype/format echoed for {n}")

    # A later PUT overwrites.
    small = Blob(bytearray(b"\x01\x02" * 128), [2, 1, 1, 64], torch.float16, MemoryFormat.KV_2LTD)
    await connector.put(key(1), small)
    got = await connector.get(key(1))
    check(got is not None and bytes(got.byte_array) == bytes(small.byte_array), "overwrite")

    await connector.close()
    print(f"OK: LMCache's LMCServerConnector against {host}:{port}: {len(cases)} values, exists/put/get/overwrite")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
