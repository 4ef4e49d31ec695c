"""with_session: the decorator that hands a function the calling thread's session."""

from __future__ import annotations

import functools
import inspect
from typing import TYPE_CHECKING, Any, Callable, TypeVar, Union, overload

from ._pool import ThreadLocalSessionPool, default_pool

if TYPE_CHECKING:
    from typing_extensions import ParamSpec

    P = ParamSpec("P")

R = TypeVar("R")
_Wrappable = Union[Callable[..., Any], staticmethod, classmethod]  # type: ignore[type-arg]

__all__ = ["with_session"]


def _session_position(func: Callable[..., Any]) -> int | None:
    """Where ``session`` may come by position (None: keyword only); TypeError if it cannot come."""
    name = getattr(func, "__qualname__", repr(func))
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise TypeError(f"@with_session cannot read the signature of {name}: {exc}") from None
    for index, param in enumerate(params):
        if param.name == "session" and param.kind is not param.POSITIONAL_ONLY:
            return index if param.kind is param.POSITIONAL_OR_KEYWORD else None
    if any(param.kind is param.VAR_KEYWORD for param in params):
        return None
    raise TypeError(
        f"@with_session cannot decorate {name}: it takes no 'session' keyword argument; "
        f"add a parameter such as `*, session: requests.Session | None = None`"
    )


def _decorate(func: _Wrappable, pool: ThreadLocalSessionPool | None) -> Any:
    if isinstance(func, (staticmethod, classmethod)):
        return type(func)(_decorate(func.__func__, pool))
    if not callable(func):
        raise TypeError(f"@with_session decorates a function or method, got {func!r}")
    position = _session_position(func)
    session_of = default_pool if pool is None else (lambda: pool)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("session") is None and (position is None or len(args) <= position):
            kwargs["session"] = session_of().session()
        return func(*args, **kwargs)

    return wrapper


@overload
def with_session(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def with_session(
    pool: ThreadLocalSessionPool | None = None, /
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
@overload
def with_session(*, pool: ThreadLocalSessionPool) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def with_session(
    func_or_pool: Callable[..., Any] | ThreadLocalSessionPool | None = None,
    /,
    *,
    pool: ThreadLocalSessionPool | None = None,
) -> Any:
    """Pass the calling thread's Session to the decorated function as ``session=``.

    A session the caller passes (by keyword or by position) is used as given; ``session=None``
    counts as not passed. Keeps the function's name, docstring and signature; works on plain
    functions, methods, static and class methods. Safe from any thread: each thread gets its
    own Session from the pool (bare ``@with_session``: from ``default_pool()``).

    Example::

        @with_session(pool)
        def fetch(url: str, *, session: requests.Session | None = None) -> bytes:
            return session.get(url).content

    :param pool: the ThreadLocalSessionPool to take sessions from; default_pool() if omitted.
    :raises TypeError: at decoration time, if the function cannot take a ``session`` keyword
        (naming the function), or if the argument is neither a function nor a pool.
    """
    if isinstance(func_or_pool, ThreadLocalSessionPool) or func_or_pool is None:
        if func_or_pool is not None and pool is not None:
            raise TypeError("with_session takes the pool once: with_session(pool) or (pool=...)")
        chosen = func_or_pool or pool
        if chosen is not None and not isinstance(chosen, ThreadLocalSessionPool):
            raise TypeError(
                f"with_session(pool=...) takes a ThreadLocalSessionPool, got {chosen!r}"
            )
        return lambda func: _decorate(func, chosen)
    if pool is not None:
        raise TypeError("with_session(func, pool=...) is not a form: use @with_session(pool)")
    return _decorate(func_or_pool, None)
