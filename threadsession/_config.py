"""Option checks, the frozen checked options, and the sizing rule.

Every option is checked here, once, when a pool is made; the result is immutable so every
thread reads it without a lock.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import requests
from requests.adapters import BaseAdapter
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

__all__ = [
    "DEFAULT_POOLSIZE",
    "DEFAULT_TIMEOUT",
    "HOST_POOLS_FLOOR",
    "IDEMPOTENT_METHODS",
    "AdapterOptions",
    "Lifetime",
    "MountFactory",
    "Options",
    "TimeoutArg",
    "adapter_maxsize",
    "check_options",
    "hard_cap",
    "initial_maxsize",
    "positive_int",
]

#: requests' default for ``pool_connections`` and ``pool_maxsize``; the floor of the sizing rule.
DEFAULT_POOLSIZE = 10

#: The default ``timeout`` (seconds to connect, and between bytes read) of every request through a
#: session the pool made. requests has none, so a silent server hangs a worker forever.
DEFAULT_TIMEOUT = 30.0

TimeoutArg: TypeAlias = Union[float, "tuple[float | None, float | None]", Timeout, None]
MountFactory: TypeAlias = Callable[[], BaseAdapter]

#: Host pools each adapter keeps at least: past ``pool_connections`` hosts, requests' default LRU
#: would close a warm host pool and reopen it on the next request to that host.
HOST_POOLS_FLOOR = 100

#: The methods ``retry_stale=True`` sends again (RFC 9110 idempotent methods).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})

# The HTTPAdapter keyword arguments a ``mounts`` option dict may hold.
_ADAPTER_KEYS = ("pool_connections", "pool_maxsize", "pool_block", "max_retries", "pool_timeout")


@dataclass(frozen=True)
class AdapterOptions:
    """What the pool passes to each ``HTTPAdapter`` it builds."""

    pool_connections: int
    pool_maxsize: int | None  # as given; the size in force comes from the sizing rule
    pool_block: bool
    max_retries: int | Retry  # passed to HTTPAdapter as given, so an int means what it means there
    pool_timeout: float | None  # pool_block: seconds to wait for a free connection


@dataclass(frozen=True)
class Lifetime:
    """When a pooled connection is too old or idle too long to use, and which methods to resend."""

    max_connection_age: float | None
    keepalive_expiry: float | None
    retry_methods: frozenset[str]  # empty: retry_stale is off

    @property
    def expires(self) -> bool:
        """True if connections have an age or idle limit."""
        return self.max_connection_age is not None or self.keepalive_expiry is not None


@dataclass(frozen=True)
class Options:
    """The checked options of one ThreadLocalSessionPool."""

    shared: bool
    max_workers: int | None
    adapter: AdapterOptions
    lifetime: Lifetime
    timeout: TimeoutArg
    env_snapshot: bool
    headers: Mapping[str, str | bytes]
    mounts: Mapping[str, AdapterOptions | MountFactory]
    session_factory: Callable[[], requests.Session] | None


def positive_int(option: str, value: object, hint: str = "") -> int:
    # bool is a subclass of int: refuse True/False explicitly.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int >= 1, got {value!r}{hint}")
    if value < 1:
        raise ValueError(f"{option} must be >= 1, got {value!r}{hint}")
    return value


def _optional_positive_int(option: str, value: object, hint: str = "") -> int | None:
    return None if value is None else positive_int(option, value, hint)


def _bool(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{option} must be True or False, got {value!r}")
    return value


def _retries(option: str, value: object) -> int | Retry:
    if isinstance(value, Retry):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{option} must be an int >= 0 or a urllib3 Retry, got {value!r}")
    if value < 0:
        raise ValueError(f"{option} must be >= 0, got {value!r}")
    return value


def _seconds(option: str, value: object, given: object = None) -> float | None:
    """Check seconds; ``given`` is the whole value when ``value`` is part of it (a pair)."""
    if value is None:
        return None
    of = "" if given is None else f" in {given!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{option} must be a number of seconds > 0 or None, got {value!r}{of}")
    if not (value > 0 and math.isfinite(value)):  # refuses NaN too
        raise ValueError(
            f"{option} must be a finite number of seconds > 0, or None for no limit, "
            f"got {value!r}{of}"
        )
    return float(value)


def _timeout(value: object) -> TimeoutArg:
    if isinstance(value, Timeout):
        return value
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(
                f"timeout must be seconds, None, a (connect, read) pair or a urllib3 Timeout, "
                f"got a tuple of {len(value)}: {value!r}"
            )
        return (
            _seconds("timeout (connect)", value[0], value),
            _seconds("timeout (read)", value[1], value),
        )
    return _seconds("timeout", value)


def _headers(value: object) -> Mapping[str, str | bytes]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"headers must be a mapping of str to str or bytes, got {value!r}")
    for name, header in value.items():
        if not isinstance(name, str) or not isinstance(header, (str, bytes)):
            raise TypeError(
                f"headers must map str to str or bytes, got {name!r}: {header!r} in {value!r}"
            )
    return dict(value)


def _adapter_options(
    name: Callable[[str], str], given: Mapping[str, Any], base: AdapterOptions | None
) -> AdapterOptions:
    def pick(key: str) -> Any:
        return given[key] if key in given else getattr(base, key)

    hint = "; pass None for automatic sizing"
    pool_block = _bool(name("pool_block"), pick("pool_block"))
    pool_timeout = pick("pool_timeout")
    pool_timeout = _seconds(name("pool_timeout"), pool_timeout)
    if pool_timeout is not None and not pool_block:
        raise ValueError(
            f"{name('pool_timeout')} applies only with pool_block=True, "
            f"got {pool_timeout!r} with pool_block=False"
        )
    return AdapterOptions(
        pool_connections=positive_int(name("pool_connections"), pick("pool_connections")),
        pool_maxsize=_optional_positive_int(name("pool_maxsize"), pick("pool_maxsize"), hint),
        pool_block=pool_block,
        max_retries=_retries(name("max_retries"), pick("max_retries")),
        pool_timeout=pool_timeout,
    )


def _retry_methods(value: object) -> frozenset[str]:
    if isinstance(value, bool):
        return IDEMPOTENT_METHODS if value else frozenset()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(
            f"retry_stale must be True, False or a collection of method names "
            f"such as {{'GET', 'POST'}}, got {value!r}"
        )
    methods = list(value)
    for method in methods:
        if not (isinstance(method, str) and method.isalpha()):
            raise ValueError(
                f"retry_stale must hold HTTP method names, got {method!r} in {value!r}"
            )
    return frozenset(method.upper() for method in methods)


def _item_name(where: str, key: str) -> str:
    return f"{where}[{key!r}]"


def _mounts(value: object, base: AdapterOptions) -> Mapping[str, AdapterOptions | MountFactory]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"mounts must be a mapping of URL prefix to options, got {value!r}")
    checked: dict[str, AdapterOptions | MountFactory] = {}
    for prefix, spec in value.items():
        if not isinstance(prefix, str):
            raise TypeError(f"mounts keys must be URL prefixes (str), got {prefix!r}")
        if not prefix.lower().startswith(("http://", "https://")):
            raise ValueError(f"mounts keys must start with 'http://' or 'https://', got {prefix!r}")
        where = f"mounts[{prefix!r}]"
        if isinstance(spec, BaseAdapter):
            raise TypeError(
                f"{where} must be a dict of HTTPAdapter options or a callable returning a new "
                f"adapter, got the adapter instance {spec!r}; one instance shared by every "
                f"thread's session breaks per-thread isolation: pass its class or a lambda"
            )
        if isinstance(spec, Mapping):
            unknown = sorted(set(spec) - set(_ADAPTER_KEYS), key=repr)
            if unknown:
                raise ValueError(
                    f"{where} has unknown HTTPAdapter options {unknown!r}; "
                    f"accepted: {', '.join(_ADAPTER_KEYS)}"
                )
            checked[prefix] = _adapter_options(functools.partial(_item_name, where), spec, base)
        elif callable(spec):
            checked[prefix] = spec
        else:
            raise TypeError(
                f"{where} must be a dict of HTTPAdapter options or a callable returning a new "
                f"adapter, got {spec!r}"
            )
    return checked


def check_options(
    *,
    shared: object,
    max_workers: object,
    pool_connections: object,
    pool_maxsize: object,
    pool_block: object,
    max_retries: object,
    timeout: object,
    headers: object,
    mounts: object,
    session_factory: object,
    pool_timeout: object,
    max_connection_age: object,
    keepalive_expiry: object,
    retry_stale: object,
    env_snapshot: object,
) -> Options:
    """Check every option of ThreadLocalSessionPool; raise TypeError/ValueError naming it."""
    adapter = _adapter_options(
        str,
        {
            "pool_connections": pool_connections,
            "pool_maxsize": pool_maxsize,
            "pool_block": pool_block,
            "max_retries": max_retries,
            "pool_timeout": pool_timeout,
        },
        None,
    )
    if not (session_factory is None or callable(session_factory)):
        raise TypeError(
            f"session_factory must be a callable returning a requests.Session, "
            f"got {session_factory!r}"
        )
    return Options(
        shared=_bool("shared", shared),
        max_workers=_optional_positive_int("max_workers", max_workers),
        adapter=adapter,
        lifetime=Lifetime(
            max_connection_age=_seconds("max_connection_age", max_connection_age),
            keepalive_expiry=_seconds("keepalive_expiry", keepalive_expiry),
            retry_methods=_retry_methods(retry_stale),
        ),
        timeout=_timeout(timeout),
        env_snapshot=_bool("env_snapshot", env_snapshot),
        headers=_headers(headers),
        mounts=_mounts(mounts, adapter),
        session_factory=session_factory,
    )


# --- sizing: the one home of the rule (README "Sizing", API.md) ---------------------------------


def hard_cap(adapter: AdapterOptions) -> int | None:
    """Return the hard cap: ``pool_maxsize`` if given with ``pool_block=True``, else None.

    Then it is the size exactly: no floor of 10, no executor sizing, no growth on hand-back;
    threads wait (up to ``pool_timeout``) for one of that many connections.
    """
    return adapter.pool_maxsize if adapter.pool_block else None


def initial_maxsize(options: Options) -> int:
    """Return the pool_maxsize a pool starts from: max(10, pool_maxsize, shared: max_workers).

    A hard cap when there is one. Executors may raise it later, and hand-backs grow host pools
    past it (pool_block=False).
    """
    cap = hard_cap(options.adapter)
    if cap is not None:
        return cap
    workers = (options.max_workers or 0) if options.shared else 0
    return max(DEFAULT_POOLSIZE, options.adapter.pool_maxsize or 0, workers)


def adapter_maxsize(adapter: AdapterOptions, in_force: int) -> int:
    """Return the pool_maxsize of an adapter built from these options, given the pool's."""
    cap = hard_cap(adapter)
    return cap if cap is not None else max(in_force, adapter.pool_maxsize or 0)
