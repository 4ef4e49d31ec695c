"""Checked by mypy, never run or collected: how ``@with_session`` code type-checks.

``ParamSpec`` cannot drop the injected ``session`` keyword, so a decorated function declares it
with a default: ``*, session: requests.Session | None = None``. Then every form of the decorator
keeps the signature, ``fetch(url)`` type-checks, and so does passing a session explicitly.
Run: ``mypy tests/typing_with_session.py``. Each ``type: ignore`` below is a call that must stay
an error; ``warn_unused_ignores`` (strict) fails the check if it ever stops being one.
"""

from __future__ import annotations

import requests
from typing_extensions import assert_type

from threadsession import ThreadLocalSessionPool, with_session


def forms(pool: ThreadLocalSessionPool, url: str) -> None:
    """Every form of the decorator on ``fetch(url: str, *, session=None) -> int``."""

    @with_session
    def bare(url: str, *, session: requests.Session | None = None) -> int:
        assert session is not None
        return session.get(url).status_code

    @with_session()
    def empty_call(url: str, *, session: requests.Session | None = None) -> int:
        assert session is not None
        return session.get(url).status_code

    @with_session(pool)
    def positional(url: str, *, session: requests.Session | None = None) -> int:
        assert session is not None
        return session.get(url).status_code

    @with_session(pool=pool)
    def keyword(url: str, *, session: requests.Session | None = None) -> int:
        assert session is not None
        return session.get(url).status_code

    with requests.Session() as mine:
        for fetch in (bare, empty_call, positional, keyword):
            assert_type(fetch(url), int)
            assert_type(fetch(url, session=mine), int)
            assert_type(fetch(url, session=None), int)
            assert_type(fetch(url=url), int)

    # The signature is kept, not widened to (*args: Any, **kwargs: Any) -> Any:
    bare(42)  # type: ignore[arg-type]
    positional()  # type: ignore[call-arg]
    keyword(url, timeout=3)  # type: ignore[call-arg]
    empty_call(url, session="s")  # type: ignore[arg-type]


def methods(pool: ThreadLocalSessionPool, url: str) -> None:
    """Methods, static and class methods keep their signatures too."""

    class Client:
        @with_session(pool)
        def fetch(self, url: str, *, session: requests.Session | None = None) -> int:
            assert session is not None
            return session.get(url).status_code

        @staticmethod
        @with_session(pool)
        def static_fetch(url: str, *, session: requests.Session | None = None) -> int:
            assert session is not None
            return session.get(url).status_code

        @with_session(pool)
        @staticmethod
        def static_above(url: str, *, session: requests.Session | None = None) -> int:
            assert session is not None
            return session.get(url).status_code

        @classmethod
        @with_session(pool)
        def class_fetch(cls, url: str, *, session: requests.Session | None = None) -> int:
            assert session is not None
            return session.get(url).status_code

        @with_session(pool)
        @classmethod
        def class_above(cls, url: str, *, session: requests.Session | None = None) -> int:
            assert session is not None
            return session.get(url).status_code

    client = Client()
    assert_type(client.fetch(url), int)
    assert_type(Client.static_fetch(url), int)
    assert_type(client.static_fetch(url), int)
    assert_type(Client.static_above(url), int)
    assert_type(Client.class_fetch(url), int)
    assert_type(client.class_fetch(url), int)
    assert_type(Client.class_above(url), int)
    client.fetch(42)  # type: ignore[arg-type]


def decorator_values(pool: ThreadLocalSessionPool) -> None:
    """What is not a form stays a type error."""
    with_session(42)  # type: ignore[call-overload]
    with_session(pool, pool=pool)  # type: ignore[call-overload]
