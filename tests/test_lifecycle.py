"""Sockets close on thread exit, close_all(), close(), pool collection, atexit and fork."""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

import pytest
import requests
from helpers import run_child, wait_until

from threadsession import ThreadLocalSessionPool, close_all


@contextmanager
def gc_disabled():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def test_joined_worker_socket_is_closed_without_gc(server):
    with gc_disabled(), ThreadLocalSessionPool() as pool:
        worker = threading.Thread(target=lambda: pool.get(server.url).raise_for_status())
        worker.start()
        worker.join(10)
        assert not worker.is_alive()
        # The session was closed as the thread ended, before join() returned.
        assert pool.stats().sessions_open == 0
        assert wait_until(lambda: server.open == 0), f"{server.open} sockets still open"
        assert server.accepted == 1


def test_many_workers_all_sockets_closed_as_they_end(server):
    with gc_disabled(), ThreadLocalSessionPool() as pool:
        with pool.executor(max_workers=16) as executor:
            assert all(
                f.result(timeout=30)
                for f in [executor.submit(lambda: pool.get(server.url).ok) for _ in range(400)]
            )
            assert wait_until(lambda: server.open == pool.stats().sessions_open > 0)
        assert pool.stats().sessions_open == 0
        assert wait_until(lambda: server.open == 0)


def test_close_all_closes_sockets_while_responses_are_held(server):
    with gc_disabled(), ThreadLocalSessionPool() as pool:
        held: list[requests.Response] = []
        barrier = threading.Barrier(5)
        release = threading.Event()

        def work() -> None:
            held.append(pool.get(server.url))
            barrier.wait(10)  # five live sessions, five pooled sockets
            release.wait(10)  # alive until close_all() has closed this thread's session

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        held.append(pool.get(server.url))
        barrier.wait(10)
        assert wait_until(lambda: server.open == 5)
        pool.close_all()
        assert pool.stats().sessions_open == 0
        assert wait_until(lambda: server.open == 0), f"{server.open} sockets open after close_all"
        assert len(held) == 5  # every Response still referenced
        release.set()
        for thread in threads:
            thread.join(10)


def test_close_all_closes_a_shared_session_with_plain_session_close_semantics_fixed(server):
    """requests.Session.close() alone leaves idle sockets to GC on urllib3 2; ours does not."""
    with gc_disabled(), ThreadLocalSessionPool(shared=True) as pool:
        response = pool.get(server.url)
        assert server.open == 1
        pool.close_all()
        assert wait_until(lambda: server.open == 0)
        assert response.text == "ok"


def test_module_close_all_reaches_every_pool(server):
    with ThreadLocalSessionPool() as one, ThreadLocalSessionPool(shared=True) as two:
        one.get(server.url)
        two.get(server.url)
        assert wait_until(lambda: server.open == 2)
        close_all()
        close_all()
        assert wait_until(lambda: server.open == 0)
        assert one.stats().sessions_open == two.stats().sessions_open == 0
        assert one.get(server.url).ok  # pools stay usable


def test_session_closed_between_session_and_request_keeps_no_socket(server):
    with gc_disabled(), ThreadLocalSessionPool() as pool:
        session = pool.session()
        pool.close_all()
        # The thread still holds the closed session and uses it: the request completes, and its
        # connection is closed once the response is done, never pooled.
        assert session.get(server.url).text == "ok"
        assert wait_until(lambda: server.open == 0)
        assert pool.session() is not session
        assert pool.stats().sessions_open == 1


def test_session_closed_mid_request_keeps_no_socket(server):
    with gc_disabled(), ThreadLocalSessionPool(shared=True) as pool:
        results: list[object] = []

        def slow() -> None:
            try:
                results.append(pool.get(server.url + "/?delay=300").text)
            except requests.RequestException as exc:  # allowed by the contract
                results.append(exc)

        worker = threading.Thread(target=slow)
        worker.start()
        assert wait_until(lambda: server.requests == 1)  # the request is in flight
        pool.close_all()
        worker.join(10)
        assert results in (["ok"],) or isinstance(results[0], requests.RequestException)
        assert wait_until(lambda: server.open == 0), "a hand-back after close was pooled"
        assert pool.stats().sessions_open == 0


def test_close_races_with_many_requests_and_leaves_nothing_open(server):
    """close_all() from another thread, many times, while 8 threads keep requesting."""
    with ThreadLocalSessionPool() as pool:
        stop = threading.Event()
        failures: list[BaseException] = []

        def work() -> None:
            for _ in range(300):
                if stop.is_set():
                    return
                try:
                    pool.get(server.url).raise_for_status()
                except requests.ConnectionError as exc:  # a close may cut a request short
                    failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for _ in range(20):
            pool.close_all()
            wait_until(lambda: server.requests > 0, 1)
        for thread in threads:
            thread.join(30)
        stop.set()
        assert not any(t.is_alive() for t in threads)
    stats = pool.stats()
    assert stats.sessions_open == 0
    assert stats.sessions_created == stats.sessions_closed
    assert wait_until(lambda: server.open == 0), f"{server.open} sockets outlived their sessions"


def test_dropping_the_pool_closes_its_sessions(server):
    with gc_disabled():
        pool = ThreadLocalSessionPool()
        pool.get(server.url)
        shared = ThreadLocalSessionPool(shared=True)
        shared.get(server.url)
        assert server.open == 2
        del pool, shared
        assert wait_until(lambda: server.open == 0)


def test_atexit_closes_sessions_still_open(server):
    code = """
        import atexit, sys, threading
        # Registered before the import: runs after threadsession's own handler (LIFO).
        atexit.register(lambda: print("stats", POOLS[0].stats(), POOLS[1].stats()))
        from threadsession import ThreadLocalSessionPool
        url = sys.argv[1]
        POOLS = [ThreadLocalSessionPool(), ThreadLocalSessionPool(shared=True)]
        POOLS[0].get(url)
        POOLS[1].get(url)
        daemon = threading.Thread(target=lambda: POOLS[0].get(url), daemon=True)
        daemon.start()
        daemon.join(10)
        held = POOLS[0].get(url)  # a Response still referenced at exit
    """
    child = run_child(code, server.url)
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""
    assert child.stdout.count("sessions_open=0") == 2, child.stdout
    assert wait_until(lambda: server.open == 0)
    assert server.accepted == 3


FORK_CHILD = """
    import os, sys, threading, warnings
    from concurrent.futures import ThreadPoolExecutor
    # 3.12+ warns that fork() in a threaded process may deadlock; that is what we test.
    warnings.filterwarnings("ignore", "This process", DeprecationWarning)
    from threadsession import ThreadLocalSessionPool
    url = sys.argv[1]
    per_thread, shared = ThreadLocalSessionPool(), ThreadLocalSessionPool(shared=True)
    parent_session = per_thread.session()
    per_thread.get(url), shared.get(url)
    executor = ThreadPoolExecutor(2)  # idle workers holding sessions across the fork
    both = threading.Barrier(2)  # make both workers take a task
    list(executor.map(lambda _: (both.wait(10), per_thread.get(url).ok), range(2)))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            s = per_thread.session()
            assert s is not parent_session
            assert per_thread.stats().sessions_created == 1  # the child counts from zero
            assert s.get(url).text == "ok"
            assert shared.get(url).text == "ok"
            assert per_thread.stats().connections_opened == 1
            assert shared.stats().connections_opened == 1
            per_thread.close(), shared.close()
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    # The parent's connections were untouched: still reused, nothing new opened.
    assert per_thread.session() is parent_session
    assert per_thread.get(url).ok and shared.get(url).ok
    print("parent opened", per_thread.stats().connections_opened, shared.stats().connections_opened)
    executor.shutdown()
    per_thread.close(), shared.close()
"""


FORK_MID_PROXY_BUILD = """
    import os, signal, sys, threading, warnings
    import requests
    warnings.filterwarnings("ignore", "This process", DeprecationWarning)  # 3.12+: fork + threads
    from threadsession import ThreadLocalSessionPool
    url = sys.argv[1]
    inside, release = threading.Event(), threading.Event()
    original = requests.adapters.proxy_from_url

    def held_build(*args, **kwargs):
        if threading.current_thread().name == "builder":
            inside.set()
            release.wait(30)
        return original(*args, **kwargs)

    requests.adapters.proxy_from_url = held_build
    pool = ThreadLocalSessionPool()
    get = lambda: pool.get("http://example.invalid/a", proxies={"http": url}).text
    builder = threading.Thread(target=get, name="builder")
    builder.start()
    assert inside.wait(30)  # the builder is inside requests' proxy_manager_for now
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)  # a child stuck on the parent's lock dies instead of hanging the test
        code = 1
        try:
            assert get() == "ok"  # a new proxy manager, in the child's own session
            pool.close()
            code = 0
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    release.set()
    builder.join(30)
    pool.close()
    print("child", os.waitstatus_to_exitcode(status))
"""


def _run_fork_script(code: str, server, printed: str) -> None:
    """Run a fork script against ``server``: it must pass, warn nothing, print ``printed``."""
    child = run_child(code, server.url)
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""
    assert printed in child.stdout, child.stdout


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_fork_while_a_thread_builds_a_proxy_manager(server):
    """The test server answers as an HTTP proxy for a plain-HTTP URL (no traffic leaves)."""
    _run_fork_script(FORK_MID_PROXY_BUILD, server, "child 0")
    assert wait_until(lambda: server.open == 0)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_fork_child_never_uses_parent_connections(server):
    _run_fork_script(FORK_CHILD, server, "parent opened 3 1")
    # parent: 3 per-thread + 1 shared; child: 1 per-thread + 1 shared
    assert server.accepted == 6
    assert wait_until(lambda: server.open == 0)
