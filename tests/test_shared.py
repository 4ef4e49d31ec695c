"""Shared mode under bursty fan-out: sized to every executor, no pool-full discards, no churn."""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack

import pytest
from helpers import serving, wait_until

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
