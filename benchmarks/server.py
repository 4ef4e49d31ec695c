"""The benchmark's keep-alive HTTP/1.1 server: its own process, plain and TLS, counting sockets.

``python -m benchmarks.server --dir DIR`` makes a throwaway CA and a certificate for 127.0.0.1 in
DIR (with trustme), listens on 127.0.0.1 (plain HTTP, HTTPS and a control port), prints one JSON
line ``{"http": PORT, "https": PORT, "control": PORT, "ca": PATH}`` and serves until stdin closes.

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
import ssl
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

_REASON = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "


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


async def _serve_connection(
    counts: Counts, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    counts.accepted += 1
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
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.LimitOverrunError):
        pass  # the client closed or reset its connection
    finally:
        counts.closed += 1
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
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


async def _main(directory: Path) -> None:
    counts = Counts()
    tls, ca_path = _make_certificates(directory)

    def plain(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> Any:
        return _serve_connection(counts, r, w)

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
    # Serve until the parent closes our stdin (or dies, which closes it too).
    stdin_closed = asyncio.get_running_loop().create_future()

    def watch_stdin() -> None:
        sys.stdin.read()
        stdin_closed.get_loop().call_soon_threadsafe(stdin_closed.set_result, None)

    threading.Thread(target=watch_stdin, daemon=True).start()
    await stdin_closed
    for server in servers:
        server.close()
        await server.wait_closed()


class ServerProcess:
    """Run the server in a child process; ``with ServerProcess(dir) as server:`` stops it after."""

    def __init__(self, directory: Path) -> None:
        import subprocess

        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server", "--dir", str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait(timeout=10)
            raise RuntimeError(f"benchmark server failed to start (exit {self._proc.returncode})")
        info = json.loads(line)
        self.http_url = f"http://127.0.0.1:{info['http']}"
        self.https_url = f"https://127.0.0.1:{info['https']}"
        self.control_port: int = info["control"]
        self.ca: str = info["ca"]

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

    def stop(self) -> None:
        import subprocess

        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="where to write the CA")
    asyncio.run(_main(parser.parse_args().dir))
