"""A keep-alive HTTP/1.1 server on 127.0.0.1 counting connections: the README's and the benchmark's.

``python -m benchmarks.server`` serves plain HTTP on http://127.0.0.1:8000 (``--port`` to change
it; 0 picks a free port), prints that URL on its first line, a line of counts (connections
accepted and open, requests) each second they change, and the totals when stopped by Ctrl-C or
SIGTERM. It needs nothing but the standard library: the README's examples run against it.

``python -m benchmarks.server --dir DIR`` (the benchmark's form) makes a throwaway CA and a
certificate for 127.0.0.1 in DIR (with trustme), listens on 127.0.0.1 (plain HTTP, HTTPS and a
control port, all on free ports), prints one JSON line ``{"http": PORT, "https": PORT, "control":
PORT, "ca": PATH}`` and serves until its stdin closes.

Replies: ``GET /?size=N&delay=MS`` answers N bytes after MS milliseconds, with Content-Length and
keep-alive. The control port answers ``GET /stats`` with the server's own counts (connections
accepted and open, requests, CPU seconds used), so clients take before/after deltas without
touching the counted ports. One asyncio loop serves everything: a delayed reply costs a timer,
not a thread, so 256 held requests do not load the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_REASON = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
DEFAULT_PORT = 8000


class Counts:
    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.requests = 0
        self.handshakes = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "accepted": self.accepted,
            "open": self.accepted - self.closed,
            "requests": self.requests,
            "cpu": time.process_time(),
        }

    def line(self) -> str:
        return (
            f"connections accepted {self.accepted}, open {self.accepted - self.closed}; "
            f"requests {self.requests}"
        )


class _Connections:
    """The open client connections, so that a stop closes them before the loop ends."""

    def __init__(self) -> None:
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    async def close_all(self, timeout: float = 5.0) -> None:
        for writer in list(self.writers):
            writer.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)


async def _serve_connection(
    counts: Counts,
    connections: _Connections,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    counts.accepted += 1
    task = asyncio.current_task()
    assert task is not None
    connections.writers.add(writer)
    connections.tasks.add(task)
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            target = lines[0].split(b" ")[1].decode()
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            counts.requests += 1
            query = {k: v[-1] for k, v in parse_qs(urlsplit(target).query).items()}
            delay = float(query.get("delay", 0)) / 1000
            if delay:
                await asyncio.sleep(delay)
            body = b"x" * int(query.get("size", 2))
            writer.write(b"%s%d\r\n\r\n%s" % (_REASON, len(body), body))
            await writer.drain()
            if close:
                break
    except (
        asyncio.IncompleteReadError,
        ConnectionError,
        ssl.SSLError,
        asyncio.LimitOverrunError,
        IndexError,  # a request line without a target
        ValueError,  # a malformed Content-Length, size or delay
    ):
        pass  # the client closed, reset or spoke nonsense: end this connection
    finally:
        counts.closed += 1
        connections.writers.discard(writer)
        connections.tasks.discard(task)
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError, asyncio.CancelledError):
            await writer.wait_closed()


async def _serve_control(
    counts: Counts, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        await reader.readuntil(b"\r\n\r\n")
        body = json.dumps(counts.as_dict()).encode()
        writer.write(b"%s%d\r\nConnection: close\r\n\r\n%s" % (_REASON, len(body), body))
        await writer.drain()
    writer.close()


def _make_certificates(directory: Path) -> tuple[ssl.SSLContext, Path]:
    import trustme  # an optional extra: only the benchmark makes certificates

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return context, ca_path


def _stdin_closed() -> asyncio.Future[None]:
    """A future set when our stdin closes: the parent closed it, or died."""
    closed = asyncio.get_running_loop().create_future()

    def watch() -> None:
        sys.stdin.read()
        closed.get_loop().call_soon_threadsafe(closed.set_result, None)

    threading.Thread(target=watch, daemon=True).start()
    return closed


async def _benchmark_main(directory: Path) -> None:
    counts, connections = Counts(), _Connections()
    tls, ca_path = _make_certificates(directory)

    def plain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Any:
        return _serve_connection(counts, connections, r, w)

    def control(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Any:
        return _serve_control(counts, r, w)

    servers = [
        await asyncio.start_server(plain, "127.0.0.1", 0, backlog=1024),
        await asyncio.start_server(plain, "127.0.0.1", 0, backlog=1024, ssl=tls),
        await asyncio.start_server(control, "127.0.0.1", 0, backlog=64),
    ]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    print(
        json.dumps({"http": ports[0], "https": ports[1], "control": ports[2], "ca": str(ca_path)}),
        flush=True,
    )
    await _stdin_closed()
    for server in servers:
        server.close()
    await connections.close_all()
    for server in servers:
        await server.wait_closed()


async def _standalone_main(port: int) -> None:
    counts, connections = Counts(), _Connections()

    def plain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Any:
        return _serve_connection(counts, connections, r, w)

    try:
        server = await asyncio.start_server(plain, "127.0.0.1", port, backlog=1024)
    except OSError as exc:
        raise SystemExit(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; pass --port N for another port "
            f"(--port 0 picks a free one)"
        ) from None
    port = server.sockets[0].getsockname()[1]
    print(f"serving http://127.0.0.1:{port} (HTTP/1.1 keep-alive, counting connections; "
          f"Ctrl-C stops)", flush=True)  # fmt: skip
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(
            signum, lambda: stop.done() or stop.set_result(None)
        )
    shown = counts.line()
    while not stop.done():
        await asyncio.wait([stop], timeout=1.0)
        if counts.line() != shown:
            shown = counts.line()
            print(shown, flush=True)
    server.close()
    await connections.close_all()
    await server.wait_closed()
    print(f"stopped: {counts.line()}", flush=True)


class ChildProcess:
    """``python -m MODULE ARGS`` that prints one JSON line when ready and serves until stdin closes.

    Started in its own session, so a Ctrl-C in the terminal reaches only the parent, which
    stops the child by closing its stdin (and kills it if it does not end within 10 s).
    """

    def __init__(self, module: str, *args: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pid = self._proc.pid
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"{module} failed to start (exit {self._proc.returncode})")
        self.info: dict[str, Any] = json.loads(line)

    def stop(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerProcess(ChildProcess):
    """The benchmark's server in a child process; ``with ServerProcess(dir) as server:``."""

    def __init__(self, directory: Path) -> None:
        super().__init__("benchmarks.server", "--dir", str(directory))
        self.http_port: int = self.info["http"]
        self.https_port: int = self.info["https"]
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.https_url = f"https://127.0.0.1:{self.https_port}"
        self.control_port: int = self.info["control"]
        self.ca: str = self.info["ca"]

    def stats(self) -> dict[str, float]:
        return control_stats(self.control_port)

    def wait_open(self, count: int, timeout: float = 10.0) -> dict[str, float]:
        """Poll until the server sees ``count`` open connections or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.stats()
            if counts["open"] == count or time.monotonic() > deadline:
                return counts
            time.sleep(0.01)

    def __enter__(self) -> ServerProcess:
        return self


def control_stats(port: int) -> dict[str, float]:
    """The server's counts, over the uncounted control port."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/stats")
        counts: dict[str, float] = json.loads(conn.getresponse().read())
        return counts
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1 (default 8000; 0: any)"
    )
    parser.add_argument(
        "--dir", type=Path, help="the benchmark's form: write the CA here, serve HTTP and HTTPS"
    )
    args = parser.parse_args()
    if args.dir is not None:
        asyncio.run(_benchmark_main(args.dir))
    else:
        asyncio.run(_standalone_main(args.port))


if __name__ == "__main__":
    main()
