"""Building one session the way the pool's options say."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from ._adapter import PoolAdapter

if TYPE_CHECKING:
    from ._adapter import Lifeline
    from ._config import Options, TimeoutArg
    from ._stats import Counters

__all__ = ["build_session"]

# Session.request(method, url, params, data, headers, cookies, files, auth, timeout, ...): a
# timeout given by position is the 7th argument after url (requests 2.25 to 2.34).
_TIMEOUT_POSITION = 6


class _DefaultTimeout(requests.Session):
    """Mixed into a session's class: requests that pass no timeout get the pool's."""

    __slots__ = ()
    _ts_timeout: TimeoutArg

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """Send like requests.Session.request, with the pool's timeout when none is given."""
        if "timeout" not in kwargs and len(args) <= _TIMEOUT_POSITION:
            kwargs["timeout"] = self._ts_timeout
        return super().request(method, url, *args, **kwargs)


_timeout_classes: dict[type[requests.Session], type[requests.Session]] = {}


def _with_default_timeout(cls: type[requests.Session]) -> type[requests.Session]:
    made = _timeout_classes.get(cls)
    if made is None:
        # A subclass with no new slots has cls's layout, so a factory's session can switch to
        # it in place, and stays an instance of the factory's class.
        made = type(
            f"{cls.__name__}WithDefaultTimeout",
            (_DefaultTimeout, cls),
            {"__slots__": (), "__module__": __name__},
        )
        made = _timeout_classes.setdefault(cls, made)
    return made


def build_session(
    options: Options, counters: Counters, lifeline: Lifeline, maxsize: int
) -> requests.Session:
    """Make one session: the factory's or a plain one, with the pool's adapters and defaults.

    :raises TypeError: if ``session_factory`` returns something other than a requests.Session.
    """
    factory = options.session_factory
    session = requests.Session() if factory is None else factory()
    if not isinstance(session, requests.Session):
        raise TypeError(
            f"session_factory must return a requests.Session, got {session!r} from {factory!r}"
        )
    # The pool's adapters govern transport on http:// and https://; a factory wanting its own
    # adapter there passes it through mounts.
    mounts: dict[str, Any] = {"https://": options.adapter, "http://": options.adapter}
    mounts.update(options.mounts)
    for prefix, spec in mounts.items():
        if callable(spec):
            adapter = spec()
            if not isinstance(adapter, requests.adapters.BaseAdapter):
                session.close()
                raise TypeError(
                    f"mounts[{prefix!r}] must return a requests adapter, got {adapter!r}"
                )
        else:
            adapter = PoolAdapter(
                counters, lifeline, spec, max(maxsize, spec.pool_maxsize or 0), options.lifetime
            )
        replaced = session.adapters.get(prefix)
        session.mount(prefix, adapter)
        if replaced is not None:
            replaced.close()
    session.headers.update(options.headers)
    if options.timeout is not None:
        session.__class__ = _with_default_timeout(type(session))
        session._ts_timeout = options.timeout  # type: ignore[attr-defined]
    return session
