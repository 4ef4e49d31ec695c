"""Shared mode under bursty fan-out: sized to every executor, no pool-full discards, no churn."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests
from helpers import run_plain_threads, serving, wait_until

from threadsession import ThreadLocalSessionPool

POOL_FULL = "Connection pool is full"
MODES = [pytest.param(False, id="per-thread"), pytest.param(True, id="shared")]


def pool_full_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if POOL_FULL in r.getMessage()]


def bursts(pool, executor, url: str, width: int, rounds: int, delay_ms: int = 50) -> None:
    """Rounds of ``width`` requests sent together (one per worker), held by the server."""
    for _ in range(rounds):
        barrier = threading.Barrier(width)

        def one(_: int, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait(30)
            return pool.get(f"{url}/?delay={delay_ms}").ok

        assert all(executor.map(one, range(width), timeout=60))


@pytest.mark.parametrize("workers", [8, 64, 256])
def test_bursty_fan_out_never_discards(server, caplog, workers):
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadLocalSessionPool(shared=True) as pool, pool.executor(workers) as executor:
        bursts(pool, executor, server.url, workers, rounds=3)
        stats = pool.stats()
        print(
            f"shared W={workers}: {server.accepted} connections, {stats.connections_discarded} "
            f"discards, {len(pool_full_records(caplog))} pool-full records, "
            f"pool_maxsize {stats.pool_maxsize}"
        )
        assert stats.pool_maxsize == max(10, workers)
        assert stats.connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert stats.connections_opened == server.accepted <= workers
        assert server.requests == 3 * workers


def test_growing_keeps_warm_connections_and_never_shrinks(server, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadLocalSessionPool(shared=True) as pool:
        with pool.executor(8) as small:
            bursts(pool, small, server.url, 8, rounds=2)
        assert server.accepted == 8
        assert pool.stats().pool_maxsize == 10
        with pool.executor(64) as big:
            assert pool.stats().pool_maxsize == 64
            assert server.open == 8  # growing dropped no idle connection
            assert server.closed == 0
            bursts(pool, big, server.url, 64, rounds=3)
        with pool.executor(4):
            pass
        stats = pool.stats()
        assert stats.pool_maxsize == 64
        assert stats.connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert server.accepted <= 64  # the 8 warm connections were reused, not replaced
        assert server.closed == 0


def test_growing_while_requests_are_in_flight_discards_nothing(server, caplog):
    """A bigger executor attached mid-burst: connections handed back fit the grown pool.

    The size in force is the largest executor's worker count (not the sum): 10 requests in flight
    on the first executor plus 40 on a 64-worker one stay within 64.
    """
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadLocalSessionPool(shared=True) as pool, pool.executor(10) as first:
        futures = [first.submit(pool.get, server.url + "/?delay=300") for _ in range(10)]
        assert wait_until(lambda: server.requests == 10)  # ten connections checked out
        with pool.executor(64) as second:
            more = [second.submit(pool.get, server.url + "/?delay=100") for _ in range(40)]
            assert all(f.result(timeout=30).ok for f in futures + more)
        assert pool.stats().connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert server.accepted <= 50


@pytest.mark.parametrize("shared", MODES)
def test_more_hosts_than_pool_connections_do_not_churn(shared, caplog):
    """20 hosts, 16 workers, default pool_connections=10: the first round opens, then reuse."""
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    hosts, workers = 20, 16
    with ExitStack() as stack:
        servers = [stack.enter_context(serving()) for _ in range(hosts)]
        pool = stack.enter_context(ThreadLocalSessionPool(shared=shared))
        executor = stack.enter_context(pool.executor(workers))
        urls = [s.url for s in servers]

        def round_trip() -> None:
            # Each host in turn gets 16 requests at once, one from every worker.
            for url in urls:
                bursts(pool, executor, url, workers, rounds=1)

        round_trip()
        first = [s.accepted for s in servers]
        print(f"{hosts} hosts, {workers} workers, shared={shared}: first round {first}")
        assert all(0 < n <= workers for n in first), first
        for _ in range(2):
            round_trip()
        print(f"  after 2 more rounds: {[s.accepted for s in servers]}")
        assert [s.accepted for s in servers] == first  # no host pool evicted, no reopen
        assert all(s.closed == 0 for s in servers)
        stats = pool.stats()
        assert stats.connections_opened == sum(first)
        assert stats.connections_discarded == 0
        assert pool_full_records(caplog) == []


def test_a_host_first_seen_after_growing_gets_the_grown_size(server, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    with ThreadLocalSessionPool(shared=True) as pool, serving() as other:
        assert pool.get(other.url).ok  # the session and its adapters exist at size 10
        with pool.executor(32) as executor:
            bursts(pool, executor, server.url, 32, rounds=2)  # a host new to the session
        assert pool.stats().connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert server.accepted <= 32


# --- threads the pool never saw: hand-backs grow the host pool instead of discarding -----------

GROWTH = "grew to"


def growth_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("threadsession") and GROWTH in r.msg]


def plain_thread_bursts(pool, url: str, width: int, rounds: int, delay_ms: int = 50) -> None:
    """``width`` plain threads; each round they send a request each at once, held by the server."""
    barrier = threading.Barrier(width)

    def work() -> None:
        for _ in range(rounds):
            barrier.wait(60)
            pool.get(f"{url}/?delay={delay_ms}").raise_for_status()

    run_plain_threads(width, work, barrier)


def executor_bursts(pool, url: str, width: int, rounds: int) -> None:
    """A ThreadPoolExecutor the pool was never told about (a framework's, a library's)."""
    with ThreadPoolExecutor(width) as executor:
        bursts(pool, executor, url, width, rounds)


def two_executor_bursts(pool, url: str, width: int, rounds: int) -> None:
    """Two executors made by the pool, each of width/2, sending through it at the same time.

    The sizing rule counts the largest executor, not the sum: width/2 slots for width in flight.
    """
    half = width // 2
    with pool.executor(half) as first, pool.executor(width - half) as second:
        for _ in range(rounds):
            barrier = threading.Barrier(width)

            def one(_: int, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait(60)
                return pool.get(f"{url}/?delay=50").ok

            a = first.map(one, range(half), timeout=120)
            b = second.map(one, range(width - half), timeout=120)
            assert all(a)
            assert all(b)


FEEDERS = {
    "plain-threads": plain_thread_bursts,
    "foreign-executor": executor_bursts,
    "two-executors": two_executor_bursts,
}


@pytest.mark.timeout(300)  # W=256 plain threads on a loaded 2-core box
@pytest.mark.parametrize("workers", [8, 64, 256])
@pytest.mark.parametrize("feeder", list(FEEDERS))
def test_threads_the_pool_never_saw_never_discard(server, caplog, feeder, workers):
    caplog.set_level(logging.DEBUG, logger="urllib3")
    caplog.set_level(logging.DEBUG, logger="threadsession")
    rounds = 3
    with ThreadLocalSessionPool(shared=True) as pool:
        FEEDERS[feeder](pool, server.url, workers, rounds)
        stats = pool.stats()
        print(
            f"\nshared, {feeder}, W={workers}: {stats.connections_discarded} discards, "
            f"{len(pool_full_records(caplog))} pool-full records, {server.accepted} connections "
            f"for {server.requests} requests, pool_maxsize {stats.pool_maxsize}, "
            f"{stats.pool_growths} growths"
        )
        assert stats.connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert server.requests == rounds * workers
        # Every request of the later bursts went out on a connection of the first: none was
        # closed, and no more were opened than requests were ever in flight at once.
        assert stats.connections_opened == server.accepted <= workers
        assert server.closed == 0
        # The host pool grew to hold every connection opened, one counted DEBUG line each.
        assert stats.pool_maxsize >= server.accepted
        assert len(growth_records(caplog)) == stats.pool_growths


def test_many_hosts_fed_by_plain_threads_do_not_churn(caplog):
    """20 hosts (> pool_connections), 16 plain threads at a pool sized 10: grow once, then reuse."""
    caplog.set_level(logging.DEBUG, logger="urllib3")
    hosts, width, rounds = 20, 16, 3
    with ExitStack() as stack:
        servers = [stack.enter_context(serving()) for _ in range(hosts)]
        pool = stack.enter_context(ThreadLocalSessionPool(shared=True))
        after_first: list[int] = []
        barrier = threading.Barrier(width)

        def work() -> None:
            for round_ in range(rounds):
                for server in servers:  # each host in turn gets 16 requests at once
                    barrier.wait(60)
                    pool.get(f"{server.url}/?delay=20").raise_for_status()
                if barrier.wait(60) == 0 and round_ == 0:
                    after_first.extend(s.accepted for s in servers)

        run_plain_threads(width, work, barrier)
        final = [s.accepted for s in servers]
        stats = pool.stats()
        print(f"\n{hosts} hosts, {width} plain threads: first round {after_first}, after {final}")
        assert all(0 < n <= width for n in after_first), after_first
        # A host may open one more connection in a later round (on a loaded machine a thread can
        # finish before the last of the 16 arrives, so round 1 needed fewer), but never beyond
        # the 16 threads, and no host pool is evicted: no connection is closed or reopened.
        assert all(a <= n <= width for a, n in zip(after_first, final)), (after_first, final)
        assert [s.closed for s in servers] == [0] * hosts
        assert stats.connections_discarded == 0
        assert stats.connections_opened == sum(final)
        assert pool_full_records(caplog) == []


def test_pool_block_keeps_pool_maxsize_a_hard_cap(server, caplog):
    """pool_block=True, pool_maxsize=4, 32 plain threads: 4 connections, every request served."""
    caplog.set_level(logging.DEBUG, logger="urllib3")
    width, per_thread, pool_timeout = 32, 3, 30.0
    waits: list[float] = []
    outcomes: list[int | str] = []  # each request's status, or the exception it raised
    lock = threading.Lock()
    with ThreadLocalSessionPool(
        shared=True, pool_block=True, pool_maxsize=4, pool_timeout=pool_timeout
    ) as pool:
        assert pool.stats().pool_maxsize == 4  # no floor of 10 under a hard cap
        barrier = threading.Barrier(width)

        def work() -> None:
            barrier.wait(60)
            for _ in range(per_thread):
                started = time.monotonic()
                try:
                    outcome: int | str = pool.get(f"{server.url}/?delay=20").status_code
                except requests.RequestException as exc:  # a pool_timeout wait ran out, ...
                    outcome = repr(exc)
                with lock:
                    waits.append(time.monotonic() - started)
                    outcomes.append(outcome)

        run_plain_threads(width, work, barrier)
        stats = pool.stats()
        print(
            f"\npool_block, pool_maxsize=4, {width} plain threads: {server.accepted} connections, "
            f"{len(waits)} requests done, longest {max(waits):.2f} s, "
            f"pool_maxsize {stats.pool_maxsize}"
        )
        # Every request answered, none failed (one that waited past pool_timeout would have):
        assert outcomes == [200] * (width * per_thread), [o for o in outcomes if o != 200]
        assert len(waits) == server.requests == width * per_thread
        assert max(waits) < pool_timeout
        # ... over exactly the 4 connections the cap allows, all of them counted.
        assert stats.connections_opened == server.accepted == 4
        assert stats.pool_maxsize == 4
        assert stats.pool_growths == stats.connections_discarded == 0
        assert pool_full_records(caplog) == []
        with pool.executor(16):  # executors do not raise a hard cap either
            assert pool.stats().pool_maxsize == 4


def test_close_all_racing_growth_leaves_nothing_open(server, caplog):
    """64 plain threads hand back to a pool of 10 (growing it) while close_all() runs and runs."""
    caplog.set_level(logging.DEBUG, logger="urllib3")
    width, per_thread = 64, 4
    failures: list[BaseException] = []
    with ThreadLocalSessionPool(shared=True) as pool:
        barrier = threading.Barrier(width)

        def work() -> None:
            barrier.wait(60)
            for _ in range(per_thread):
                try:
                    pool.get(f"{server.url}/?delay=30").raise_for_status()
                except requests.RequestException as exc:  # allowed for a closed session
                    failures.append(exc)

        threads = [threading.Thread(target=work) for _ in range(width)]
        for thread in threads:
            thread.start()
        closes, seen = 0, 0
        deadline = time.monotonic() + 120
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            growths = pool.stats().pool_growths
            if growths > seen:  # a host pool is growing as connections come back: close now
                seen = growths
                pool.close_all()
                closes += 1
            time.sleep(0.001)  # polling, not synchronisation
        for thread in threads:
            thread.join(10)
        assert not [t for t in threads if t.is_alive()]
        stats = pool.stats()
        pool.close_all()
        print(
            f"\nclose_all racing growth: {closes} close_all() calls, {stats.sessions_created} "
            f"sessions, {stats.pool_growths} growths, {len(failures)} failed requests, "
            f"{server.accepted} connections"
        )
        assert closes > 0
        assert stats.pool_growths > 0
        assert stats.connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert wait_until(lambda: server.open == 0, 10), f"{server.open} connections left open"
        assert pool.stats().sessions_open == 0


def test_per_thread_session_holding_many_streams_grows_its_pool(server, caplog):
    """One thread holds 15 streamed responses to one host, past pool_maxsize 10: none discarded."""
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with ThreadLocalSessionPool() as pool:
        for _ in range(3):
            responses = [pool.get(server.url, stream=True) for _ in range(15)]
            assert server.open == 15
            for response in responses:
                assert response.raw.read() == b"ok"
                response.close()  # released to the pool
        stats = pool.stats()
        assert stats.connections_discarded == 0
        assert pool_full_records(caplog) == []
        assert stats.connections_opened == server.accepted == 15
        assert server.closed == 0
        assert stats.pool_growths == 5
        assert stats.pool_maxsize == 15
