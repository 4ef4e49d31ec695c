"""with_session: every form injects the calling thread's session, and keeps the function's face."""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import requests
from helpers import CountingServer

import threadsession
from threadsession import ThreadLocalSessionPool, with_session


def run_in_threads(target: Callable[[], object], count: int) -> list[object]:
    """Run ``target`` in ``count`` threads; return their results, re-raising the first error."""
    results: list[object] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = target()
        except BaseException as exc:  # noqa: BLE001  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


# --- the four forms -----------------------------------------------------------------------------

FORMS = ["positional", "keyword", "empty-call"]


def decorate(form: str, pool: ThreadLocalSessionPool) -> Callable[[Any], Any]:
    """The decorator each form gives; "empty-call" is @with_session() on the default pool."""
    if form == "positional":
        return with_session(pool)
    if form == "keyword":
        return with_session(pool=pool)
    assert form == "empty-call"
    return with_session()


@pytest.fixture
def pool() -> Iterator[ThreadLocalSessionPool]:
    with ThreadLocalSessionPool() as pool:
        yield pool


@pytest.fixture
def default() -> Iterator[ThreadLocalSessionPool]:
    """The process-wide default pool: emptied after the test, never closed."""
    pool = threadsession.default_pool()
    try:
        yield pool
    finally:
        pool.close_all()


def pool_of(form: str, pool: ThreadLocalSessionPool) -> ThreadLocalSessionPool:
    """The pool a form takes sessions from."""
    return threadsession.default_pool() if form in ("bare", "empty-call") else pool


def test_bare_decorator_uses_the_default_pool(server: CountingServer) -> None:
    @with_session
    def fetch(url: str, *, session: requests.Session | None = None) -> requests.Session:
        assert session is not None
        assert session.get(url).text == "ok"
        return session

    try:
        assert fetch(server.url + "/") is threadsession.default_pool().session()
        assert fetch(server.url + "/") is threadsession.default_pool().session()
        assert server.requests == 2
        assert server.accepted == 1  # the thread's session kept the connection alive
    finally:
        threadsession.default_pool().close_all()


@pytest.mark.parametrize("form", FORMS)
def test_injects_the_calling_threads_session(
    form: str, pool: ThreadLocalSessionPool, default: ThreadLocalSessionPool
) -> None:
    @decorate(form, pool)
    def grab(*, session: requests.Session | None = None) -> requests.Session | None:
        return session

    source = pool_of(form, pool)
    other = default if source is pool else pool
    created_before = other.stats().sessions_created
    assert grab() is source.session()
    assert grab() is grab()
    assert other.stats().sessions_created == created_before


@pytest.mark.parametrize("form", ["bare", *FORMS])
def test_threads_on_a_barrier_get_distinct_sessions(
    # server first: set up before the pools, so torn down after them
    server: CountingServer,
    form: str,
    pool: ThreadLocalSessionPool,
    default: ThreadLocalSessionPool,
) -> None:
    count = 4
    barrier = threading.Barrier(count)
    source = pool_of(form, pool)
    before = source.stats()

    def body(url: str, *, session: requests.Session | None = None) -> requests.Session:
        assert session is not None
        barrier.wait(timeout=10)  # every thread holds its session at once
        assert session is source.session()
        assert session.get(url).text == "ok"
        return session

    fetch = with_session(body) if form == "bare" else decorate(form, pool)(body)
    sessions = run_in_threads(lambda: fetch(server.url + "/"), count)

    assert len({id(session) for session in sessions}) == count
    assert server.requests == count
    assert server.accepted == count
    stats = source.stats()
    assert stats.sessions_created - before.sessions_created == count
    # each worker's session closed as its thread ended, before join() returned
    assert stats.sessions_closed - before.sessions_closed == count
    assert stats.sessions_open == before.sessions_open


@pytest.mark.parametrize("form", FORMS)
def test_requests_reach_the_server(
    # server first: set up before the pools, so torn down after them
    server: CountingServer,
    form: str,
    pool: ThreadLocalSessionPool,
    default: ThreadLocalSessionPool,
) -> None:
    @decorate(form, pool)
    def fetch(url: str, *, session: requests.Session | None = None) -> int:
        assert session is not None
        return session.post(url, data=b"x").status_code

    opened_before = pool_of(form, pool).stats().connections_opened
    assert [fetch(server.url + "/") for _ in range(3)] == [200, 200, 200]
    assert server.requests == 3
    assert server.methods == ["POST"] * 3
    assert server.accepted == 1
    assert pool_of(form, pool).stats().connections_opened - opened_before == 1


def test_the_pools_default_timeout_applies(server: CountingServer) -> None:
    with ThreadLocalSessionPool(timeout=0.05) as pool:

        @with_session(pool)
        def fetch(url: str, *, session: requests.Session | None = None) -> str:
            assert session is not None
            return session.get(url).text

        with pytest.raises(requests.exceptions.ReadTimeout):
            fetch(server.url + "/?delay=400")


def test_closed_pool_raises_pool_closed_error() -> None:
    pool = ThreadLocalSessionPool()

    @with_session(pool)
    def grab(*, session: requests.Session | None = None) -> requests.Session | None:
        return session

    pool.close()
    with pytest.raises(threadsession.PoolClosedError):
        grab()


# --- a session the caller passes ----------------------------------------------------------------


@pytest.mark.parametrize("form", ["bare", *FORMS])
def test_session_passed_by_keyword_is_used_as_given(
    form: str, pool: ThreadLocalSessionPool, default: ThreadLocalSessionPool
) -> None:
    def grab(*, session: requests.Session | None = None) -> requests.Session | None:
        return session

    wrapped = with_session(grab) if form == "bare" else decorate(form, pool)(grab)
    with requests.Session() as mine:
        assert wrapped(session=mine) is mine
    assert pool.stats().sessions_created == 0
    assert default.stats().sessions_open == 0


@pytest.mark.parametrize("form", ["bare", *FORMS])
def test_session_passed_by_position_is_used_as_given(
    form: str, pool: ThreadLocalSessionPool, default: ThreadLocalSessionPool
) -> None:
    def grab(url: str, session: requests.Session | None = None) -> requests.Session | None:
        return session

    wrapped = with_session(grab) if form == "bare" else decorate(form, pool)(grab)
    with requests.Session() as mine:
        assert wrapped("http://x/", mine) is mine
        assert wrapped("http://x/", session=mine) is mine
    assert pool.stats().sessions_created == 0
    assert default.stats().sessions_open == 0
    # not passed at all: injected, by keyword
    assert wrapped("http://x/") is pool_of(form, pool).session()


@pytest.mark.parametrize("form", FORMS)
def test_session_none_by_keyword_counts_as_not_passed(
    form: str, pool: ThreadLocalSessionPool, default: ThreadLocalSessionPool
) -> None:
    @decorate(form, pool)
    def grab(url: str, session: requests.Session | None = None) -> requests.Session | None:
        return session

    assert grab("http://x/", session=None) is pool_of(form, pool).session()


def test_session_passed_by_position_to_a_method(pool: ThreadLocalSessionPool) -> None:
    class Client:
        @with_session(pool)
        def fetch(self, url: str, session: requests.Session | None = None) -> Any:
            return session

    client = Client()
    assert client.fetch("http://x/") is pool.session()
    with requests.Session() as mine:
        assert client.fetch("http://x/", mine) is mine
        assert Client.fetch(client, "http://x/", mine) is mine


def test_other_arguments_pass_through(pool: ThreadLocalSessionPool) -> None:
    @with_session(pool)
    def echo(
        a: int, /, b: int, *args: int, session: requests.Session | None = None, **kwargs: int
    ) -> tuple[object, ...]:
        return (a, b, args, kwargs, session)

    assert echo(1, 2, 3, 4, c=5) == (1, 2, (3, 4), {"c": 5}, pool.session())
    assert echo(1, b=2) == (1, 2, (), {}, pool.session())


def test_return_value_and_exceptions_pass_through(pool: ThreadLocalSessionPool) -> None:
    class Boom(Exception):
        pass

    @with_session(pool)
    def fail(*, session: requests.Session | None = None) -> None:
        raise Boom(session)

    with pytest.raises(Boom) as caught:
        fail()
    assert caught.value.args == (pool.session(),)


# --- introspection ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["bare", *FORMS])
def test_wraps_keeps_name_doc_and_signature(
    form: str, pool: ThreadLocalSessionPool, default: ThreadLocalSessionPool
) -> None:
    def fetch(url: str, *, retries: int = 2, session: requests.Session | None = None) -> int:
        """Fetch ``url`` and return the status code."""
        return 0

    wrapped = with_session(fetch) if form == "bare" else decorate(form, pool)(fetch)
    assert wrapped is not fetch
    assert wrapped.__name__ == "fetch"
    assert wrapped.__qualname__ == fetch.__qualname__
    assert wrapped.__module__ == __name__
    assert wrapped.__doc__ == "Fetch ``url`` and return the status code."
    assert inspect.unwrap(wrapped) is fetch
    assert inspect.signature(wrapped) == inspect.signature(fetch)
    assert str(inspect.signature(wrapped)) == str(inspect.signature(fetch))


# --- methods ------------------------------------------------------------------------------------


def make_client(pool: ThreadLocalSessionPool) -> Any:
    class Client:
        """Every way a class can hold a decorated function."""

        def __init__(self) -> None:
            self.name = "client"

        @with_session(pool)
        def method(self, *, session: requests.Session | None = None) -> tuple[object, object]:
            """A method."""
            return self, session

        @staticmethod
        @with_session(pool)
        def static_below(*, session: requests.Session | None = None) -> object:
            """Static, @with_session below @staticmethod."""
            return session

        @with_session(pool)
        @staticmethod
        def static_above(*, session: requests.Session | None = None) -> object:
            """Static, @with_session above @staticmethod."""
            return session

        @classmethod
        @with_session(pool)
        def class_below(cls, *, session: requests.Session | None = None) -> tuple[object, object]:
            """Class method, @with_session below @classmethod."""
            return cls, session

        @with_session(pool)
        @classmethod
        def class_above(cls, *, session: requests.Session | None = None) -> tuple[object, object]:
            """Class method, @with_session above @classmethod."""
            return cls, session

    return Client


def test_method(pool: ThreadLocalSessionPool) -> None:
    client_class = make_client(pool)
    client = client_class()
    assert client.method() == (client, pool.session())
    assert client_class.method(client) == (client, pool.session())
    assert client_class.method.__name__ == "method"
    assert client_class.method.__doc__ == "A method."
    assert list(inspect.signature(client.method).parameters) == ["session"]
    with requests.Session() as mine:
        assert client.method(session=mine) == (client, mine)


@pytest.mark.parametrize("name", ["static_below", "static_above"])
def test_static_method(pool: ThreadLocalSessionPool, name: str) -> None:
    client_class = make_client(pool)
    assert isinstance(inspect.getattr_static(client_class, name), staticmethod)
    for owner in (client_class, client_class()):
        function = getattr(owner, name)
        assert function() is pool.session()
        assert function.__name__ == name
        assert function.__doc__.startswith("Static, ")
        assert list(inspect.signature(function).parameters) == ["session"]
        with requests.Session() as mine:
            assert function(session=mine) is mine


@pytest.mark.parametrize("name", ["class_below", "class_above"])
def test_class_method(pool: ThreadLocalSessionPool, name: str) -> None:
    client_class = make_client(pool)
    assert isinstance(inspect.getattr_static(client_class, name), classmethod)
    for owner in (client_class, client_class()):
        function = getattr(owner, name)
        assert function() == (client_class, pool.session())
        assert function.__name__ == name
        assert function.__doc__.startswith("Class method, ")
        assert list(inspect.signature(function).parameters) == ["session"]
        with requests.Session() as mine:
            assert function(session=mine) == (client_class, mine)


# --- what cannot be decorated -------------------------------------------------------------------


def no_session(url: str) -> None:
    pass


def misspelled(url: str, *, sessions: requests.Session | None = None) -> None:
    pass


def only_args(*args: object) -> None:
    pass


def positional_only(url: str, session: requests.Session | None = None, /) -> None:
    pass


class Holder:
    def method_without_session(self, url: str) -> None:
        pass


@pytest.mark.parametrize(
    "function",
    [no_session, misspelled, only_args, positional_only, Holder.method_without_session],
)
@pytest.mark.parametrize("form", ["bare", *FORMS])
def test_function_that_cannot_take_session_is_refused_at_decoration(
    function: Callable[..., Any], form: str, pool: ThreadLocalSessionPool
) -> None:
    decorator = with_session if form == "bare" else decorate(form, pool)
    with pytest.raises(TypeError, match=re.escape(function.__qualname__)):
        decorator(function)


def test_refused_function_named_by_its_qualname(pool: ThreadLocalSessionPool) -> None:
    def inner(url: str) -> None:
        pass

    assert inner.__qualname__.endswith("<locals>.inner")
    with pytest.raises(TypeError, match=re.escape(inner.__qualname__)):
        with_session(pool)(inner)
    with pytest.raises(TypeError, match=re.escape("Holder.method_without_session")):
        with_session(pool)(Holder.method_without_session)


@pytest.mark.parametrize("kind", [staticmethod, classmethod])
def test_refused_inside_static_and_class_methods(
    kind: Callable[[Any], Any], pool: ThreadLocalSessionPool
) -> None:
    with pytest.raises(TypeError, match=re.escape(no_session.__qualname__)):
        with_session(pool)(kind(no_session))


def test_function_with_only_var_keyword_is_accepted(pool: ThreadLocalSessionPool) -> None:
    @with_session(pool)
    def grab(**kwargs: Any) -> Any:
        return kwargs

    assert grab() == {"session": pool.session()}
    assert grab(x=1) == {"x": 1, "session": pool.session()}
    with requests.Session() as mine:
        assert grab(session=mine) == {"session": mine}


def test_session_positional_or_keyword_is_accepted(pool: ThreadLocalSessionPool) -> None:
    @with_session(pool)
    def grab(session: requests.Session | None = None) -> Any:
        return session

    assert grab() is pool.session()


def test_session_without_default_is_accepted(pool: ThreadLocalSessionPool) -> None:
    @with_session(pool)
    def grab(url: str, *, session: requests.Session) -> requests.Session:
        return session

    # accepted at run time; for mypy, `session` needs a default (see typing_with_session.py)
    assert grab("http://x/") is pool.session()  # type: ignore[call-arg]


@pytest.mark.parametrize("value", [42, "pool", b"x", 1.5])
def test_with_session_of_a_non_function_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(value))):
        with_session(value)  # type: ignore[call-overload]


@pytest.mark.parametrize("value", [42, "pool", requests.Session])
def test_with_session_pool_keyword_of_a_non_pool_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match=re.escape(repr(value))):
        with_session(pool=value)  # type: ignore[call-overload]


def test_with_session_given_the_pool_twice_is_a_type_error(pool: ThreadLocalSessionPool) -> None:
    with pytest.raises(TypeError, match="pool"):
        with_session(pool, pool=pool)  # type: ignore[call-overload]


def test_decorated_function_is_reusable_as_partial(pool: ThreadLocalSessionPool) -> None:
    @with_session(pool)
    def grab(url: str, *, session: requests.Session | None = None) -> Any:
        return url, session

    bound = functools.partial(grab, "http://x/")
    assert bound() == ("http://x/", pool.session())
