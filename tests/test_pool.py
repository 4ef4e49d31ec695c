"""Per-thread and shared sessions, reuse, and stats, counted against a real server."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers import wait_until

from threadsession import PoolClosedError, PoolStats, ThreadLocalSessionPool

POOL_FULL = "Connection pool is full"


def run_threads(count: int, target, timeout: float = 30.0) -> None:
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "worker did not finish in time"
    assert not errors, errors


def test_racing_threads_get_distinct_sessions(server):
    threads = 64
    barrier = threading.Barrier(threads)
    seen: list[requests.Session] = []
    lock = threading.Lock()
    with ThreadLocalSessionPool() as pool:

        def first_use() -> None:
            barrier.wait(timeout=10)
            session = pool.session()
            assert pool.session() is session
            session.get(server.url).raise_for_status()
            with lock:
                seen.append(session)
            barrier.wait(timeout=10)  # hold every session alive until all were made

        run_threads(threads, first_use)
        assert len({id(s) for s in seen}) == threads
        assert server.accepted == threads
        stats = pool.stats()
        assert stats.sessions_created == threads
        assert stats.connections_opened == threads


def test_workers_reuse_one_connection_each(server):
    workers, per_worker = 8, 250
    with ThreadLocalSessionPool() as pool:

        def work() -> None:
            for _ in range(per_worker):
                assert pool.get(server.url).content == b"ok"

        run_threads(workers, work)
        assert server.requests == workers * per_worker
        assert server.accepted == workers
        stats = pool.stats()
        assert stats.connections_opened == workers
        assert stats.connections_discarded == 0
        assert stats.pool_maxsize == 10


def test_session_is_per_thread_and_stable():
    with ThreadLocalSessionPool() as pool:
        main = pool.session()
        assert pool.session() is main
        other: list[requests.Session] = []
        run_threads(1, lambda: other.append(pool.session()))
        assert other[0] is not main
        assert isinstance(main, requests.Session)


def test_request_verbs_go_through_the_threads_session(server):
    with ThreadLocalSessionPool() as pool:
        assert pool.get(server.url).text == "ok"
        assert pool.post(server.url, data=b"x").status_code == 200
        assert pool.put(server.url, data=b"x").status_code == 200
        assert pool.patch(server.url, data=b"x").status_code == 200
        assert pool.delete(server.url).status_code == 200
        assert pool.head(server.url).status_code == 200
        assert pool.options(server.url).status_code == 200
        assert pool.request("GET", server.url + "/?status=500").status_code == 500
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "GET"]
        assert server.methods == methods
        assert server.accepted == 1


def test_stats_is_a_frozen_snapshot():
    with ThreadLocalSessionPool() as pool:
        stats = pool.stats()
        assert isinstance(stats, PoolStats)
        with pytest.raises(AttributeError):
            stats.sessions_created = 5  # type: ignore[misc]
        pool.session()
        assert stats.sessions_created == 0
        assert pool.stats().sessions_created == 1
        assert pool.stats().sessions_open == 1


@pytest.mark.parametrize(("given", "in_force"), [(None, 10), (4, 10), (10, 10), (25, 25)])
def test_per_thread_pool_maxsize_in_force(given, in_force):
    with ThreadLocalSessionPool(pool_maxsize=given, max_workers=50) as pool:
        assert pool.stats().pool_maxsize == in_force


def test_close_all_keeps_the_pool_usable(server):
    with ThreadLocalSessionPool() as pool:
        first = pool.session()
        first.get(server.url)
        pool.close_all()
        pool.close_all()  # idempotent
        assert wait_until(lambda: server.open == 0)
        second = pool.session()
        assert second is not first
        assert second.get(server.url).text == "ok"
        stats = pool.stats()
        assert (stats.sessions_created, stats.sessions_closed, stats.sessions_open) == (2, 1, 1)


def test_close_retires_the_pool_in_every_thread(server):
    pool = ThreadLocalSessionPool()
    pool.get(server.url)
    ready, closed = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def worker() -> None:
        pool.session()
        ready.set()
        closed.wait(10)
        try:
            pool.session()
        except PoolClosedError as exc:
            raised.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    assert ready.wait(10)
    pool.close()
    closed.set()
    thread.join(10)
    assert len(raised) == 1
    for use in (
        pool.session,
        lambda: pool.get(server.url),
        pool.executor,
        lambda: pool.attach(ThreadPoolExecutor(1)),
    ):
        with pytest.raises(PoolClosedError, match="closed"):
            use()
    pool.close()  # idempotent
    pool.close_all()  # a no-op on a closed pool
    stats = pool.stats()
    assert stats.sessions_open == 0
    assert stats.sessions_created == stats.sessions_closed == 2
    assert isinstance(PoolClosedError("x"), RuntimeError)


def test_context_manager_closes(server):
    with ThreadLocalSessionPool() as pool:
        pool.get(server.url)
        assert server.open == 1
    assert wait_until(lambda: server.open == 0)
    with pytest.raises(PoolClosedError):
        pool.session()


def test_executor_per_thread_closes_worker_sessions_at_shutdown(server):
    with ThreadLocalSessionPool() as pool:
        with pool.executor(max_workers=4) as executor:
            futures = [executor.submit(lambda: pool.get(server.url).text) for _ in range(200)]
            assert [f.result(timeout=30) for f in futures] == ["ok"] * 200
        stats = pool.stats()
        assert stats.sessions_open == 0
        assert stats.sessions_closed == stats.sessions_created <= 4
        assert stats.connections_opened == server.accepted == stats.sessions_created
        assert wait_until(lambda: server.open == 0)


def test_shared_mode_one_session_grown_to_the_executor(server, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    workers = 20
    with ThreadLocalSessionPool(shared=True) as pool:
        sessions: set[int] = set()
        barrier = threading.Barrier(workers)

        def burst(_: int) -> str:
            sessions.add(id(pool.session()))
            barrier.wait(timeout=10)  # all 20 requests in flight at once
            return pool.get(server.url + "/?delay=30").text

        with pool.executor(max_workers=workers) as executor:
            for _ in range(3):
                assert list(executor.map(burst, range(workers))) == ["ok"] * workers
        assert len(sessions) == 1
        stats = pool.stats()
        assert stats.pool_maxsize == workers
        assert stats.connections_discarded == 0
        assert stats.connections_opened == server.accepted <= workers
        assert not [r for r in caplog.records if POOL_FULL in r.getMessage()]


def test_shared_pool_grows_instead_of_discarding_and_counts_each_growth(server, caplog):
    """A shared pool left at 10 under 20 concurrent requests grows; each growth counted, once."""
    caplog.set_level(logging.DEBUG, logger="threadsession")
    caplog.set_level(logging.DEBUG, logger="urllib3")  # each call sets caplog's handler level too
    workers = 20
    with ThreadLocalSessionPool(shared=True) as pool:
        barrier = threading.Barrier(workers)

        def burst() -> None:
            barrier.wait(timeout=10)
            pool.get(server.url + "/?delay=50").raise_for_status()

        run_threads(workers, burst)
        run_threads(workers, burst)
        stats = pool.stats()
        grown = [r for r in caplog.records if "grew to" in r.getMessage()]
        assert not [r for r in caplog.records if POOL_FULL in r.getMessage()]
        assert stats.connections_discarded == 0
        assert stats.connections_opened == server.accepted <= workers
        assert server.closed == 0  # the second burst reused the first burst's connections
        # Every connection opened past the 10 slots was kept, by one slot more each.
        assert stats.pool_growths == len(grown) == server.accepted - 10 > 0
        assert stats.pool_maxsize == server.accepted
        assert all(r.levelno == logging.DEBUG for r in grown)


def hold_streams(pool: ThreadLocalSessionPool, url: str, count: int) -> None:
    """Hold ``count`` streamed responses to one host at once, then release them all."""
    responses = [pool.get(url, stream=True) for _ in range(count)]
    for response in responses:
        assert response.raw.read() == b"ok"
        response.close()  # released to the pool: past 10, the host pool grows


@pytest.mark.parametrize("shared", [False, True], ids=["per-thread", "shared"])
def test_pool_maxsize_is_the_size_in_force_not_a_high_water_mark(server, shared):
    """A grown host pool's size goes with its session: close_all() and thread ends drop it."""
    with ThreadLocalSessionPool(shared=shared) as pool:
        hold_streams(pool, server.url, 13)
        assert pool.stats().pool_maxsize == 13, pool.stats()  # 3 growths past 10
        pool.close_all()  # the grown host pool is closed with its session
        assert pool.stats().pool_maxsize == 10, pool.stats()
        assert pool.get(server.url).text == "ok"  # a new session, at the starting size
        stats = pool.stats()
        assert (stats.pool_maxsize, stats.pool_growths, stats.sessions_open) == (10, 3, 1), stats
        if not shared:  # a thread's end closes its session, and its grown host pool
            worker = threading.Thread(target=hold_streams, args=(pool, server.url, 12))
            worker.start()
            worker.join(30)
            assert not worker.is_alive()
            assert pool.stats().pool_maxsize == 10, pool.stats()
            hold_streams(pool, server.url, 11)  # this thread's session is still open
            assert pool.stats().pool_maxsize == 11, pool.stats()
    assert server.accepted == pool.stats().connections_opened


def test_attach_sizes_shared_pool_and_borrows_the_executor():
    with ThreadLocalSessionPool(shared=True, max_workers=12) as pool:
        assert pool.stats().pool_maxsize == 12
        executor = ThreadPoolExecutor(max_workers=40)
        try:
            assert pool.attach(executor) is executor
            assert pool.stats().pool_maxsize == 40
            pool.attach(ThreadPoolExecutor(max_workers=3))
            assert pool.stats().pool_maxsize == 40  # never shrinks
            assert executor.submit(lambda: 1).result(timeout=10) == 1  # still ours to use
        finally:
            executor.shutdown()
        with pytest.raises(TypeError, match="ThreadPoolExecutor"):
            pool.attach(object())  # type: ignore[arg-type]


def test_executor_without_max_workers_counts_its_real_worker_count():
    with ThreadLocalSessionPool(shared=True) as pool, pool.executor() as executor:
        real = executor._max_workers  # what ThreadPoolExecutor chose for this machine
        assert pool.stats().pool_maxsize == max(10, real)
