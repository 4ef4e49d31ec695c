"""Edge cases: LRU eviction under a user, close_all() racing a build, proxies, pickling."""

from __future__ import annotations

import pickle
import threading

import pytest
import requests
from helpers import wait_until

from threadsession import ThreadLocalSessionPool


def test_a_host_pool_evicted_while_in_use_still_works_and_keeps_no_socket(server):
    """urllib3 #1252/#2954: closing an evicted host pool broke a thread still sending on it."""
    with ThreadLocalSessionPool(shared=True) as pool:
        manager = pool.session().get_adapter(server.url).poolmanager
        host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
        held = manager.connection_from_host(host, port, "http")
        assert held.urlopen("GET", "/").data == b"ok"  # one warm idle connection
        for retries in range(100):  # 100 more host pools (distinct keys): the held one is evicted
            manager.connection_from_host(host, port, "http", pool_kwargs={"retries": retries})
        assert wait_until(lambda: server.open == 0)  # its idle socket was closed at eviction
        response = held.urlopen("GET", "/")  # the thread that held it goes on
        assert response.status == 200
        assert response.data == b"ok"
        assert wait_until(lambda: server.open == 0)  # and that connection was not pooled
        assert server.accepted == 2


def test_close_all_while_a_shared_session_is_being_built_leaves_nothing_open(server):
    building, release = threading.Event(), threading.Event()

    def slow_factory() -> requests.Session:
        building.set()
        assert release.wait(10)
        return requests.Session()

    with ThreadLocalSessionPool(shared=True, session_factory=slow_factory) as pool:
        made: list[requests.Session] = []
        builder = threading.Thread(target=lambda: made.append(pool.session()))
        builder.start()
        assert building.wait(10)
        closer = threading.Thread(target=pool.close_all)
        closer.start()
        release.set()
        builder.join(10)
        closer.join(10)
        assert made[0].get(server.url).text == "ok"  # usable, but closed: nothing pooled
        assert wait_until(lambda: server.open == 0)
        stats = pool.stats()
        assert (stats.sessions_created, stats.sessions_open) == (1, 0)
        assert pool.session() is not made[0]


class _FailingClose(requests.Session):
    def close(self) -> None:
        super().close()
        raise OSError("close failed")


@pytest.mark.parametrize("shared", [False, True])
def test_close_all_reports_a_failing_close_in_both_modes(shared):
    pool = ThreadLocalSessionPool(shared=shared, session_factory=_FailingClose)
    pool.session()
    with pytest.raises(OSError, match="close failed"):
        pool.close_all()
    assert pool.stats().sessions_open == 0  # counted closed all the same
    pool.close()


def test_proxied_connections_are_counted_and_closed(server):
    """The test server answers as an HTTP proxy would for a plain-HTTP URL (no traffic leaves)."""
    proxies = {"http": server.url}
    with ThreadLocalSessionPool() as pool:
        held = [pool.get("http://example.invalid/a", proxies=proxies) for _ in range(3)]
        assert [r.text for r in held] == ["ok"] * 3
        assert server.accepted == 1  # one kept-alive connection to the proxy
        assert pool.stats().connections_opened == 1
        pool.close_all()
        assert wait_until(lambda: server.open == 0)  # closed at once, Responses still held


def test_a_pool_session_pickles_as_a_plain_session(server):
    with ThreadLocalSessionPool(headers={"X-Team": "a"}) as pool:
        session = pool.session()
        session.verify = False
        copy = pickle.loads(pickle.dumps(session))
        try:
            assert type(copy) is requests.Session
            assert copy.headers["X-Team"] == "a"
            assert copy.verify is False
            assert type(copy.get_adapter(server.url)) is requests.adapters.HTTPAdapter
            assert copy.get(server.url).text == "ok"
        finally:
            copy.close()
