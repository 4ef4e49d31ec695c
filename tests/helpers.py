"""A real HTTP/1.1 keep-alive server on 127.0.0.1 that counts connections, and polling helpers."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
SERVER_THREAD_PREFIX = "testserver"


def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(interval)


class Handler(BaseHTTPRequestHandler):
    """Replies per query string: delay=MS, status=N, size=N, close=1, drop=1, cookie=NAME=VALUE,
    location=URL (a Location header, for redirects).

    Server-wide misbehaviour comes from the CountingServer's options: ``idle_timeout`` closes a
    connection idle that long; ``drop_after=N`` reads the request after the N-th on a connection
    and closes it without a reply (a keep-alive close racing the next request, made
    deterministic); ``drop_chance`` does the same at random to requests on a reused connection.
    """

    protocol_version = "HTTP/1.1"  # keep-alive, with Content-Length on every reply
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall
    server: CountingServer
    served = 0  # requests answered on this connection

    @property
    def timeout(self) -> float:  # read by StreamRequestHandler.setup() for the socket
        return self.server.idle_timeout

    def log_message(self, format, *args):  # quiet
        pass

    def _reply(self) -> None:
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""
        self.server.count_request(self.command, body_in)
        if query.get("drop") or self.server.should_drop(self.served):
            self.close_connection = True
            return
        self.served += 1
        delay = float(query.get("delay", 0)) / 1000
        if delay:
            time.sleep(delay)  # the server holding a request, as a slow backend does
        size = int(query.get("size", 2))
        body = b"ok" if size == 2 else b"x" * size
        self.send_response(int(query.get("status", 200)))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        if query.get("close"):
            self.send_header("Connection", "close")
        if query.get("cookie"):
            self.send_header("Set-Cookie", query["cookie"])
        if query.get("location"):
            self.send_header("Location", query["location"])
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _reply


class CountingServer(ThreadingHTTPServer):
    """Counts connections server-side: accepted, open now, closed; and requests by method."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 512  # listen(5) would drop bursts of SYNs: a 1 s retransmit each

    def __init__(
        self,
        *,
        idle_timeout: float = 30.0,  # a leaked client connection cannot pin a thread forever
        drop_after: int | None = None,
        drop_chance: float = 0.0,
        seed: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.tls = tls
        self.idle_timeout = idle_timeout
        self.drop_after = drop_after
        self.drop_chance = drop_chance
        self.random = random.Random(seed)
        self.dropped = 0
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed = 0
        self.requests = 0
        self.methods: list[str] = []
        self.peers: list[tuple[str, int]] = []  # each accepted connection's client address
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    @property
    def open(self) -> int:
        with self.lock:
            return self.accepted - self.closed

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (read timeout, closed session) leaves the reply nowhere to go.
        quiet = (BrokenPipeError, ConnectionResetError, TimeoutError, ssl.SSLError)
        if not isinstance(sys.exc_info()[1], quiet):
            super().handle_error(request, client_address)

    def get_request(self):
        sock, address = super().get_request()
        with self.lock:
            self.accepted += 1
            self.peers.append(address[:2])
        if self.tls is not None:  # the handshake happens in the connection's own thread
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def shutdown_request(self, request) -> None:
        try:
            super().shutdown_request(request)
        finally:
            with self.lock:
                self.closed += 1

    def process_request(self, request, client_address) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"{SERVER_THREAD_PREFIX}-conn",
            daemon=True,
        )
        thread.start()

    def should_drop(self, served: int) -> bool:
        """Drop this request (read, then close without reply)? ``served``: answered before it."""
        with self.lock:
            drop = served == self.drop_after or (
                served > 0 and self.drop_chance > 0 and self.random.random() < self.drop_chance
            )
            self.dropped += drop
        return drop

    def count_request(self, method: str, body: bytes) -> None:
        with self.lock:
            self.requests += 1
            self.methods.append(method)

    def reset(self) -> None:
        with self.lock:
            self.accepted -= self.closed
            self.closed = 0
            self.requests = 0
            self.dropped = 0
            self.methods = []
            self.peers = []

    def start(self) -> CountingServer:
        self._thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{SERVER_THREAD_PREFIX}-accept",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        try:
            self.shutdown()
        finally:
            self.server_close()
            if self._thread is not None:
                self._thread.join(timeout=5)


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with -X dev -W error; return the finished process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    return subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(**options: Any) -> Iterator[CountingServer]:
    """A CountingServer of its own (for misbehaviour options), stopped on the way out."""
    server = CountingServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


def run_plain_threads(width: int, work, barrier: threading.Barrier | None = None) -> None:
    """Run ``work`` in ``width`` plain threads, join them with a deadline, re-raise any error."""
    errors: list[Exception] = []

    def guarded() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001  # re-raised below, in the test's thread
            errors.append(exc)
            if barrier is not None:
                barrier.abort()  # the other threads stop waiting for this one

    threads = [threading.Thread(target=guarded, name=f"plain-{i}") for i in range(width)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not [t for t in threads if t.is_alive()], "a plain thread did not finish in time"
    if errors:
        raise errors[0]
