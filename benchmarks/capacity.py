"""The server's own capacity: ``python -m benchmarks.capacity URL CONTROL_PORT SECONDS``.

A lean asyncio client (raw sockets, 32 keep-alive connections, one request at a time on each)
loads the server for a few seconds and prints its requests per second and how busy the
server's CPU was. Compared with the variants' rates, it shows the server is not what limits them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import urlsplit

from benchmarks.server import control_stats


async def _load(host: str, port: int, seconds: float, connections: int) -> int:
    request = f"GET /?size=64 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + seconds
    done = 0

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.monotonic() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                done += 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(connections)))
    return done


def main() -> None:
    url, control, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    parts = urlsplit(url)
    before = control_stats(control)
    start = time.perf_counter()
    done = asyncio.run(_load(parts.hostname or "127.0.0.1", parts.port or 80, seconds, 32))
    elapsed = time.perf_counter() - start
    after = control_stats(control)
    busy = (after["cpu"] - before["cpu"]) / elapsed
    print(json.dumps({"rps": done / elapsed, "server_busy": busy, "requests": done}))


if __name__ == "__main__":
    main()
