"""Connection lifetime: max_connection_age, keepalive_expiry, retry_stale, pool_timeout."""

from __future__ import annotations

import os
import threading
import time

import pytest
import requests
from helpers import serving, wait_until
from urllib3.util.retry import Retry

from threadsession import ThreadLocalSessionPool, with_session

MODES = [pytest.param(False, id="per-thread"), pytest.param(True, id="shared")]


def age(seconds: float) -> None:
    """Let a pooled connection grow old: the condition under test, not synchronisation."""
    time.sleep(seconds)


@pytest.mark.parametrize("shared", MODES)
def test_stale_keepalive_get_is_sent_again_on_a_new_connection(shared):
    # Every connection answers one request, then closes as the next one arrives.
    with serving(drop_after=1) as server, ThreadLocalSessionPool(shared=shared) as pool:
        for _ in range(10):
            assert pool.get(server.url).text == "ok"
        stats = pool.stats()
        assert stats.stale_retries == 9  # every request after the first met a closed connection
        assert stats.connections_opened == server.accepted == 10
        assert server.requests == 19  # 10 answered, 9 dropped
        assert server.dropped == 9


def test_without_retry_stale_the_race_is_a_requests_connection_error():
    with serving(drop_after=1) as server, ThreadLocalSessionPool(retry_stale=False) as pool:
        assert pool.get(server.url).ok
        with pytest.raises(requests.ConnectionError, match="Connection aborted"):
            pool.get(server.url)
        assert pool.stats().stale_retries == 0


def test_post_is_not_sent_again_unless_opted_in():
    with serving(drop_after=1) as server:
        with ThreadLocalSessionPool() as pool:
            assert pool.post(server.url, data=b"one").ok
            with pytest.raises(requests.ConnectionError):
                pool.post(server.url, data=b"two")
            assert pool.stats().stale_retries == 0
            assert server.methods == ["POST", "POST"]
        server.reset()
        with ThreadLocalSessionPool(retry_stale={"GET", "post"}) as pool:
            assert pool.post(server.url, data=b"one").ok
            assert pool.post(server.url, data=b"two").ok
            assert pool.stats().stale_retries == 1
            assert server.methods == ["POST", "POST", "POST"]


def test_a_streamed_body_is_never_sent_twice():
    with serving(drop_after=1) as server, ThreadLocalSessionPool(retry_stale={"PUT"}) as pool:
        assert pool.put(server.url, data=b"x").ok
        body = iter([b"chunk"])  # a generator body cannot be replayed
        with pytest.raises(requests.ConnectionError):
            pool.put(server.url, data=body)
        assert pool.stats().stale_retries == 0


def test_a_fresh_connection_failure_is_never_retried_by_this_path():
    with serving(drop_after=0) as server, ThreadLocalSessionPool() as pool:
        with pytest.raises(requests.ConnectionError):
            pool.get(server.url)
        assert pool.stats().stale_retries == 0
        assert server.requests == 1


def test_users_max_retries_keeps_working_alongside():
    # A server that drops every request: urllib3's Retry resends, retry_stale never does.
    retry = Retry(total=2, connect=0, read=2, backoff_factor=0)
    with serving(drop_after=0) as server, ThreadLocalSessionPool(max_retries=retry) as pool:
        with pytest.raises(requests.ConnectionError):
            pool.get(server.url)
        assert server.requests == 3
        assert pool.stats().stale_retries == 0
    # A stale connection: retry_stale resends once and spends none of the user's budget.
    with serving(drop_after=1) as server, ThreadLocalSessionPool(max_retries=retry) as pool:
        for _ in range(4):
            assert pool.get(server.url).ok
        assert pool.stats().stale_retries == 3
        assert server.requests == 7


def test_with_session_and_executor_code_is_covered():
    with serving(drop_after=1) as server, ThreadLocalSessionPool() as pool:

        @with_session(pool)
        def fetch(url, *, session=None):
            return [session.get(url).text for _ in range(5)]

        with pool.executor(max_workers=4) as executor:
            results = [executor.submit(fetch, server.url) for _ in range(8)]
            assert all(f.result(timeout=30) == ["ok"] * 5 for f in results)
        stats = pool.stats()
        # Each connection answers one request: 40 answers, 40 connections; only each worker
        # session's first request went out on a fresh connection, every other one was resent.
        assert stats.connections_opened == server.accepted == 40
        assert stats.stale_retries == 40 - stats.sessions_created


def test_server_closing_idle_connections_never_fails_a_get():
    with serving(idle_timeout=0.1) as server, ThreadLocalSessionPool() as pool:
        for _ in range(4):
            assert pool.get(server.url).ok
            assert wait_until(lambda: server.open == 0, 5)  # the server closed it while idle
            assert pool.get(server.url).ok  # urllib3 saw the close and reconnected
        assert server.accepted == 5
        assert pool.stats().stale_retries == 0


@pytest.mark.parametrize("shared", MODES)
def test_keepalive_expiry_replaces_a_connection_idle_too_long(shared):
    with serving() as server, ThreadLocalSessionPool(shared=shared, keepalive_expiry=0.2) as pool:
        assert pool.get(server.url).ok
        assert pool.get(server.url).ok  # reused sooner: kept
        assert (server.accepted, pool.stats().connections_expired) == (1, 0)
        age(0.3)
        assert pool.get(server.url).ok
        assert (server.accepted, pool.stats().connections_expired) == (2, 1)
        assert wait_until(lambda: server.open == 1)  # the expired one was closed, not leaked
        assert pool.stats().connections_opened == 2


@pytest.mark.parametrize("shared", MODES)
def test_max_connection_age_opens_a_new_connection_after_the_age(shared):
    limit = 0.3
    with (
        serving() as server,
        ThreadLocalSessionPool(shared=shared, max_connection_age=limit) as pool,
    ):
        start = time.monotonic()
        requests_sent = 0
        # Keep the connection busy (never idle) until the age forces a new one; bounded.
        while server.accepted < 2 and time.monotonic() - start < 5:
            assert pool.get(server.url).ok
            requests_sent += 1
        assert server.accepted == 2
        assert time.monotonic() - start >= limit
        assert requests_sent > 2  # the first connection was reused until it aged out
        stats = pool.stats()
        assert stats.connections_expired == 1
        assert stats.connections_opened == 2


def test_lifetime_applies_to_mounts_option_dicts_too():
    with serving() as server:
        mounts = {server.url + "/": {"max_retries": 1}}
        with ThreadLocalSessionPool(keepalive_expiry=0.1, mounts=mounts) as pool:
            assert pool.get(server.url + "/").ok
            age(0.2)
            assert pool.get(server.url + "/").ok
            assert pool.stats().connections_expired == 1
            assert server.accepted == 2


SOAK_REQUESTS = int(os.environ.get("THREADSESSION_SOAK_REQUESTS", "100"))


def test_soak_random_drops_no_get_fails():
    """32 threads against a server dropping reused connections at random: zero failed GETs."""
    threads = 32
    failures: list[BaseException] = []
    with serving(drop_chance=0.05, seed=7) as server, ThreadLocalSessionPool() as pool:

        def work() -> None:
            for _ in range(SOAK_REQUESTS):
                try:
                    pool.get(server.url).raise_for_status()
                except requests.RequestException as exc:
                    failures.append(exc)

        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not any(w.is_alive() for w in workers)
        stats = pool.stats()
        print(
            f"soak: {threads}x{SOAK_REQUESTS} GETs, {len(failures)} failed, "
            f"{server.dropped} dropped by the server, {stats.stale_retries} stale retries"
        )
        assert failures == []
        assert stats.stale_retries == server.dropped > 0


def test_pool_timeout_fails_a_blocked_request_clearly():
    with (
        serving() as server,
        ThreadLocalSessionPool(shared=True, pool_block=True, pool_timeout=0.2) as pool,
    ):
        holders = [
            threading.Thread(target=lambda: pool.get(server.url + "/?delay=1500"))
            for _ in range(10)
        ]
        for holder in holders:
            holder.start()
        try:
            assert wait_until(lambda: server.requests == 10)  # all 10 connections busy
            started = time.monotonic()
            with pytest.raises(requests.ConnectionError, match="pool_block=True and all 10"):
                pool.get(server.url)
            assert time.monotonic() - started < 1.4  # gave up after pool_timeout, not the delay
        finally:
            for holder in holders:
                holder.join(10)
        assert pool.get(server.url).ok  # the connections came back
        assert server.accepted == 10
