"""Building one session the way the pool's options say."""

from __future__ import annotations

import copy
import os
from http import cookiejar as cookielib
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlsplit

import requests
from requests import cookies as _cookies
from requests import sessions as _sessions
from requests.structures import CaseInsensitiveDict

from ._adapter import PoolAdapter
from ._config import adapter_maxsize

if TYPE_CHECKING:
    from ._adapter import Lifeline
    from ._config import Options, TimeoutArg
    from ._stats import Counters

__all__ = ["EnvSnapshot", "build_session"]

# Session.request(method, url, params, data, headers, cookies, files, auth, timeout, ...): a
# timeout given by position is the 7th argument after url (requests 2.25 to 2.34).
_TIMEOUT_POSITION = 6
# requests' own merge helpers (untyped in types-requests).
merge_setting: Callable[..., Any] = _sessions.merge_setting
merge_hooks: Callable[..., Any] = _sessions.merge_hooks
merge_cookies: Callable[..., Any] = _cookies.merge_cookies
cookiejar_from_dict: Callable[..., Any] = _cookies.cookiejar_from_dict
RequestsCookieJar = _cookies.RequestsCookieJar
_NO_DEFAULT: Any = object()  # the pool's timeout=None: requests pass through untouched
_CACHE_LIMIT = 4096  # distinct hosts remembered per snapshot before it starts over


class EnvSnapshot:
    """What requests reads from the environment on every request, read once per host.

    requests re-reads proxy variables (``os.environ`` scanned twice), ``no_proxy``,
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` and the netrc file for each request. For an
    unchanged environment the answers never change, so a snapshot keeps them, per host. The pool
    makes a new one on ``close_all()``. Safe from any thread: a race fills an entry twice with the
    same answer.
    """

    def __init__(self) -> None:
        self.ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        self._proxies: dict[tuple[str, str | None], dict[str, str]] = {}
        self._netrc: dict[str, tuple[str, str] | None] = {}

    def environ_proxies(self, url: str, no_proxy: str | None) -> dict[str, str]:
        """``requests.utils.get_environ_proxies(url, no_proxy)``, remembered per host and port."""
        key = (urlsplit(url).netloc, no_proxy)
        found = self._proxies.get(key)
        if found is None:
            found = requests.utils.get_environ_proxies(url, no_proxy=no_proxy)
            if len(self._proxies) >= _CACHE_LIMIT:
                self._proxies.clear()
            self._proxies[key] = found
        return found

    def netrc_auth(self, url: str) -> tuple[str, str] | None:
        """``requests.utils.get_netrc_auth(url)``, remembered per host."""
        key = urlsplit(url).netloc
        try:
            return self._netrc[key]
        except KeyError:
            pass
        found = requests.utils.get_netrc_auth(url)
        if len(self._netrc) >= _CACHE_LIMIT:
            self._netrc.clear()
        self._netrc[key] = found
        return found


class _PoolSession(requests.Session):
    """Mixed into the class of every session the pool makes: default timeout, env snapshot."""

    __slots__ = ()
    _ts_timeout: TimeoutArg
    _ts_env: EnvSnapshot | None

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """Send like requests.Session.request, with the pool's timeout when none is given."""
        if "timeout" not in kwargs and len(args) <= _TIMEOUT_POSITION:
            timeout = self._ts_timeout
            if timeout is not _NO_DEFAULT:
                kwargs["timeout"] = timeout
        return super().request(method, url, *args, **kwargs)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        """Merge as requests does, from the snapshot; ``session.verify`` beats the env bundle."""
        if verify is None and self.verify is not True:
            # requests #3829: REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE would replace a session.verify
            # the user set (a CA path, or False). Honour it; the env bundle still replaces True.
            verify = self.verify
        env = self._ts_env
        if env is None or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        # Session.merge_environment_settings with trust_env, reading env through the snapshot
        # (requests 2.25 to 2.34).
        no_proxy = proxies.get("no_proxy") if proxies is not None else None
        if proxies is not None:
            for key, value in env.environ_proxies(url, no_proxy).items():
                proxies.setdefault(key, value)
        if verify is True or verify is None:
            verify = env.ca_bundle or verify
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (or copied), it is a session of the factory's class with the same settings and
        # plain HTTPAdapters: the pool's timeout, snapshot and lifecycle stay with the pool.
        base = type(self).__mro__[2]  # (this class, _PoolSession, the factory's class, ...)
        state = {attr: getattr(self, attr, None) for attr in self.__attrs__}
        return (base, (), state)

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """Prepare as requests does; the netrc lookup comes from the snapshot."""
        env = self._ts_env
        if env is None or not self.trust_env or request.auth or self.auth:
            return super().prepare_request(request)
        auth = env.netrc_auth(request.url)
        if auth is not None:
            request = copy.copy(request)
            request.auth = auth
            return super().prepare_request(request)
        return self._prepare_without_netrc(request)

    def _prepare_without_netrc(self, request: requests.Request) -> requests.PreparedRequest:
        # Session.prepare_request when trust_env finds no netrc entry (requests 2.25 to 2.34).
        cookies = request.cookies or {}
        if not isinstance(cookies, cookielib.CookieJar):
            cookies = cookiejar_from_dict(cookies)
        merged_cookies = merge_cookies(merge_cookies(RequestsCookieJar(), self.cookies), cookies)
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=request.method.upper(),
            url=request.url,
            files=request.files,
            data=request.data,
            json=request.json,
            headers=merge_setting(request.headers, self.headers, dict_class=CaseInsensitiveDict),
            params=merge_setting(request.params, self.params),
            auth=None,  # neither the request nor the session has auth, and netrc had none
            cookies=merged_cookies,
            hooks=merge_hooks(request.hooks, self.hooks),
        )
        return prepared


_pool_classes: dict[type[requests.Session], type[requests.Session]] = {}


def _pool_class(cls: type[requests.Session]) -> type[requests.Session]:
    made = _pool_classes.get(cls)
    if made is None:
        # A subclass with no new slots has cls's layout, so a factory's session can switch to
        # it in place, and stays an instance of the factory's class.
        made = type(cls.__name__, (_PoolSession, cls), {"__slots__": (), "__module__": __name__})
        made = _pool_classes.setdefault(cls, made)
    return made


def build_session(
    options: Options,
    counters: Counters,
    lifeline: Lifeline,
    maxsize: int,
    env: EnvSnapshot | None,
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
                counters, lifeline, spec, adapter_maxsize(spec, maxsize), options.lifetime
            )
        replaced = session.adapters.get(prefix)
        session.mount(prefix, adapter)
        if replaced is not None:
            replaced.close()
    session.headers.update(options.headers)
    session.__class__ = _pool_class(type(session))
    session._ts_timeout = _NO_DEFAULT if options.timeout is None else options.timeout  # type: ignore[attr-defined]
    session._ts_env = env  # type: ignore[attr-defined]
    return session
