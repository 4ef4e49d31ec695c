"""Beyond one process: each process x thread has its own session; no child touches the parent's.

Each start method that multiprocessing offers here (fork, forkserver, spawn), through
``multiprocessing.Process`` and through ``concurrent.futures.ProcessPoolExecutor``, against the
CountingServer, whose counts are taken server-side. Worker functions live in ``process_workers``:
spawn and forkserver children import them by name.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import process_workers
import pytest
from helpers import run_child, wait_until
from process_workers import POOL

PROCESSES = 2
THREADS = 3
TIMEOUT = 20.0  # every join, get and barrier wait; a healthy run needs well under a second each

# 3.12+ warns that fork() in a process with threads may deadlock: these tests fork on purpose
# (pytest's process runs the CountingServer's threads), and the children only use what they make.
FORK_WARNING = "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
METHODS = [
    pytest.param(
        method, marks=[pytest.mark.filterwarnings(FORK_WARNING)] if method == "fork" else []
    )
    for method in ("fork", "forkserver", "spawn")
    if method in multiprocessing.get_all_start_methods()
]


@pytest.fixture
def ctx(request, monkeypatch):
    """A multiprocessing context for the start method; a forkserver it started is stopped after."""
    tests = str(Path(__file__).resolve().parent)
    # spawn and forkserver children get the parent's sys.path, but set PYTHONPATH as well, so a
    # forkserver started here (a fresh interpreter) can import process_workers too.
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    )
    method = request.param
    yield multiprocessing.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        # Private, but the only way to stop it (CPython's own tests use it; 3.9 to 3.13).
        forkserver._forkserver._stop()


@pytest.fixture
def parent(server):
    """The test process's own session, warm with one connection before any child starts."""
    session = process_workers.fetch(server.url)
    assert server.accepted == 1
    try:
        yield session
    finally:
        POOL.close_all()


def assert_parent_untouched(server, parent_session, opened_before: int) -> None:
    """The parent reuses its warm connection: no new one server-side, none in its stats."""
    accepted = server.accepted
    assert process_workers.fetch(server.url) is parent_session
    assert server.accepted == accepted, "the parent's connection did not survive its children"
    assert POOL.stats().connections_opened == opened_before


def check_reports(reports: list[dict]) -> set[tuple[int, int, int]]:
    """Each child: no error, no warning, its threads ended, their sessions all closed."""
    triples = set()
    for report in reports:
        assert report["errors"] == [], report
        assert report["warnings"] == [], report
        assert report["alive"] == 0, report
        stats = report["stats"]
        # counted from zero in the child (a fork child forgets the parent's counts); one session
        # and one connection per thread, each session closed as its thread ended
        assert stats["sessions_created"] == THREADS, report
        assert stats["sessions_closed"] == THREADS, report
        assert stats["sessions_open"] == 0, report
        assert stats["connections_opened"] == THREADS, report
        triples.update(map(tuple, report["triples"]))
    return triples


@pytest.mark.parametrize("ctx", METHODS, indirect=True)
@pytest.mark.parametrize("runner", ["Process", "ProcessPoolExecutor"])
def test_every_process_and_thread_gets_its_own_session(server, parent, ctx, runner):
    opened_before = POOL.stats().connections_opened
    lined_up = ctx.Barrier(PROCESSES * THREADS)  # all six sessions alive at once, across processes
    release = ctx.Event()
    together = {}

    def count_while_lined_up() -> None:
        # The children hold their connections until released: count them server-side.
        together["accepted"] = wait_until(
            lambda: server.accepted == 1 + PROCESSES * THREADS, timeout=TIMEOUT
        )
        together["open"] = wait_until(lambda: server.open == 1 + PROCESSES * THREADS, timeout=2)
        together["figures"] = (server.accepted, server.open)
        release.set()

    if runner == "Process":
        out = ctx.Queue()
        args = (server.url, THREADS, lined_up, release, TIMEOUT, out)
        children = [
            ctx.Process(target=process_workers.process_main, args=args) for _ in range(PROCESSES)
        ]
        for child in children:
            child.start()
        try:
            count_while_lined_up()
            reports = [out.get(timeout=TIMEOUT) for _ in children]
        finally:
            release.set()
            for child in children:
                child.join(TIMEOUT)
                if child.is_alive():
                    child.kill()
                    child.join(TIMEOUT)
        assert [child.exitcode for child in children] == [0] * PROCESSES
    else:
        with ProcessPoolExecutor(
            PROCESSES,
            mp_context=ctx,
            initializer=process_workers.executor_init,
            initargs=(lined_up, release),
        ) as executor:
            # Each task waits on the barrier, so a busy worker cannot take a second one.
            futures = [
                executor.submit(process_workers.executor_task, server.url, THREADS, TIMEOUT)
                for _ in range(PROCESSES)
            ]
            try:
                count_while_lined_up()
                reports = [future.result(timeout=TIMEOUT) for future in futures]
            finally:
                release.set()

    assert together["accepted"], together["figures"]
    assert together["open"], together["figures"]
    triples = check_reports(reports)
    assert len(triples) == PROCESSES * THREADS, triples
    assert len({pid for pid, _, _ in triples}) == PROCESSES
    assert os.getpid() not in {pid for pid, _, _ in triples}
    # Every child's connection closed with its thread (and its process): the parent's remains.
    assert wait_until(lambda: server.open == 1), f"{server.open} open after the children ended"
    assert server.accepted == 1 + PROCESSES * THREADS
    assert_parent_untouched(server, parent, opened_before)


@pytest.mark.parametrize("ctx", METHODS, indirect=True)
@pytest.mark.parametrize("recipe", [False, True], ids=["plain", "close_all_at_worker_exit"])
def test_pool_worker_reuses_its_main_thread_session_until_it_exits(server, parent, ctx, recipe):
    """ProcessPoolExecutor runs tasks in each worker's main thread: one session per worker.

    Its session lives as long as the worker, across tasks. When the worker process ends, its
    socket is closed: by threadsession's ``atexit`` handler where the child runs it (spawn; and
    on 3.13, forkserver), else by the OS as the process ends (a fork child never runs the
    handlers its parent registered: before 3.13 it ends with ``os._exit``, on 3.13 it clears
    them first). With the recipe, ``close_all()`` runs from a multiprocessing exit finalizer in
    every case, and then reports ``sessions_open == 0``.
    """
    opened_before = POOL.stats().connections_opened
    lined_up = ctx.Barrier(PROCESSES)  # each worker takes one task per round
    exits = ctx.Queue() if recipe else None
    rounds = []
    with ProcessPoolExecutor(
        PROCESSES,
        mp_context=ctx,
        initializer=process_workers.executor_init,
        initargs=(lined_up, ctx.Event(), exits),
    ) as executor:
        for _ in range(3):
            futures = [
                executor.submit(process_workers.main_thread_task, server.url, TIMEOUT)
                for _ in range(PROCESSES)
            ]
            rounds.append([future.result(timeout=TIMEOUT) for future in futures])
        open_while_alive = server.open
    sessions = {(r["pid"], r["thread"], r["session"]) for results in rounds for r in results}
    assert len(sessions) == PROCESSES, sessions  # the same session in every round
    assert all(r["stats"]["connections_opened"] == 1 for r in rounds[-1])
    assert server.accepted == 1 + PROCESSES
    assert open_while_alive == 1 + PROCESSES
    if recipe:
        exit_reports = [exits.get(timeout=TIMEOUT) for _ in range(PROCESSES)]
        assert {r["pid"] for r in exit_reports} == {pid for pid, _, _ in sessions}
        # Whether atexit closed it first depends on the method and the Python version (3.13 runs
        # the atexit handlers a fork or forkserver child registered itself, not the parent's).
        assert all(r["before"]["sessions_created"] == 1 for r in exit_reports), exit_reports
        assert all(r["after"]["sessions_open"] == 0 for r in exit_reports), exit_reports
    assert wait_until(lambda: server.open == 1), f"{server.open} open after the workers exited"
    assert_parent_untouched(server, parent, opened_before)


# A fork while four other threads of the parent wait for their `?delay=300` replies. The script
# runs its own CountingServer, so it can see the requests in flight before it forks.
FORK_MID_REQUEST = """
    import os, sys, threading, warnings
    # 3.12+ warns that fork() in a threaded process may deadlock; forking mid-request is the test.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    from helpers import CountingServer, wait_until
    from threadsession import ThreadLocalSessionPool

    mode = sys.argv[1]  # "exit": the child ends first; "linger": it lives on meanwhile
    server = CountingServer().start()
    url = server.url
    pool = ThreadLocalSessionPool(timeout=10)
    replies, reused, sessions = [], [], {}
    again = threading.Event()

    def work():
        session = pool.session()
        session.get(url).raise_for_status()  # warm: this thread's connection
        replies.append(session.get(url + "/?delay=300").text)  # in flight at the fork
        again.wait(10)
        reused.append(session.get(url).text)  # the same connection, after the fork

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: server.requests == 8, 10)  # 4 warm-ups and 4 slow ones received
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        server.socket.close()  # the child's copy of the listener: the test server's, not ours
        assert pool.stats().sessions_created == 0  # the child counts from zero
        session = pool.session()
        assert session.get(url).text == "ok"
        stats = pool.stats()
        assert stats.connections_opened == 1 and stats.sessions_open == 1, stats
        pool.close()
        assert pool.stats().sessions_open == 0
        if mode == "linger":
            os.read(go_r, 1)  # live on until the parent has closed its connections
        sys.exit(0)  # a normal exit: atexit, finalization, any ResourceWarning reaches stderr
    os.close(go_r)
    in_flight = 4 - len(replies)
    child_done = False
    try:
        assert wait_until(lambda: server.accepted == 5, 10), server.accepted  # the child's own
        if mode == "exit":
            _, status = os.waitpid(pid, 0)
            child_done = True
            assert os.waitstatus_to_exitcode(status) == 0, status
        again.set()
        for thread in threads:
            thread.join(10)
        assert replies == reused == ["ok"] * 4, (replies, reused)
        stats = pool.stats()
        assert server.accepted == 5, server.accepted  # the 4 parent connections were reused
        assert stats.connections_opened == 4 and stats.sessions_open == 0, stats
        # Every parent thread ended, so its session closed: the server sees each close, unless
        # some process still holds a copy of the socket.
        closed = wait_until(lambda: server.open == 0, 3)
        print(f"in flight at fork: {in_flight}; open after the parent closed: {server.open}")
        assert closed, f"{server.open} parent connections kept open by the living child"
    finally:
        again.set()
        if not child_done:
            os.write(go_w, b"x")
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, status
        server.stop()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_other_threads_are_mid_request():
    """The child: exit 0, nothing on stderr under -X dev -W error, a connection of its own.

    The parent: its four in-flight requests complete, and their connections are reused.
    """
    child = run_child(FORK_MID_REQUEST, "exit")
    assert child.stderr == ""
    assert child.returncode == 0
    assert "in flight at fork: 4; open after the parent closed: 0" in child.stdout, child.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_child_keeps_no_copy_of_connections_in_flight_at_fork():
    """While the child lives, the parent's close of its connections reaches the server."""
    child = run_child(FORK_MID_REQUEST, "linger")
    assert child.stderr == ""
    assert child.returncode == 0
