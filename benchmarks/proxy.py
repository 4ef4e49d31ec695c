"""A WAN-like delay on loopback: ``python -m benchmarks.proxy RTT_MS PORT [PORT ...]``.

For each target PORT on 127.0.0.1 it listens on a free port of 127.0.0.1 and relays every
connection to the target, holding every chunk, in each direction, for RTT/2 before passing it on.
A request then costs a round trip, a TLS handshake its own round trips (the proxy relays bytes and
never looks inside them), and the first bytes of a new connection one round trip more, which is
what the client's TCP handshake would cost on a real network (loopback completes it at once).
Bandwidth is not limited. It prints one JSON line ``{"ports": {"TARGET": LISTEN, ...}}`` and
relays until its stdin closes; the server behind it still counts every connection (one upstream
connection per client connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from benchmarks.server import _stdin_closed

CHUNK = 65536


async def _relay(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, first_extra: float
) -> None:
    """Copy reader to writer, each chunk (and the EOF) ``delay`` seconds after it arrived."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def take() -> None:
        extra = first_extra
        while True:
            try:
                data = await reader.read(CHUNK)
            except (ConnectionError, OSError):
                data = b""  # a reset reaches the other side as an EOF, as late as data would
            queue.put_nowait((loop.time() + delay + extra, data))
            extra = 0.0
            if not data:
                return

    taker = asyncio.ensure_future(take())
    try:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()
    finally:
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await taker


class _Live:
    """Relays under way, so that a stop ends them by closing their sockets (not by cancelling)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.writers: set[asyncio.StreamWriter] = set()


async def _connection(
    target: int,
    delay: float,
    live: _Live,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
) -> None:
    task = asyncio.current_task()
    assert task is not None
    live.tasks.add(task)
    live.writers.add(client_writer)
    server_writer = None
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        live.writers.add(server_writer)
        # The client's first bytes pay one more round trip: its TCP handshake on a real network.
        up = asyncio.ensure_future(_relay(client_reader, server_writer, delay, 2 * delay))
        down = asyncio.ensure_future(_relay(server_reader, client_writer, delay, 0.0))
        # An EOF (relayed in order, after the data before it) or a reset in either direction
        # ends the connection: HTTP clients and servers close, they never half-close, and a
        # half-open relay would leave the server waiting for a TLS close_notify that never comes.
        _, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    except (ConnectionError, OSError):
        pass
    finally:
        live.tasks.discard(task)
        for writer in (client_writer, server_writer):
            if writer is not None:
                live.writers.discard(writer)
                writer.close()
                with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                    await writer.wait_closed()


async def _main(rtt_ms: float, targets: list[int]) -> None:
    delay = rtt_ms / 2000
    live = _Live()
    servers, ports = [], {}
    for target in targets:

        def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, target: int = target) -> Any:
            return _connection(target, delay, live, r, w)

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        servers.append(server)
        ports[str(target)] = server.sockets[0].getsockname()[1]
    print(json.dumps({"ports": ports}), flush=True)
    await _stdin_closed()
    for server in servers:
        server.close()
    for writer in list(live.writers):
        writer.close()
    if live.tasks:
        await asyncio.wait(list(live.tasks), timeout=5)
    for server in servers:
        await server.wait_closed()


def main() -> None:
    rtt_ms, *targets = sys.argv[1:]
    asyncio.run(_main(float(rtt_ms), [int(t) for t in targets]))


if __name__ == "__main__":
    main()
