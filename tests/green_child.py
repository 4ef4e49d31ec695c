"""A child interpreter that monkey-patches first, then fans GETs out over greenlets through a pool.

``python green_child.py LIBRARY MODE URL`` with LIBRARY ``gevent`` or ``eventlet`` and MODE
``per-thread``, ``shared`` or ``capped`` (shared, ``pool_block=True, pool_maxsize=4``): 200
greenlets x 5 GETs. It prints one JSON line once every greenlet
has ended (and, per-thread, once their sessions closed), waits for a line on stdin (the parent
checks the server's counts meanwhile), closes the pool and prints a second JSON line.
"""

from __future__ import annotations

import sys

LIBRARY, MODE, URL = sys.argv[1:4]
if LIBRARY == "eventlet":
    import warnings

    # eventlet warns on import that it is in bugfix-only mode; the child runs with -W error.
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import eventlet

    eventlet.monkey_patch()
else:
    from gevent import monkey

    monkey.patch_all()

import dataclasses  # noqa: E402  # everything after the patch, as gevent documents
import json  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import threadsession  # noqa: E402

GREENLETS, GETS = 200, 5
LINGER = 1 if LIBRARY == "eventlet" else 0  # sessions left open once every greenlet has ended


def run_greenlets(target: Callable[[], None]) -> None:
    """Run target in GREENLETS greenlets at once; return when every one has ended."""
    if LIBRARY == "eventlet":
        for thread in [eventlet.spawn(target) for _ in range(GREENLETS)]:
            thread.wait()  # bounded: every GET has the pool's 30 s timeout
        return
    import gevent

    done = gevent.joinall([gevent.spawn(target) for _ in range(GREENLETS)], 120, raise_error=True)
    if len(done) != GREENLETS:
        raise TimeoutError(f"{GREENLETS - len(done)} greenlets still running after 120 s")


def report(phase: str, pool: threadsession.ThreadLocalSessionPool, **extra: Any) -> None:
    print(json.dumps({"phase": phase, **dataclasses.asdict(pool.stats()), **extra}), flush=True)


def main() -> None:
    if MODE == "capped":  # greenlets wait in turn (the queue's blocking get) for 4 connections
        options = {"shared": True, "pool_block": True, "pool_maxsize": 4, "pool_timeout": 60.0}
    else:
        options = {"shared": MODE == "shared"}
    pool = threadsession.ThreadLocalSessionPool(**options)
    delay = 1 if MODE == "capped" else 20
    in_flight = peak = ok = 0

    def work() -> None:
        nonlocal in_flight, peak, ok
        for _ in range(GETS):
            in_flight += 1  # greenlets switch only on I/O: no lock needed
            peak = max(peak, in_flight)
            try:
                text = pool.get(f"{URL}/?delay={delay}").text
            finally:
                in_flight -= 1
            ok += text == "ok"  # not `ok += pool.get(...)`: that reads ok before the switch

    run_greenlets(work)
    ended = time.monotonic()
    if MODE == "per-thread":
        # Each greenlet's session closes as the greenlet ends (greenlet-local storage is dropped)
        # but under eventlet, whose local object keeps the storage of the last greenthread that
        # used it until another one does (eventlet.corolocal, 0.41).
        deadline = time.monotonic() + 30
        while pool.stats().sessions_open > LINGER and time.monotonic() < deadline:
            time.sleep(0.01)  # patched: polls cooperatively
    report("greenlets-done", pool, ok=ok, peak=peak, waited=round(time.monotonic() - ended, 2))
    sys.stdin.readline()
    pool.close()
    report("closed", pool)


main()
