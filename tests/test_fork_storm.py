"""Forks while other threads are mid-request, closing, building or shutting down: no child hangs.

CPython clears the thread states of the threads a fork leaves behind inside ``os.fork()`` in the
child, so their thread-exit closers run there, before any of the child's own code; a lock one of
those threads held (a ``BufferedReader``'s, an SSL object's, a queue's, a counter's) is held
forever in the child. Each test runs a forking interpreter of its own (``run_child``: ``-X dev
-W error``, and pytest's own process never forks) against servers in this process, which record
server-side, per connection, the ``X-Pid`` of every request it carried: a connection that carried
two pids is a parent's connection a child used. The forking process reaps every child by pid,
polling ``waitpid(WNOHANG)`` against a deadline, and SIGKILLs (by pid) the ones that hang.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import ssl
import sys
import threading
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

import pytest
import requests
from helpers import CountingServer, Handler, run_child, wait_until

import threadsession
from threadsession import ThreadLocalSessionPool, default_pool, with_session

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

FORKS = 200
THREADS = 8
CHILD_DEADLINE = 10.0  # seconds from its fork to its exit; a healthy child needs well under 1 s
MAX_LIVE = 16  # children alive at once: a hung one holds a place until it is killed
LARGE = 300_000  # bytes of a streamed body, and of an upload
UPLOAD = b"u" * LARGE
REPORT = "REPORT "


# ---- the servers (in the test process) --------------------------------------------------------


class _PidHandler(Handler):
    """Records (connection number, X-Pid) for every request; otherwise the suite's Handler."""

    server: PidServer
    connection_number = -1

    def setup(self) -> None:
        super().setup()
        self.connection_number = self.server.next_connection()

    def _noted(self) -> None:
        self.server.note(self.connection_number, self.headers.get("X-Pid", "?"))
        self._reply()

    do_GET = do_POST = _noted


class PidServer(CountingServer):
    """A CountingServer that knows which process sent each request on each connection."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.RequestHandlerClass = _PidHandler
        self._numbers = itertools.count()
        self.log: list[tuple[int, str]] = []

    def next_connection(self) -> int:
        with self.lock:
            return next(self._numbers)

    def note(self, connection: int, pid: str) -> None:
        with self.lock:
            self.log.append((connection, pid))

    def pids_by_connection(self) -> dict[int, set[str]]:
        with self.lock:
            log = list(self.log)
        found: dict[int, set[str]] = defaultdict(set)
        for connection, pid in log:
            found[connection].add(pid)
        return found


@contextmanager
def pid_server(tls: ssl.SSLContext | None = None) -> Iterator[PidServer]:
    server = PidServer(tls=tls).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def ca_path(tmp_path_factory) -> tuple[ssl.SSLContext, str]:
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    path = tmp_path_factory.mktemp("storm-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return context, str(path)


@pytest.fixture(params=["http", "https"])
def storm_server(request, ca_path, monkeypatch) -> Iterator[PidServer]:
    context, path = ca_path
    if request.param == "https":
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", path)  # the forking interpreter inherits it
    with pid_server(context if request.param == "https" else None) as server:
        yield server


def check_connections(server: PidServer, report: dict[str, Any]) -> None:
    """No connection carried requests of two processes; the parent kept its connections."""
    by_connection = server.pids_by_connection()
    mixed = {c: pids for c, pids in by_connection.items() if len(pids) > 1}
    assert mixed == {}, f"connections used by more than one process: {mixed}"
    parent = str(report["pid"])
    parent_connections = [c for c, pids in by_connection.items() if parent in pids]
    # one connection per parent thread, reused to the end: no fork reset one of them
    assert len(parent_connections) == report["parent_connections_opened"], report
    children = {pid for pids in by_connection.values() for pid in pids} - {parent}
    assert len(children) == report["exited_ok"], report


# ---- in the forking interpreter ---------------------------------------------------------------


def _me() -> dict[str, str]:
    return {"X-Pid": str(os.getpid())}


class Children:
    """The children one process forked: reaped by pid, polling, killed by pid past a deadline."""

    def __init__(self, deadline: float = CHILD_DEADLINE) -> None:
        self.deadline = deadline
        self.started: dict[int, float] = {}
        self.forks = self.exited_ok = self.failed = self.hung = 0

    def fork(self, child: Callable[[], bool]) -> None:
        """Fork; the child runs ``child`` and leaves with os._exit: 0 if it returned True."""
        while len(self.started) >= MAX_LIVE:
            self.reap(block=True)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if child() else 2
            except BaseException:  # noqa: BLE001  # reported on stderr, and by the exit code
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        self.forks += 1
        self.started[pid] = time.monotonic()

    def reap(self, *, block: bool = False) -> None:
        """Collect the children that ended; kill those past their deadline (block: one pass, >= 1)."""
        while True:
            for pid, started in list(self.started.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    if time.monotonic() - started < self.deadline:
                        continue
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    self.hung += 1
                elif os.waitstatus_to_exitcode(status) == 0:
                    self.exited_ok += 1
                else:
                    self.failed += 1
                del self.started[pid]
            if not block or len(self.started) < MAX_LIVE:
                return
            time.sleep(0.005)  # polling waitpid: a child has no other way to say it is done

    def finish(self) -> None:
        while self.started:
            self.reap()
            if self.started:
                time.sleep(0.01)

    def figures(self) -> dict[str, int]:
        return {
            "forks": self.forks,
            "exited_ok": self.exited_ok,
            "failed": self.failed,
            "hung": self.hung,
        }


def _child_requests(url: str, pool: ThreadLocalSessionPool) -> bool:
    """In a child: one request through default_pool(), then @with_session, bare and on ``pool``."""

    @with_session
    def through_default(*, session: requests.Session | None = None) -> str:
        assert session is not None
        return session.get(url + "/?size=2", headers=_me(), timeout=5).text

    @with_session(pool)
    def through_pool(*, session: requests.Session | None = None) -> str:
        assert session is not None
        return session.get(url + "/?size=2", headers=_me(), timeout=5).text

    texts = [
        default_pool().get(url + "/?size=2", headers=_me(), timeout=5).text,
        through_default(),
        through_pool(),
    ]
    # counted from zero: the child's own sessions and connections only
    fresh = pool.stats().connections_opened == 1 and default_pool().stats().sessions_created == 1
    threadsession.close_all()
    return texts == ["ok"] * 3 and fresh


def _ignore_fork_warning() -> None:
    # 3.12+ warns that fork() in a threaded process may deadlock: forking so is the test.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)


def storm_main(url: str, forks: int, seed: int) -> None:
    """8 threads busy (short replies, streamed large bodies, uploads); fork at random moments."""
    _ignore_fork_warning()
    rng = random.Random(seed)
    pool = ThreadLocalSessionPool(timeout=30)
    stop = threading.Event()
    done = [0] * THREADS
    errors: list[str] = []

    def short(p: ThreadLocalSessionPool) -> bool:
        # ?delay: most of the time is spent blocked in readline(), the BufferedReader's lock held
        return p.get(url + "/?size=2&delay=2", headers=_me()).text == "ok"

    def stream(p: ThreadLocalSessionPool) -> bool:
        with p.get(url + f"/?size={LARGE}", headers=_me(), stream=True) as reply:
            return sum(map(len, reply.iter_content(16384))) == LARGE

    def upload(p: ThreadLocalSessionPool) -> bool:
        return p.post(url + "/?size=2", data=UPLOAD, headers=_me()).text == "ok"

    kinds = [short, stream, upload]

    def work(index: int) -> None:
        kind = kinds[index % len(kinds)]
        p = default_pool() if index % 2 else pool
        deadline = time.monotonic() + 300
        try:
            for _ in range(100_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                if not kind(p):
                    raise AssertionError(f"{kind.__name__}: wrong reply")
                done[index] += 1
        except BaseException as exc:  # noqa: BLE001  # the report carries it; the test fails
            errors.append(f"{kind.__name__}: {exc!r}")

    threads = [threading.Thread(target=work, args=(i,), name=f"busy-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    children = Children()
    started = time.monotonic()
    try:
        # Forks start once every thread has its connection (no connect or TLS handshake then).
        warm = wait_until(lambda: all(done) or bool(errors), 30)
        for _ in range(forks if warm and not errors else 0):
            time.sleep(rng.uniform(0, 0.004))  # a random moment, not a synchronisation
            children.fork(lambda: _child_requests(url, pool))
            children.reap()
        children.finish()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    opened = pool.stats().connections_opened + default_pool().stats().connections_opened
    report = {
        "pid": os.getpid(),
        **children.figures(),
        "seconds": round(time.monotonic() - started, 1),
        "parent_requests_ok": sum(done),
        "parent_errors": errors,
        "parent_connections_opened": opened,
        "parent_stale_retries": pool.stats().stale_retries
        + default_pool().stats().stale_retries,
        "threads_alive": sum(thread.is_alive() for thread in threads),
    }
    threadsession.close_all()
    print(REPORT + json.dumps(report), flush=True)


def _report(child: Any) -> dict[str, Any]:
    lines = [line for line in child.stdout.splitlines() if line.startswith(REPORT)]
    assert lines, (child.returncode, child.stdout[-2000:], child.stderr[-4000:])
    report: dict[str, Any] = json.loads(lines[-1][len(REPORT) :])
    return report


def test_fork_storm_children_never_hang(storm_server):
    """200 forks while 8 threads send and receive: every child exits 0, none hangs, none reuses."""
    url = storm_server.url
    code = f"import test_fork_storm as t; t.storm_main({url!r}, {FORKS}, {FORKS})"
    child = run_child(code, timeout=240)
    report = _report(child)
    print(f"{url.split(':')[0]} storm: {report}")
    assert report["hung"] == 0, report
    assert report["failed"] == 0, (report, child.stderr[-4000:])
    assert report["forks"] == report["exited_ok"] == FORKS, report
    assert report["parent_errors"] == [], report
    assert report["parent_requests_ok"] > 0, report
    assert report["threads_alive"] == 0, report
    assert report["parent_connections_opened"] == THREADS, report  # every one reused throughout
    assert report["parent_stale_retries"] == 0, report
    check_connections(storm_server, report)
    assert child.stderr == ""
    assert child.returncode == 0
