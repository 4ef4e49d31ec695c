"""A keep-alive HTTP/1.1 server for benchmarks, run in its own process, counting connections.

``python -m benchmarks.server`` binds 127.0.0.1 on a free port, prints ``{"port": N}`` and then
answers one command per stdin line with one JSON line: ``stats`` (connections accepted, open,
closed, requests served) or ``reset``. It stops when stdin closes. ``ServerProcess`` runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: _CountingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            self.server.requests += 1
        delay = float(query.get("delay", 0)) / 1000
        if delay:
            time.sleep(delay)
        body = b"x" * int(query.get("size", 2))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _reply


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.accepted = self.closed = self.requests = 0

    def get_request(self) -> Any:
        conn = super().get_request()
        with self.lock:
            self.accepted += 1
        return conn

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self.lock:
                self.closed += 1

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "accepted": self.accepted,
                "open": self.accepted - self.closed,
                "closed": self.closed,
                "requests": self.requests,
            }


def main() -> None:
    server = _CountingServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "reset":
                with server.lock:
                    server.accepted -= server.closed
                    server.closed = server.requests = 0
            print(json.dumps(server.counts()), flush=True)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class ServerProcess:
    """Run the server in a child process; ``with ServerProcess() as server:`` stops it after."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        self.port = json.loads(self._proc.stdout.readline())["port"]
        self.url = f"http://127.0.0.1:{self.port}"

    def _ask(self, command: str) -> dict[str, int]:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        counts: dict[str, int] = json.loads(self._proc.stdout.readline())
        return counts

    def stats(self) -> dict[str, int]:
        return self._ask("stats")

    def reset(self) -> dict[str, int]:
        return self._ask("reset")

    def wait_open(self, count: int, timeout: float = 10.0) -> dict[str, int]:
        """Poll until the server sees ``count`` open connections or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.stats()
            if counts["open"] == count or time.monotonic() > deadline:
                return counts
            time.sleep(0.01)

    def stop(self) -> None:
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


if __name__ == "__main__":
    main()
