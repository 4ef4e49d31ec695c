"""pytest plugin: every ``requests.Session`` the run constructs is made by a pool.

Loaded with ``-p requests_suite.plugin`` by run.py's pool run. For the whole run,
``requests.Session`` and ``requests.sessions.Session`` (which ``requests.session()`` and
``requests.get()`` call) are a subclass of requests' own Session whose metaclass builds each
instance through a fresh ``ThreadLocalSessionPool(timeout=None, session_factory=...)``: the factory
constructs the requested class (the suite's own ``class X(requests.Session)`` subclasses included,
with their arguments), the pool adds its adapters, snapshot and lifecycle, and the caller gets the
pool's session. ``isinstance(s, requests.Session)`` holds, pickling finds the class by name. Each
pool is closed when the test that made it ends (after its fixtures), the rest at the end of the run.

A ``Session.__init__`` that runs on an instance the pool did not make (code holding requests'
original class) fails the test: it would be a plain session hiding inside the pool run.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pytest
import requests
import requests.sessions

from requests_suite._shared import fail_report
from threadsession import ThreadLocalSessionPool

if TYPE_CHECKING:
    from collections.abc import Iterator

_ORIGINAL: type[requests.Session] = requests.sessions.Session
_ORIGINAL_INIT = _ORIGINAL.__init__
_pools: list[ThreadLocalSessionPool] = []  # made since the last test ended
_bypassed: list[str] = []  # Session classes constructed without the pool, not yet reported
_made = [0]  # sessions made through a pool during the run


class _ThroughPool(type):
    """Metaclass: calling the class (or a subclass) asks a new pool for the session."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        def factory() -> requests.Session:
            session: requests.Session = type.__call__(cls, *args, **kwargs)
            return session

        pool = ThreadLocalSessionPool(timeout=None, session_factory=factory)
        _pools.append(pool)
        session = pool.session()
        _made[0] += 1
        return session


PoolMadeSession: type[requests.Session] = _ThroughPool(
    "Session",
    (_ORIGINAL,),
    {"__module__": "requests.sessions", "__qualname__": "Session", "__doc__": _ORIGINAL.__doc__},
)


@functools.wraps(_ORIGINAL_INIT)
def _checked_init(self: requests.Session, *args: Any, **kwargs: Any) -> None:
    if not isinstance(self, PoolMadeSession):
        _bypassed.append(f"constructed without the pool: {type(self).__qualname__}")
    _ORIGINAL_INIT(self, *args, **kwargs)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Swap the class in before the suite's conftest and modules import requests' names."""
    requests.Session = PoolMadeSession  # type: ignore[misc]
    requests.sessions.Session = PoolMadeSession  # type: ignore[misc]
    _ORIGINAL.__init__ = _checked_init  # type: ignore[method-assign]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close what is left and give requests its class back."""
    _close_pools()
    requests.Session = _ORIGINAL  # type: ignore[misc]
    requests.sessions.Session = _ORIGINAL  # type: ignore[misc]
    _ORIGINAL.__init__ = _ORIGINAL_INIT  # type: ignore[method-assign]


def _close_pools() -> None:
    pools = _pools[:]
    _pools.clear()
    for pool in pools:
        pool.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """Close the pools the test made once its fixtures are torn down."""
    yield
    _close_pools()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail the phase that constructed a session without the pool."""
    outcome: Any = yield
    if _bypassed:
        fail_report(outcome.get_result(), _bypassed)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many sessions the pools made (the proof the run went through them)."""
    terminalreporter.write_line(f"threadsession: {_made[0]} sessions made by pools")
