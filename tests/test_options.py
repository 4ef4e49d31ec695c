"""Options of ThreadLocalSessionPool: checked once when the pool is made, then applied.

Every bad value named in API.md "Bad input" must raise TypeError (wrong kind) or ValueError
(wrong value) whose message names the option and the repr of the value given.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import threading
from typing import Any, Callable

import pytest
import requests
from helpers import CountingServer
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

import threadsession
from threadsession import PoolClosedError, PoolStats, ThreadLocalSessionPool


def names(option: str, value: object) -> str:
    """A ``match=`` pattern: the option's name, then later the repr of the value given."""
    return f"{re.escape(option)}.*{re.escape(repr(value))}"


def no_sessions_left(pool: ThreadLocalSessionPool) -> bool:
    return pool.stats().sessions_open == 0


# --- the public surface -------------------------------------------------------------------------

API_NAMES = [
    "ThreadLocalSessionPool",
    "with_session",
    "close_all",
    "default_pool",
    "PoolStats",
    "PoolClosedError",
]


def test_all_is_the_api_names_and_version() -> None:
    assert threadsession.__all__ == sorted([*API_NAMES, "__version__"])
    for name in threadsession.__all__:
        assert hasattr(threadsession, name), name
    assert isinstance(threadsession.__version__, str)


def test_dir_shows_only_the_api_names_and_submodules() -> None:
    # What a user sees in dir(threadsession) or a completion popup: the API, no stray names
    # (a `from __future__ import annotations` once leaked `annotations` here).
    public = {
        name
        for name in dir(threadsession)
        if not name.startswith("_") and not inspect.ismodule(getattr(threadsession, name))
    }
    assert public == set(API_NAMES), sorted(public ^ set(API_NAMES))


def test_pool_closed_error_is_a_runtime_error() -> None:
    assert issubclass(PoolClosedError, RuntimeError)


def test_pool_stats_is_a_frozen_dataclass() -> None:
    with ThreadLocalSessionPool() as pool:
        stats = pool.stats()
    assert isinstance(stats, PoolStats)
    assert dataclasses.is_dataclass(stats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.sessions_created = 1  # type: ignore[misc]


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        ThreadLocalSessionPool(True)  # type: ignore[misc]
    with pytest.raises(TypeError):
        ThreadLocalSessionPool(False, None)  # type: ignore[misc]


# --- bad input: ints, bools, retries ------------------------------------------------------------

BAD_POSITIVE_INTS: list[tuple[object, type[Exception]]] = [
    (0, ValueError),
    (-1, ValueError),
    (1.5, TypeError),
    ("10", TypeError),
    (True, TypeError),
]


@pytest.mark.parametrize(("value", "error"), BAD_POSITIVE_INTS)
def test_bad_pool_maxsize(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=names("pool_maxsize", value)):
        ThreadLocalSessionPool(pool_maxsize=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "error"), BAD_POSITIVE_INTS)
def test_bad_pool_connections(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=names("pool_connections", value)):
        ThreadLocalSessionPool(pool_connections=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), (True, TypeError), ("4", TypeError), (2.0, TypeError)],
)
@pytest.mark.parametrize("shared", [False, True])
def test_bad_max_workers(value: object, error: type[Exception], shared: bool) -> None:
    with pytest.raises(error, match=names("max_workers", value)):
        ThreadLocalSessionPool(max_workers=value, shared=shared)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["yes", 1, 0, None])
def test_bad_pool_block(value: object) -> None:
    with pytest.raises(TypeError, match=names("pool_block", value)):
        ThreadLocalSessionPool(pool_block=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["yes", 1, 0, None])
def test_bad_shared(value: object) -> None:
    with pytest.raises(TypeError, match=names("shared", value)):
        ThreadLocalSessionPool(shared=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)],
)
def test_bad_max_retries(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=names("max_retries", value)):
        ThreadLocalSessionPool(max_retries=value)


# --- bad input: timeout -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1, ValueError),
        (0.0, ValueError),
        (True, TypeError),
        ("5", TypeError),
        ((1, 2, 3), ValueError),
        ((5,), ValueError),
        ((0, 5), ValueError),
        ((5, -1), ValueError),
        ((True, 5), TypeError),
        ((5, "1"), TypeError),
        (math.nan, ValueError),
        ((math.nan, 5), ValueError),
        (-math.inf, ValueError),
        # accepted by a bare "> 0" check, yet every request then fails with OverflowError
        (math.inf, ValueError),
        ((5, math.inf), ValueError),
    ],
    ids=repr,
)
def test_bad_timeout(value: object, error: type[Exception]) -> None:
    # The message names the value as given: for a pair, the whole pair, not only the bad half.
    with pytest.raises(error, match=names("timeout", value)):
        ThreadLocalSessionPool(timeout=value)  # type: ignore[arg-type]


# --- bad input: connection lifetime and pool_timeout -------------------------------------------


@pytest.mark.parametrize("option", ["max_connection_age", "keepalive_expiry"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, ValueError),
        (-1.5, ValueError),
        (math.inf, ValueError),
        (True, TypeError),
        ("5", TypeError),
    ],
    ids=repr,
)
def test_bad_lifetime_seconds(option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=names(option, value)):
        ThreadLocalSessionPool(**{option: value})


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("GET", TypeError),
        (1, TypeError),
        (None, TypeError),
        ({"GET", 1}, ValueError),
        (["GE T"], ValueError),
    ],
    ids=repr,
)
def test_bad_retry_stale(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="retry_stale"):
        ThreadLocalSessionPool(retry_stale=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "error"), [(0, ValueError), (-1, ValueError), ("1", TypeError)])
def test_bad_pool_timeout(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=names("pool_timeout", value)):
        ThreadLocalSessionPool(pool_block=True, pool_timeout=value)  # type: ignore[arg-type]


def test_pool_timeout_needs_pool_block() -> None:
    with pytest.raises(ValueError, match=r"pool_timeout applies only with pool_block=True"):
        ThreadLocalSessionPool(pool_timeout=5)
    with pytest.raises(ValueError, match=re.escape("mounts['http://a/']['pool_timeout']")):
        ThreadLocalSessionPool(mounts={"http://a/": {"pool_timeout": 5}})
    ThreadLocalSessionPool(pool_block=True, pool_timeout=5).close()
    ThreadLocalSessionPool(mounts={"http://a/": {"pool_block": True, "pool_timeout": 5}}).close()


@pytest.mark.parametrize("value", [True, False, {"GET", "POST"}, ["put"], frozenset(), ()])
def test_retry_stale_accepts_bools_and_method_collections(value: object) -> None:
    ThreadLocalSessionPool(retry_stale=value).close()  # type: ignore[arg-type]


# --- bad input: headers -------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["X-A: 1", [("X-A", "1")], 42])
def test_headers_not_a_mapping(value: object) -> None:
    with pytest.raises(TypeError, match=names("headers", value)):
        ThreadLocalSessionPool(headers=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [{"X-A": 1}, {"X-A": None}, {"X-A": ["1"]}, {1: "x"}])
def test_headers_with_non_str_items(value: dict[Any, Any]) -> None:
    with pytest.raises(TypeError, match=names("headers", value)):
        ThreadLocalSessionPool(headers=value)


# --- bad input: mounts --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [["http://"], "http://", 42])
def test_mounts_not_a_mapping(value: object) -> None:
    with pytest.raises(TypeError, match=names("mounts", value)):
        ThreadLocalSessionPool(mounts=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("key", [1, b"http://", None])
def test_mounts_key_not_str(key: object) -> None:
    with pytest.raises(TypeError, match=names("mounts", key)):
        ThreadLocalSessionPool(mounts={key: {}})  # type: ignore[dict-item]


@pytest.mark.parametrize("key", ["ftp://x", "127.0.0.1/", "", "http:/x", "//x/", "httpx://x"])
def test_mounts_key_not_an_http_prefix(key: str) -> None:
    with pytest.raises(ValueError, match=names("mounts", key)):
        ThreadLocalSessionPool(mounts={key: {}})


def test_mounts_adapter_instance_is_refused() -> None:
    adapter = HTTPAdapter()
    try:
        with pytest.raises(TypeError, match=r"isolation") as caught:
            ThreadLocalSessionPool(mounts={"http://x/": adapter})  # type: ignore[dict-item]
        assert re.search(names("mounts['http://x/']", adapter), str(caught.value))
    finally:
        adapter.close()


@pytest.mark.parametrize("spec", [42, "pool_maxsize=20", None])
def test_mounts_value_neither_dict_nor_callable(spec: object) -> None:
    with pytest.raises(TypeError, match=names("mounts['http://x/']", spec)):
        ThreadLocalSessionPool(mounts={"http://x/": spec})  # type: ignore[dict-item]


def test_mounts_dict_with_unknown_key() -> None:
    # An unknown key is a wrong value or a wrong kind, as one reads it: either class will do.
    with pytest.raises((TypeError, ValueError), match=names("mounts['http://x/']", "pool_size")):
        ThreadLocalSessionPool(mounts={"http://x/": {"pool_size": 3}})


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("pool_maxsize", 0, ValueError),
        ("pool_maxsize", True, TypeError),
        ("pool_connections", -1, ValueError),
        ("pool_block", "yes", TypeError),
        ("max_retries", -1, ValueError),
        ("max_retries", "3", TypeError),
    ],
)
def test_mounts_dict_with_bad_option(key: str, value: object, error: type[Exception]) -> None:
    option = f"mounts['http://127.0.0.1/'][{key!r}]"
    with pytest.raises(error, match=names(option, value)):
        ThreadLocalSessionPool(mounts={"http://127.0.0.1/": {key: value}})


def test_mounts_factory_returning_non_adapter_fails_at_session() -> None:
    def factory() -> Any:
        return 42

    with ThreadLocalSessionPool(mounts={"http://127.0.0.1/": factory}) as pool:
        with pytest.raises(TypeError, match=names("mounts['http://127.0.0.1/']", 42)):
            pool.session()
        assert pool.stats().sessions_open == 0
        with pytest.raises(TypeError, match=names("mounts['http://127.0.0.1/']", 42)):
            pool.session()


# --- bad input: session_factory -----------------------------------------------------------------


@pytest.mark.parametrize("value", [42, "requests.Session"])
def test_session_factory_not_callable(value: object) -> None:
    with pytest.raises(TypeError, match=names("session_factory", value)):
        ThreadLocalSessionPool(session_factory=value)  # type: ignore[arg-type]


def test_session_factory_given_a_session_instance() -> None:
    instance = requests.Session()  # the class was meant
    try:
        with pytest.raises(TypeError, match=names("session_factory", instance)):
            ThreadLocalSessionPool(session_factory=instance)  # type: ignore[arg-type]
    finally:
        instance.close()


@pytest.mark.parametrize("returned", [42, None, "session"])
def test_session_factory_returning_non_session(returned: object) -> None:
    def factory() -> Any:
        return returned

    with ThreadLocalSessionPool(session_factory=factory) as pool:  # made fine
        with pytest.raises(TypeError, match=names("session_factory", returned)):
            pool.session()
        with pytest.raises(TypeError, match=names("session_factory", returned)):
            pool.get("http://127.0.0.1:9/")  # never reaches the network
        stats = pool.stats()
        assert (stats.sessions_created, stats.sessions_open) == (0, 0)


# --- good input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"pool_maxsize": 1},
        {"pool_maxsize": 10},
        {"pool_maxsize": 64},
        {"pool_maxsize": None},
        {"pool_connections": 1},
        {"max_workers": 1},
        {"max_workers": 50, "shared": True},
        {"max_workers": None},
        {"pool_block": True},
        {"shared": True},
        {"shared": False},
        {"max_retries": 0},
        {"max_retries": 3},
        {"max_retries": Retry(total=2, backoff_factor=0)},
        {"timeout": 5},
        {"timeout": 0.5},
        {"timeout": None},
        {"timeout": (1, 2)},
        {"timeout": (None, 5)},
        {"timeout": (3.5, None)},
        {"timeout": Timeout(connect=1, read=2)},
        {"headers": None},
        {"headers": {}},
        {"headers": {"X-A": "1", "X-B": b"2"}},
        {"mounts": None},
        {"mounts": {}},
        {"mounts": {"https://example.test/": {"pool_maxsize": 20, "max_retries": 1}}},
        {"mounts": {"HTTP://example.test/": {}}},
        {"mounts": {"http://example.test/": HTTPAdapter}},
        {"mounts": {"https://": lambda: HTTPAdapter(max_retries=2)}},
        {"session_factory": requests.Session},
        {"session_factory": None},
    ],
)
def test_valid_options_are_accepted(options: dict[str, Any]) -> None:
    with ThreadLocalSessionPool(**options) as pool:
        assert isinstance(pool.session(), requests.Session)
        assert pool.session() is pool.session()
        assert pool.stats().sessions_open == 1
    assert pool.stats().sessions_open == 0


@pytest.mark.parametrize(
    ("options", "in_force"),
    [
        ({}, 10),
        ({"pool_maxsize": 1}, 10),
        ({"pool_maxsize": 25}, 25),
        ({"max_workers": 40}, 10),  # a hint for shared mode only
        ({"max_workers": 40, "shared": True}, 40),
        ({"max_workers": 40, "pool_maxsize": 60, "shared": True}, 60),
        # pool_block=True with a size given: a hard cap, exactly that size
        ({"pool_block": True, "pool_maxsize": 4}, 4),
        ({"pool_block": True, "pool_maxsize": 4, "max_workers": 40, "shared": True}, 4),
        ({"pool_block": True, "max_workers": 40, "shared": True}, 40),
    ],
)
def test_pool_maxsize_in_force(options: dict[str, Any], in_force: int) -> None:
    with ThreadLocalSessionPool(**options) as pool:
        assert pool.stats().pool_maxsize == in_force


# --- headers ------------------------------------------------------------------------------------


def test_headers_merged_into_each_session() -> None:
    given = {"X-Test": "1", "User-Agent": "threadsession-tests"}
    defaults = requests.utils.default_headers()
    got: dict[str, requests.Session] = {}
    errors: list[BaseException] = []

    with ThreadLocalSessionPool(headers=given) as pool:

        def worker() -> None:
            try:
                got["worker"] = pool.session()
            except BaseException as exc:  # noqa: BLE001  # re-raised in the main thread
                errors.append(exc)

        got["main"] = pool.session()
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive()
        assert errors == []
        assert got["main"] is not got["worker"]
        for session in got.values():
            assert session.headers["X-Test"] == "1"
            assert session.headers["User-Agent"] == "threadsession-tests"
            # merged, not replaced: requests' other defaults stay
            assert session.headers["Accept-Encoding"] == defaults["Accept-Encoding"]
        # each session has its own headers: one thread's change does not reach another's
        got["main"].headers["X-Test"] = "changed"
        assert got["worker"].headers["X-Test"] == "1"


def test_headers_are_copied_when_the_pool_is_made() -> None:
    given = {"X-Test": "1"}
    with ThreadLocalSessionPool(headers=given) as pool:
        given["X-Test"] = "changed later"
        given["X-Other"] = "added later"
        session = pool.session()
        assert session.headers["X-Test"] == "1"
        assert "X-Other" not in session.headers


def test_headers_apply_to_session_factory_sessions() -> None:
    class Custom(requests.Session):
        pass

    with ThreadLocalSessionPool(session_factory=Custom, headers={"X-Test": "1"}) as pool:
        session = pool.session()
        assert isinstance(session, Custom)
        assert session.headers["X-Test"] == "1"


# --- mounts -------------------------------------------------------------------------------------


def retry_on_500(total: int) -> Retry:
    return Retry(total=total, status_forcelist=[500], backoff_factor=0, raise_on_status=False)


def test_mounts_dict_options_apply_under_their_prefix(server: CountingServer) -> None:
    mounts = {server.url + "/retry/": {"max_retries": retry_on_500(2)}}
    with ThreadLocalSessionPool(mounts=mounts) as pool:
        assert pool.get(server.url + "/retry/?status=500").status_code == 500
        assert server.requests == 3  # the first try and two retries
        assert pool.get(server.url + "/plain?status=500").status_code == 500
        assert server.requests == 4  # outside the prefix: the pool's max_retries=0


def test_mounts_dict_defaults_to_the_pools_options(server: CountingServer) -> None:
    mounts = {server.url + "/mounted/": {"pool_block": False}}
    with ThreadLocalSessionPool(max_retries=retry_on_500(1), mounts=mounts) as pool:
        assert pool.get(server.url + "/mounted/?status=500").status_code == 500
        assert server.requests == 2  # max_retries came from the pool


def test_mounts_factory_is_called_once_per_session(server: CountingServer) -> None:
    made: list[HTTPAdapter] = []
    lock = threading.Lock()

    def factory() -> HTTPAdapter:
        adapter = HTTPAdapter(max_retries=retry_on_500(1))
        with lock:
            made.append(adapter)
        return adapter

    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    sessions: list[requests.Session] = []

    with ThreadLocalSessionPool(mounts={server.url + "/": factory}) as pool:

        def worker() -> None:
            try:
                session = pool.session()
                with lock:
                    sessions.append(session)
                barrier.wait(timeout=10)
                assert pool.session() is session
                assert pool.get(server.url + "/?status=500").status_code == 500
            except BaseException as exc:  # noqa: BLE001  # re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert len(made) == 2
        assert made[0] is not made[1]
        assert sessions[0] is not sessions[1]
        assert {id(s.get_adapter(server.url + "/")) for s in sessions} == {id(a) for a in made}
        assert server.requests == 4  # each thread: the first try and one retry


# --- timeout ------------------------------------------------------------------------------------


def recording_adapter(seen: list[object]) -> Callable[[], HTTPAdapter]:
    """A mounts factory whose adapters note the timeout each request reaches the transport with."""

    class Recording(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
            seen.append(kwargs.get("timeout"))
            return super().send(request, *args, **kwargs)

    return Recording


def test_pool_timeout_applies_to_requests_that_pass_none(server: CountingServer) -> None:
    with ThreadLocalSessionPool(timeout=0.05) as pool:
        with pytest.raises(requests.exceptions.ReadTimeout):
            pool.get(server.url + "/?delay=400")
        with pytest.raises(requests.exceptions.ReadTimeout):
            pool.session().get(server.url + "/?delay=400")
        with pytest.raises(requests.exceptions.ReadTimeout):
            pool.request("POST", server.url + "/?delay=400", data=b"x")


def test_explicit_timeout_none_overrides_the_pool_timeout(server: CountingServer) -> None:
    with ThreadLocalSessionPool(timeout=0.05) as pool:
        assert pool.get(server.url + "/?delay=200", timeout=None).text == "ok"
        assert pool.session().get(server.url + "/?delay=200", timeout=None).text == "ok"
        assert pool.get(server.url + "/?delay=200", timeout=10).text == "ok"
        # Session.request's timeout, given by position (method, url, params, data, headers,
        # cookies, files, auth, timeout)
        response = pool.session().request(
            "GET", server.url + "/?delay=200", None, None, None, None, None, None, None
        )
        assert response.text == "ok"


def test_timeout_reaching_the_transport(server: CountingServer) -> None:
    seen: list[object] = []
    mounts = {server.url + "/": recording_adapter(seen)}
    with ThreadLocalSessionPool(timeout=(2, 7), mounts=mounts) as pool:
        pool.get(server.url + "/")
        pool.get(server.url + "/", timeout=None)
        pool.get(server.url + "/", timeout=3)
        pool.session().head(server.url + "/")
    assert seen == [(2, 7), None, 3, (2, 7)]


def test_timeout_none_means_no_default(server: CountingServer) -> None:
    seen: list[object] = []
    mounts = {server.url + "/": recording_adapter(seen)}
    with ThreadLocalSessionPool(timeout=None, mounts=mounts) as pool:
        assert pool.get(server.url + "/?delay=200").text == "ok"
        pool.session().get(server.url + "/")
    assert seen == [None, None]


def test_default_timeout_is_the_documented_30_seconds(server: CountingServer) -> None:
    seen: list[object] = []
    with ThreadLocalSessionPool(mounts={server.url + "/": recording_adapter(seen)}) as pool:
        pool.get(server.url + "/")
    assert seen == [30.0]


def test_timeout_applies_to_session_factory_sessions(server: CountingServer) -> None:
    class Custom(requests.Session):
        pass

    with ThreadLocalSessionPool(session_factory=Custom, timeout=0.05) as pool:
        assert isinstance(pool.session(), Custom)
        with pytest.raises(requests.exceptions.ReadTimeout):
            pool.get(server.url + "/?delay=400")
        assert pool.get(server.url + "/?delay=200", timeout=None).text == "ok"


def test_closed_pool_keeps_its_checked_options() -> None:
    pool = ThreadLocalSessionPool(pool_maxsize=30)
    pool.close()
    assert pool.stats().pool_maxsize == 30
    assert no_sessions_left(pool)
    with pytest.raises(PoolClosedError):
        pool.session()
