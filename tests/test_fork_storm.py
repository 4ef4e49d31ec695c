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

import gc
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
# Each fork loop's own time bound, checked before every fork (the child's run_child timeout is
# larger): a loop past it stops, and its report's fork count, short of the target, fails the test.
STORM_SECONDS = 170.0  # 200 children that all hang: 200 / MAX_LIVE x CHILD_DEADLINE = 125 s
SCENARIO_SECONDS = 40.0
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


@pytest.fixture(params=["http", "https"])
def storm_server(request, tls, monkeypatch) -> Iterator[PidServer]:
    context, path = tls  # conftest's: a server context from a CA of the suite's, and its path
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


# Which process sends: its pid, and in a child the fork's number too (pids wrap around).
_identity: str | None = None


def _me() -> dict[str, str]:
    return {"X-Pid": _identity or str(os.getpid())}


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
            global _identity  # this process's own, from here on
            _identity = f"{os.getpid()}-{self.forks}"
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
        """Collect ended children, kill those past their deadline; block: until < MAX_LIVE live."""
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
    cut_short = False
    try:
        # Forks start once every thread has its connection (no connect or TLS handshake then).
        warm = wait_until(lambda: all(done) or bool(errors), 30)
        loop_deadline = time.monotonic() + STORM_SECONDS
        for _ in range(forks if warm and not errors else 0):
            if time.monotonic() > loop_deadline:
                cut_short = True
                break
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
        "cut_short": cut_short,
        "parent_requests_ok": sum(done),
        "parent_errors": errors,
        "parent_connections_opened": opened,
        "parent_stale_retries": pool.stats().stale_retries + default_pool().stats().stale_retries,
        "threads_alive": sum(thread.is_alive() for thread in threads),
    }
    threadsession.close_all()
    print(REPORT + json.dumps(report), flush=True)


def _report(child: Any) -> dict[str, Any]:
    lines = [line for line in child.stdout.splitlines() if line.startswith(REPORT)]
    assert lines, (child.returncode, child.stdout[-2000:], child.stderr[-4000:])
    report: dict[str, Any] = json.loads(lines[-1][len(REPORT) :])
    return report


# The storm's own bound: 200 forks whose children all hang take 200 / MAX_LIVE x 10 s.
@pytest.mark.timeout(300)
def test_fork_storm_children_never_hang(storm_server):
    """200 forks while 8 threads send and receive: every child exits 0, none hangs, none reuses."""
    url = storm_server.url
    code = f"import test_fork_storm as t; t.storm_main({url!r}, {FORKS}, {FORKS})"
    child = run_child(code, timeout=240)
    report = _report(child)
    print(f"{url.split(':')[0]} storm: {report}")
    assert report["hung"] == 0, report
    assert report["failed"] == 0, (report, child.stderr[-4000:])
    assert not report["cut_short"], report  # the fork loop ran past STORM_SECONDS
    assert report["forks"] == report["exited_ok"] == FORKS, report
    assert report["parent_errors"] == [], report
    assert report["parent_requests_ok"] > 0, report
    assert report["threads_alive"] == 0, report
    assert report["parent_connections_opened"] == THREADS, report  # every one reused throughout
    assert report["parent_stale_retries"] == 0, report
    check_connections(storm_server, report)
    assert child.stderr == ""
    assert child.returncode == 0


# ---- forks while another thread is inside close_all(), a first build, executor shutdown --------

SCENARIO_FORKS = 30


class Parking:
    """Holds one thread at a point inside the library until released (armed once at a time)."""

    def __init__(self) -> None:
        self.armed = False
        self.inside = threading.Event()
        self.release = threading.Event()

    def park(self) -> None:
        if self.armed:
            self.armed = False
            self.inside.set()
            self.release.wait(CHILD_DEADLINE)


def _on_some_stack(name: str) -> bool:
    """Is some thread running the function ``name`` (anywhere down its stack)?"""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == name:
                return True
            frame = frame.f_back
    return False


def scenario_main(url: str, scenario: str, seed: int) -> None:
    """One thread loops the scenario's operation; the main thread forks at random moments.

    First, one fork at a fixed point: with a thread held inside ``close_all()`` (between two
    sessions' closes), inside a shared session's first build (holding the build lock), or inside
    ``executor().shutdown()`` (a worker still busy).
    """
    _ignore_fork_warning()
    rng = random.Random(seed)
    parking = Parking()

    def factory() -> requests.Session:
        if scenario == "first_build":
            parking.park()
        return _ParkingSession(parking if scenario == "close_all" else None)

    pool = ThreadLocalSessionPool(
        shared=scenario == "first_build", session_factory=factory, timeout=30
    )
    stop = threading.Event()
    errors: list[str] = []
    rounds = [0]

    def get() -> str:
        return pool.get(url + "/?size=2&delay=1", headers=_me()).text

    def requester() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                get()
            except requests.RequestException:
                pass  # a session closed under its request may fail it (API.md); go on
            except BaseException as exc:  # noqa: BLE001  # the report carries it; the test fails
                errors.append(repr(exc))
                return

    def operation() -> None:
        if scenario == "shutdown":
            executor = pool.executor(max_workers=4)
            futures = [executor.submit(get) for _ in range(6)]
            futures.append(executor.submit(parking.park))
            executor.shutdown(wait=True)
            for future in futures:
                future.result()
        else:
            pool.close_all()

    def looper() -> None:
        deadline = time.monotonic() + 120
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                operation()
                rounds[0] += 1
                time.sleep(rng.uniform(0, 0.003))  # spreads the operation over random moments
        except BaseException as exc:  # noqa: BLE001  # the report carries it; the test fails
            errors.append(repr(exc))

    threads = [threading.Thread(target=requester, name=f"req-{i}") for i in range(3)]
    for thread in threads:
        thread.start()
    children = Children()
    held = False
    cut_short = False
    try:
        assert wait_until(lambda: pool.stats().connections_opened >= 3, 30)
        # The fixed point: a helper thread (or the looper's first round) is held inside.
        parking.armed = True
        point = {"close_all": "_close_records", "first_build": "_build", "shutdown": "shutdown"}
        if scenario == "first_build":
            pool.close_all()  # the next request builds the shared session again, and parks
        helper = threading.Thread(target=operation if scenario != "first_build" else get)
        helper.start()
        threads.append(helper)
        held = wait_until(parking.inside.is_set, 30) and wait_until(
            lambda: _on_some_stack(point[scenario]), 30
        )
        children.fork(lambda: _child_requests(url, pool))
        parking.release.set()
        loop = threading.Thread(target=looper, name="looper")
        loop.start()
        threads.append(loop)
        loop_deadline = time.monotonic() + SCENARIO_SECONDS
        for _ in range(SCENARIO_FORKS):
            if time.monotonic() > loop_deadline:
                cut_short = True
                break
            time.sleep(rng.uniform(0, 0.01))  # a random moment, not a synchronisation
            children.fork(lambda: _child_requests(url, pool))
            children.reap()
        children.finish()
    finally:
        parking.release.set()
        stop.set()
        for thread in threads:
            thread.join(30)
    report = {
        "scenario": scenario,
        "held_at_fork": held,
        "cut_short": cut_short,
        **children.figures(),
        "rounds": rounds[0],
        "errors": errors,
        "threads_alive": sum(thread.is_alive() for thread in threads),
    }
    pool.close()
    threadsession.close_all()
    print(REPORT + json.dumps(report), flush=True)


class _ParkingSession(requests.Session):
    """A session whose close() can hold the closing thread, after requests' own close."""

    def __init__(self, parking: Parking | None = None) -> None:
        super().__init__()
        self.parking = parking

    def close(self) -> None:
        super().close()
        if self.parking is not None:
            self.parking.park()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("scenario", ["close_all", "first_build", "shutdown"])
def test_fork_while_another_thread_is_inside(server, scenario):
    """Every child exits 0 within its deadline, whatever the other threads were doing."""
    code = f"import test_fork_storm as t; t.scenario_main({server.url!r}, {scenario!r}, 7)"
    child = run_child(code, timeout=120)
    report = _report(child)
    print(report)
    assert report["held_at_fork"], report
    assert report["hung"] == 0, report
    assert report["failed"] == 0, (report, child.stderr[-4000:])
    assert not report["cut_short"], report  # the fork loop ran past SCENARIO_SECONDS
    assert report["exited_ok"] == report["forks"] == SCENARIO_FORKS + 1, report
    assert report["errors"] == [], report
    assert report["rounds"] > 0, report
    assert report["threads_alive"] == 0, report
    assert child.stderr == ""
    assert child.returncode == 0


# ---- what the child's later code meets: no fd of its own closed, no parent reply read ---------


def _threads_on_stack(name: str) -> int:
    count = 0
    for frame in sys._current_frames().values():
        while frame is not None and frame.f_code.co_name != name:
            frame = frame.f_back
        count += frame is not None
    return count


def _errnos(exc: BaseException | None) -> set[int | None]:
    found: set[int | None] = set()
    for _ in range(10):  # requests -> urllib3 -> OSError
        if exc is None:
            break
        if isinstance(exc, OSError):
            found.add(exc.errno)
        exc = exc.__cause__ or exc.__context__
    return found


def reuse_main(url: str) -> None:
    """Fork with a reply half read by this thread, two in flight on others, one idle connection.

    The child first takes the lowest free fd numbers (those its at-fork code just released),
    then reads on the parent's half-read reply (it must fail, not read the child's own files),
    closes everything and collects garbage: each of its own fds must still be open.
    """
    _ignore_fork_warning()
    pool = ThreadLocalSessionPool(timeout=30)
    held = pool.get(url + f"/?size={LARGE}", headers=_me(), stream=True)
    first = held.raw.read(1000)
    assert pool.get(url + "/?size=2", headers=_me()).text == "ok"  # a second, idle connection
    replies: list[str] = []

    def slow() -> None:
        replies.append(pool.get(url + "/?size=2&delay=400", headers=_me()).text)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for thread in threads:
        thread.start()
    in_flight = wait_until(lambda: _threads_on_stack("_read_status") == 2, 10)

    def child() -> bool:
        fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(16)]
        try:
            held.raw.read(LARGE)
        except Exception as exc:  # noqa: BLE001  # any failure will do; a read would be wrong
            failed = _errnos(exc)
        else:
            failed = set()
        held.close()
        threadsession.close_all()
        gc.collect()
        intact = all(os.fstat(fd) is not None for fd in fds)  # raises EBADF if one was closed
        print(f"child: read failed with errnos {failed}, own fds intact: {intact}", flush=True)
        return bool(failed) and intact

    children = Children()
    children.fork(child)
    children.finish()
    for thread in threads:
        thread.join(30)
    rest = held.raw.read(LARGE)  # the parent's reply goes on where it was
    held.close()
    opened = pool.stats().connections_opened
    pool.close()
    report = {
        **children.figures(),
        "in_flight": in_flight,
        "replies": replies,
        "body": len(first) + len(rest),
        "connections_opened": opened,
    }
    print(REPORT + json.dumps(report), flush=True)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_child_cannot_use_or_close_what_it_inherited(tls, monkeypatch, scheme):
    context, path = tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", path)
    with pid_server(context if scheme == "https" else None) as server:
        child = run_child(f"import test_fork_storm as t; t.reuse_main({server.url!r})")
    report = _report(child)
    assert report["exited_ok"] == 1, (report, child.stdout, child.stderr[-4000:])
    assert report["in_flight"], report
    assert report["replies"] == ["ok", "ok"], report
    assert report["body"] == LARGE, report
    assert report["connections_opened"] == 4, report  # held, idle, two in flight: none again
    assert child.stderr == ""
    assert child.returncode == 0
