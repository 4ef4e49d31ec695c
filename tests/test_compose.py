"""Pool sessions compose with requests: the user's class first, patches seen, the snapshot unseen.

Each test here failed before the pool put the user's class first in the MRO, called requests'
helpers through the names requests.sessions uses, and read ConnectionCls when a connection is made.
"""

from __future__ import annotations

import logging
import pickle
import threading
from unittest import mock

import pytest
import requests
import urllib3
from helpers import free_port, run_plain_threads, wait_until
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.poolmanager import PoolManager

import threadsession
from threadsession import ThreadLocalSessionPool, with_session
from threadsession._adapter import check_urllib3


class _Recording(requests.Session):
    """Records what reaches Session.send, the last step before the adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[requests.PreparedRequest, dict]] = []

    def send(self, request, **kwargs):
        self.sent.append((request, kwargs))
        return super().send(request, **kwargs)


class PipLikeSession(_Recording):
    """pip's PipSession sets its own default timeout in request()."""

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("timeout", 2.5)
        return super().request(method, url, *args, **kwargs)


class SigningSession(_Recording):
    def prepare_request(self, request):
        prepared = super().prepare_request(request)
        prepared.headers["X-Signature"] = "signed"
        return prepared


class BaseUrl(_Recording):
    """The shape of requests_toolbelt's BaseUrlSession: prepare_request rewrites the URL first."""

    base_url = ""

    def prepare_request(self, request):
        request.url = self.base_url + request.url
        return super().prepare_request(request)


class NoEnvProxies(_Recording):
    """The usual work-around for requests #3829 and friends: ignore the environment's proxies."""

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["proxies"] = {}
        return settings


class WithState(requests.Session):
    __attrs__ = [*requests.Session.__attrs__, "tenant"]  # noqa: RUF012  # as requests has it
    tenant = "none"

    def __getstate__(self):
        state = super().__getstate__()
        state["pickled_by"] = "WithState.__getstate__"
        return state

    def __setstate__(self, state):
        self.pickled_by = state.pop("pickled_by")
        super().__setstate__(state)


def test_a_request_override_setting_its_own_timeout_beats_the_pool_default(server):
    with ThreadLocalSessionPool(session_factory=PipLikeSession) as pool:
        pool.get(server.url)
        pool.get(server.url, timeout=7)
        session = pool.session()
        assert [kwargs["timeout"] for _, kwargs in session.sent] == [2.5, 7]
    with ThreadLocalSessionPool(session_factory=_Recording, timeout=4) as pool:
        pool.get(server.url)  # a class without its own default gets the pool's
        assert [kwargs["timeout"] for _, kwargs in pool.session().sent] == [4]


def test_a_prepare_request_override_runs_on_every_path(server):
    with ThreadLocalSessionPool(session_factory=SigningSession) as pool:
        pool.get(server.url)
        pool.get(server.url, auth=("u", "p"))
        pool.session().prepare_request(requests.Request("GET", server.url))
        assert [p.headers.get("X-Signature") for p, _ in pool.session().sent] == ["signed"] * 2


def test_a_base_url_session_prepares_relative_urls(server):
    class Local(BaseUrl):
        base_url = server.url

    with ThreadLocalSessionPool(session_factory=Local) as pool:
        prepared = pool.session().prepare_request(requests.Request("GET", "/echo"))
        assert prepared.url == f"{server.url}/echo"
        assert pool.get("/?size=3").content == b"xxx"
    assert server.requests == 1


def test_a_merge_environment_settings_override_runs(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with ThreadLocalSessionPool(session_factory=NoEnvProxies) as pool:
        assert pool.get(server.url).text == "ok"  # straight to the server, not the proxy
        assert pool.stats().connections_opened == server.accepted == 1
    with ThreadLocalSessionPool() as pool, pytest.raises(requests.exceptions.ProxyError):
        pool.get(server.url)  # without the override, as in requests: the (dead) proxy


def test_pickling_uses_the_factory_class_state():
    with ThreadLocalSessionPool(session_factory=WithState) as pool:
        session = pool.session()
        session.tenant = "acme"
        copy = pickle.loads(pickle.dumps(session))
    assert type(copy) is WithState
    assert (copy.pickled_by, copy.tenant) == ("WithState.__getstate__", "acme")
    copy.close()


class NeedsArguments(requests.Session):
    def __init__(self, tenant):
        super().__init__()
        self.tenant = tenant


def test_pickling_a_factory_class_whose_init_needs_arguments():
    # Plain requests pickles it (no __init__ call on load): so must a pool session.
    with requests.Session() as plain, NeedsArguments("acme") as reference:
        expected = pickle.loads(pickle.dumps(reference))
        assert type(expected) is NeedsArguments
        expected.close()
    with ThreadLocalSessionPool(session_factory=lambda: NeedsArguments("acme")) as pool:
        copy = pickle.loads(pickle.dumps(pool.session()))
    assert type(copy) is NeedsArguments
    assert sorted(copy.adapters) == sorted(plain.adapters)
    copy.close()


def test_mock_patch_requests_session_reaches_pool_code():
    pool = ThreadLocalSessionPool()

    @with_session(pool)
    def fetch(url, *, session):
        return session.get(url).status_code

    with mock.patch("requests.Session") as patched:
        patched.return_value.get.return_value.status_code = 418
        assert requests.Session().get("http://127.0.0.1:1/").status_code == 418  # plain code
        assert pool.get("http://127.0.0.1:1/").status_code == 418  # pool code: the same mock
        assert fetch("http://127.0.0.1:1/") == 418
        assert pool.session() is patched.return_value
    pool.close()
    assert pool.stats().sessions_created == 0  # a mock is handed out, not managed
    patched.return_value.close.assert_not_called()


def test_a_patched_session_method_is_not_skipped_by_the_snapshot(server):
    real = requests.Session.merge_environment_settings
    calls = []

    def spy(self, *args):
        calls.append(args[0])
        return real(self, *args)

    with (
        ThreadLocalSessionPool() as pool,
        mock.patch.object(requests.Session, "merge_environment_settings", spy),
    ):
        pool.get(server.url)
    assert calls == [f"{server.url}/"]


def test_a_patched_get_netrc_auth_reaches_pool_sessions(server, monkeypatch):
    seen = []

    def netrc(url, raise_errors=False):
        seen.append(url)
        return ("netrc-user", "netrc-pass")

    monkeypatch.setattr(requests.sessions, "get_netrc_auth", netrc)
    with ThreadLocalSessionPool() as pool:
        prepared = pool.session().prepare_request(requests.Request("GET", server.url))
    assert seen == [server.url]
    assert prepared.headers["Authorization"].startswith("Basic ")


class _URL:
    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return self.url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://[::1", requests.exceptions.InvalidURL),
        ("http://", requests.exceptions.InvalidURL),
        ("127.0.0.1/no-scheme", requests.exceptions.MissingSchema),
    ],
)
def test_bad_urls_raise_what_requests_raises(url, error):
    with requests.Session() as plain, pytest.raises(error):
        plain.get(url)
    with ThreadLocalSessionPool() as pool, pytest.raises(error):
        pool.get(url)


def test_a_url_object_is_str_ed_as_requests_does(server):
    with ThreadLocalSessionPool() as pool:
        assert pool.get(_URL(server.url)).text == "ok"
        assert pool.get(server.url.encode()).text == "ok"  # bytes, decoded by requests


def test_the_ca_bundle_is_read_on_the_first_request_to_a_host_like_proxies(monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    pool = ThreadLocalSessionPool()  # made "at import time", before the variable is set
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/later/ca.pem")
    with pool:
        merged = pool.session().merge_environment_settings(
            "https://example.invalid/", {}, None, None, None
        )
    assert merged["verify"] == "/later/ca.pem"


def test_a_patched_connection_class_is_used_and_counted(server, monkeypatch):
    made = []

    class Recorded(HTTPConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    with ThreadLocalSessionPool() as pool:
        pool.get(server.url)  # a warm host pool, made before the patch
        monkeypatch.setattr(HTTPConnectionPool, "ConnectionCls", Recorded)
        held = pool.get(server.url, stream=True)  # keeps the warm connection checked out
        assert pool.get(server.url).text == "ok"  # so this one needs a new connection
        held.close()
        assert len(made) == 1  # of the class in force now, in the host pool made before
        pool.close_all()
        with pool.executor(max_workers=4) as executor:
            list(executor.map(lambda _: pool.get(server.url), range(8)))
        assert pool.stats().connections_opened == server.accepted
    assert 2 <= len(made) <= 5
    assert wait_until(lambda: server.open == 0)


def test_a_connection_class_that_is_not_a_class_is_a_clear_error(server, monkeypatch):
    monkeypatch.setattr(HTTPConnectionPool, "ConnectionCls", mock.Mock())
    with (
        ThreadLocalSessionPool() as pool,
        pytest.raises(TypeError, match=r"HTTPConnectionPool.ConnectionCls is <Mock.*not a class"),
    ):
        pool.get(server.url)


@pytest.mark.parametrize("version", ["2.25.904", "2.0.941", "2.3.902"])
def test_urllib3_future_is_refused_with_the_fix(version):
    with pytest.raises(ImportError, match=rf"urllib3-future {version}.*URLLIB3_NO_OVERRIDE=1"):
        check_urllib3(version)


@pytest.mark.parametrize("version", ["1.26.20", "2.0.0", "2.8.0", "2.10.1"])
def test_urllib3_itself_passes(version):
    check_urllib3(version)


def test_pool_sessions_are_instances_of_the_factory_class_and_look_like_it():
    with ThreadLocalSessionPool(session_factory=SigningSession) as pool:
        session = pool.session()
        assert isinstance(session, SigningSession)
        assert type(session).__mro__[1] is SigningSession  # the user's class comes first
        assert type(session).__qualname__ == SigningSession.__qualname__
    assert threadsession.default_pool() is threadsession.default_pool()


def _source_port_patch(monkeypatch, name: str, port: int) -> list[str]:
    """Patch HTTPAdapter.NAME as user code does, to bind every connection to 127.0.0.1:PORT."""
    original = getattr(HTTPAdapter, name)
    calls: list[str] = []

    def patched(self, *args, **kwargs):
        calls.append(type(self).__name__)
        kwargs["source_address"] = ("127.0.0.1", port)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(HTTPAdapter, name, patched)
    return calls


@pytest.mark.parametrize("shared", [False, True])
def test_a_patched_init_poolmanager_reaches_pool_sessions(server, monkeypatch, shared):
    """The common recipe for a source address or an ssl_context: patch HTTPAdapter's method."""
    port = free_port()
    calls = _source_port_patch(monkeypatch, "init_poolmanager", port)
    with ThreadLocalSessionPool(shared=shared) as pool:
        assert [pool.get(server.url).text for _ in range(3)] == ["ok"] * 3
        assert "PoolAdapter" in calls
        assert server.peers == [("127.0.0.1", port)]  # the patch's address, seen by the server
        assert pool.stats().connections_opened == server.accepted == 1  # still counted, reused
    assert wait_until(lambda: server.open == 0)


def test_a_patched_proxy_manager_for_reaches_pool_sessions(server, monkeypatch):
    """The test server answers as an HTTP proxy would for a plain-HTTP URL (no traffic leaves)."""
    port = free_port()
    calls = _source_port_patch(monkeypatch, "proxy_manager_for", port)
    proxies = {"http": server.url}
    with ThreadLocalSessionPool() as pool:
        texts = [pool.get("http://example.invalid/a", proxies=proxies).text for _ in range(3)]
        assert texts == ["ok"] * 3
        assert calls == ["PoolAdapter"] * 3  # on every request, as requests calls it
        assert server.peers == [("127.0.0.1", port)]
        assert pool.stats().connections_opened == server.accepted == 1
    assert wait_until(lambda: server.open == 0)


def test_a_manager_of_its_own_from_a_patch_is_used_as_built(server, monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="threadsession")
    built = []

    class Custom(PoolManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    def patched(self, connections, maxsize, block=False, **pool_kwargs):
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = Custom(num_pools=connections, maxsize=maxsize, block=block)

    monkeypatch.setattr(HTTPAdapter, "init_poolmanager", patched)
    with ThreadLocalSessionPool() as pool:
        assert [pool.get(server.url).text for _ in range(2)] == ["ok"] * 2
        assert pool.session().get_adapter(server.url).poolmanager in built
        assert server.accepted == 1  # requests' own keep-alive through it
        assert pool.stats().connections_opened == 0  # not ours to count, as documented
        kept = [r.getMessage() for r in caplog.records if "used as built" in r.getMessage()]
        assert len(kept) == 1  # once for the class, not per adapter or session
        assert f"is a {Custom.__module__}.{Custom.__qualname__}, not urllib3's own" in kept[0]
    assert wait_until(lambda: server.open == 0)  # closed with the session all the same


def _own_pool_classes(manager, server):
    manager.pool_classes_by_scheme = {"http": HTTPConnectionPool}


def _a_host_pool(manager, server):
    manager.connection_from_url(server.url)  # no connection yet: a host pool is made


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_own_pool_classes, "is a PoolManager with pool_classes_by_scheme of its own"),
        (_a_host_pool, "is a PoolManager that already holds host pools"),
    ],
)
def test_a_kept_manager_is_logged_with_its_reason(server, monkeypatch, caplog, change, why):
    """urllib3's own PoolManager, changed by a patch so the pool cannot adopt it: said why."""
    monkeypatch.setattr(threadsession._adapter, "_kept_as_built", {})  # log afresh
    caplog.set_level(logging.WARNING, logger="threadsession")
    original = HTTPAdapter.init_poolmanager

    def patched(self, *args, **kwargs):
        original(self, *args, **kwargs)
        change(self.poolmanager, server)

    monkeypatch.setattr(HTTPAdapter, "init_poolmanager", patched)
    with ThreadLocalSessionPool() as pool:
        for _ in range(2):
            assert pool.session().get(server.url).text == "ok"
        assert type(pool.session().get_adapter(server.url).poolmanager) is PoolManager
        assert pool.stats().connections_opened == 0
    kept = [r.getMessage() for r in caplog.records if "used as built" in r.getMessage()]
    assert len(kept) == 1, kept
    assert f"built for a pool session {why}: it is used as built" in kept[0]
    assert wait_until(lambda: server.open == 0)


def test_a_proxy_manager_is_sent_through_only_once_adopted(server, monkeypatch):
    """requests stores a new proxy's manager before the pool adopts it: nobody may use it then.

    A patch of proxy_manager_for holds the first build open (up to 2 s) after requests stored
    the manager, for a second thread to send through the same proxy meanwhile.
    """
    proxies = {"http": server.url}
    url = "http://example.invalid/a"
    stored, second_done = threading.Event(), threading.Event()
    original = HTTPAdapter.proxy_manager_for

    def patched(self, proxy, **kwargs):
        manager = original(self, proxy, **kwargs)
        if threading.current_thread().name == "first" and not stored.is_set():
            stored.set()
            second_done.wait(2)  # with the fix the second thread waits for this build instead
        return manager

    monkeypatch.setattr(HTTPAdapter, "proxy_manager_for", patched)
    results = []
    with ThreadLocalSessionPool(shared=True) as pool:

        def first() -> None:
            results.append(pool.get(url, proxies=proxies).text)

        def second() -> None:
            stored.wait(30)
            results.append(pool.get(url, proxies=proxies).text)
            second_done.set()

        threads = [threading.Thread(target=f, name=f.__name__) for f in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == ["ok", "ok"]
        manager = pool.session().get_adapter(url).proxy_manager[server.url]
        assert type(manager).__name__ == "_ProxyManager"  # adopted, not used as built
        assert pool.stats().connections_opened == server.accepted
        pool.close_all()
        assert wait_until(lambda: server.open == 0)


def test_nothing_is_logged_while_a_proxy_build_is_held(server, monkeypatch):
    """A logging handler may send through a proxy itself: the build lock is free when it runs."""
    monkeypatch.setattr(threadsession._adapter, "_kept_as_built", {})
    held_at_emit = []

    class Probe(logging.Handler):
        def emit(self, record):
            held_at_emit.append(threadsession._adapter._proxy_build._is_owned())

    class Custom(urllib3.ProxyManager):
        pass

    def patched(self, proxy, **kwargs):
        if proxy not in self.proxy_manager:
            self.proxy_manager[proxy] = Custom(proxy)
        return self.proxy_manager[proxy]

    monkeypatch.setattr(HTTPAdapter, "proxy_manager_for", patched)
    probe = Probe(logging.WARNING)
    logger = logging.getLogger("threadsession")
    logger.addHandler(probe)
    try:
        with ThreadLocalSessionPool() as pool:
            text = pool.get("http://example.invalid/a", proxies={"http": server.url}).text
            assert text == "ok"
    finally:
        logger.removeHandler(probe)
    assert held_at_emit == [False]
    assert wait_until(lambda: server.open == 0)


def test_threads_racing_to_a_new_proxy_share_one_manager(server, monkeypatch):
    """32 threads of a shared session ask for one new proxy at once: one manager, none leaked."""
    proxies = {"http": server.url}
    width = 32
    barrier = threading.Barrier(width)
    builds: list[str] = []
    second_build = threading.Condition()
    original = requests.adapters.proxy_from_url

    def slow_build(*args, **kwargs):
        # Hold the first build open (up to 2 s) for a second thread to start one beside it, as
        # it could on a busy machine: requests checks proxy_manager, then builds and stores.
        with second_build:
            builds.append(threading.current_thread().name)
            second_build.notify_all()
            second_build.wait_for(lambda: len(builds) > 1, timeout=2)
        return original(*args, **kwargs)

    monkeypatch.setattr(requests.adapters, "proxy_from_url", slow_build)
    with ThreadLocalSessionPool(shared=True) as pool:

        def work() -> None:
            barrier.wait(60)
            pool.get("http://example.invalid/a", proxies=proxies).raise_for_status()

        run_plain_threads(width, work, barrier)
        adapter = pool.session().get_adapter("http://example.invalid/a")
        assert len(builds) == 1, builds
        assert list(adapter.proxy_manager) == [server.url]
        assert pool.stats().connections_opened == server.accepted <= width
        pool.close_all()
        assert wait_until(lambda: server.open == 0)  # every connection was in the one manager


def test_an_init_poolmanager_double_that_builds_nothing_is_a_clear_error(server):
    """A MagicMock in place of init_poolmanager: a TypeError saying what is wrong, and the fix."""
    with ThreadLocalSessionPool() as pool:
        with (
            mock.patch.object(HTTPAdapter, "init_poolmanager"),
            pytest.raises(
                TypeError, match=r"init_poolmanager \(<MagicMock.*set no self\.poolmanager"
            ),
        ):
            pool.get(server.url)
        assert pool.get(server.url).text == "ok"  # once the patch is gone
        assert pool.stats().connections_opened == server.accepted == 1
    assert wait_until(lambda: server.open == 0)


def test_a_grow_while_a_new_proxy_is_built_reaches_its_manager(server, monkeypatch):
    """executor() grows a shared session while a new proxy's manager is built: it is grown too.

    With pool_block=True, 32 requests held 1 s by the server at once through that proxy each need
    a connection of their own: an ungrown manager (10) makes 22 wait, past pool_timeout.
    """
    proxies = {"http": server.url}
    stored, grown = threading.Event(), threading.Event()
    original = HTTPAdapter.proxy_manager_for

    def patched(self, proxy, **kwargs):
        manager = original(self, proxy, **kwargs)
        if threading.current_thread().name == "builder" and not stored.is_set():
            stored.set()
            grown.wait(2)  # with the fix the grow waits for this build instead
        return manager

    monkeypatch.setattr(HTTPAdapter, "proxy_manager_for", patched)
    width = 32
    with ThreadLocalSessionPool(shared=True, pool_block=True, pool_timeout=0.5) as pool:
        pool.get(server.url).raise_for_status()  # the shared session exists
        first = "http://example.invalid/a"
        builder = threading.Thread(target=lambda: pool.get(first, proxies=proxies), name="builder")
        builder.start()
        assert stored.wait(30)
        with pool.executor(max_workers=width) as executor:
            grown.set()
            builder.join(60)
            barrier = threading.Barrier(width)

            def held(_: int) -> int:
                barrier.wait(60)
                return pool.get(f"{first}?delay=1000", proxies=proxies).status_code

            assert list(executor.map(held, range(width))) == [200] * width
        assert pool.stats().connections_opened == server.accepted
    assert wait_until(lambda: server.open == 0)


def test_close_all_while_a_thread_stores_a_new_proxy_closes_every_manager(server, monkeypatch):
    """requests' HTTPAdapter.close iterates proxy_manager: a new proxy stored meanwhile (by
    another thread still holding the shared session, as it may) stopped it halfway with a
    RuntimeError, the rest left open."""
    url = "http://example.invalid/a"
    host = server.url.split("//")[1]
    other = {"http": f"http://other@{host}"}  # another proxy key, the same server
    stored = threading.Event()
    original = PoolManager.clear
    late: list[threading.Thread] = []

    def clear(self):
        if isinstance(self, urllib3.ProxyManager) and not late:
            # Mid-iteration: another thread asks for a new proxy, and is given up to 2 s.
            late.append(
                threading.Thread(target=lambda: (session.get(url, proxies=other), stored.set()))
            )
            late[0].start()
            stored.wait(2)
        original(self)

    with ThreadLocalSessionPool(shared=True) as pool:
        session = pool.session()
        for i in range(3):
            session.get(url, proxies={"http": f"http://u{i}@{host}"}).raise_for_status()
        assert server.open == 3
        monkeypatch.setattr(PoolManager, "clear", clear)
        pool.close_all()  # raised RuntimeError: dictionary changed size during iteration
        late[0].join(60)
        assert stored.is_set()
    assert wait_until(lambda: server.open == 0), f"{server.open} left open"
