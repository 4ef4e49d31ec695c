"""Worker functions that child processes import by name (spawn and forkserver pickle by reference).

Each worker reports what it saw as a plain dict, so the test process can check it without
sharing any object with the child.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import warnings
from typing import Any

import requests

import threadsession
from threadsession import ThreadLocalSessionPool, with_session

# One pool per process: a fork child inherits the parent's (and must not use its connections);
# a spawn or forkserver child makes its own when it imports this module.
POOL = ThreadLocalSessionPool(timeout=10)

# Set in each ProcessPoolExecutor worker by its initializer: synchronisation primitives can reach a
# child only as it is made, never as a task argument.
_SYNC: dict[str, Any] = {}


@with_session(POOL)
def fetch(url: str, *, session: requests.Session | None = None) -> requests.Session:
    """GET url through the calling thread's session; return that session."""
    assert session is not None
    session.get(url).raise_for_status()
    return session


def stats_dict(pool: ThreadLocalSessionPool = POOL) -> dict[str, int]:
    return dataclasses.asdict(pool.stats())


def run_threads(url: str, threads: int, lined_up: Any, release: Any, timeout: float) -> dict:
    """Run ``threads`` threads in this process, each with its own session, and report them.

    Every thread makes a request, waits on ``lined_up`` (a barrier over every thread of every
    process, so all their sessions are alive at once), waits for the test to ``release`` it,
    then makes a second request that must reuse its session. Once the threads have ended, the
    report carries the pool's stats: each thread's session must have closed as its thread ended.
    """
    triples: list[tuple[int, int, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        try:
            session = fetch(url)
            with lock:
                triples.append((os.getpid(), threading.get_ident(), id(session)))
            lined_up.wait(timeout)
            if not release.wait(timeout):
                raise TimeoutError("the test never released the workers")
            if fetch(url) is not session:
                raise AssertionError("a thread got a second session")
        except BaseException as exc:  # noqa: BLE001  # reported to the test, which fails on it
            errors.append(repr(exc))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # a ResourceWarning in any thread lands in `caught`
        workers = [threading.Thread(target=work, name=f"worker-{i}") for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout)
        gc.collect()
    return {
        "pid": os.getpid(),
        "triples": triples,
        "errors": errors,
        "alive": sum(worker.is_alive() for worker in workers),
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "stats": stats_dict(),
    }


def process_main(url: str, threads: int, lined_up: Any, release: Any, timeout: float, out: Any):
    """Target of a multiprocessing.Process: run the threads, put the report on ``out``."""
    out.put(run_threads(url, threads, lined_up, release, timeout))


def executor_init(lined_up: Any, release: Any, exits: Any = None) -> None:
    """ProcessPoolExecutor initializer: keep the barrier and event the test made for us.

    With ``exits``, also the recipe for process-pool workers: close every session as the worker
    process ends and put the final stats on ``exits``. Python skips ``atexit`` in a child
    started by fork or forkserver (it ends with ``os._exit``), but runs multiprocessing's own
    exit finalizers in every child.
    """
    _SYNC["lined_up"], _SYNC["release"] = lined_up, release
    if exits is not None:
        from multiprocessing.util import Finalize

        Finalize(None, _close_and_report, args=(exits,), exitpriority=10)


def _close_and_report(exits: Any) -> None:
    before = stats_dict()
    threadsession.close_all()
    exits.put({"pid": os.getpid(), "before": before, "after": stats_dict()})


def executor_task(url: str, threads: int, timeout: float) -> dict:
    """A ProcessPoolExecutor task: run the threads with the worker's barrier and event."""
    return run_threads(url, threads, _SYNC["lined_up"], _SYNC["release"], timeout)


def main_thread_task(url: str, timeout: float) -> dict:
    """A ProcessPoolExecutor task that requests from the worker's own (main) thread.

    The tasks line up on the worker's barrier, so each worker takes exactly one of them.
    """
    session = fetch(url)
    _SYNC["lined_up"].wait(timeout)
    return {
        "pid": os.getpid(),
        "thread": threading.get_ident(),
        "session": id(session),
        "stats": stats_dict(),
    }
