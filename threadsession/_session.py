"""Building one session the way the pool's options say, beneath the user's own Session class."""

from __future__ import annotations

import copy
import logging
import os
from collections import OrderedDict
from http import cookiejar as cookielib
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import requests
from requests import sessions as _sessions
from requests.structures import CaseInsensitiveDict

from ._adapter import PoolAdapter
from ._config import adapter_maxsize

if TYPE_CHECKING:
    from ._adapter import Lifeline
    from ._config import Options, TimeoutArg
    from ._stats import Counters

__all__ = ["EnvSnapshot", "build_session", "is_pool_session"]

logger = logging.getLogger(__name__)

# The real class, whatever a test later patches ``requests.Session`` with.
_Session = _sessions.Session
# requests' own versions of what the snapshot shortcuts, and of the helpers it calls through the
# names requests.sessions calls them by. The shortcuts are taken only while these are in force:
# a test's patch of any of them (mock.patch.object(requests.Session, ...), of
# requests.sessions.get_netrc_auth, ...) sends the call down requests' own path instead.
_REQUESTS_PREPARE = _Session.prepare_request
_REQUESTS_MERGE_ENV = _Session.merge_environment_settings
_REQUESTS_NETRC = _sessions.get_netrc_auth
_REQUESTS_ENV_PROXIES = _sessions.get_environ_proxies
_REQUESTS_MERGE_SETTING: Any = _sessions.merge_setting  # untyped in types-requests
# Exact types merge_setting's answer is known for without its Mapping and (requests 2.34)
# runtime-checkable Protocol isinstance checks: never Mappings, and the dicts requests makes.
_NOT_MAPPINGS = frozenset({bool, str, bytes, int, float, tuple})
_PLAIN_MAPPINGS = frozenset({dict, OrderedDict, CaseInsensitiveDict})
# Session.request(method, url, params, data, headers, cookies, files, auth, timeout, ...): a
# timeout given by position is the 7th argument after url (requests 2.28 to 2.34).
_TIMEOUT_POSITION = 6
_NO_DEFAULT: Any = object()  # the pool's timeout=None: requests pass through untouched
_CACHE_LIMIT = 4096  # distinct hosts remembered per snapshot before it starts over


class _HostEnv(NamedTuple):
    proxies: dict[str, str]  # get_environ_proxies(url, no_proxy)
    ca_bundle: str | None  # REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE (or None), read with them


class EnvSnapshot:
    """What requests reads from the environment on every request, read once per host.

    requests re-reads the proxy variables (``os.environ`` scanned twice), ``no_proxy``,
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` and the netrc file for each request. A snapshot reads
    them on the first request to each host (so an environment changed before that is seen) and
    keeps the answers. The pool makes a new one on ``close_all()``. Safe from any thread: a race
    fills an entry twice with the same answer.
    """

    def __init__(self) -> None:
        self._hosts: dict[tuple[str, str | None], _HostEnv] = {}
        self._netrc: dict[str, tuple[str, str] | None] = {}

    def host_env(self, netloc: str, url: str, no_proxy: str | None) -> _HostEnv:
        """Return the proxies and CA bundle requests would find for ``url``, kept per host."""
        key = (netloc, no_proxy)
        found = self._hosts.get(key)
        if found is None:
            environ = os.environ
            found = _HostEnv(
                _REQUESTS_ENV_PROXIES(url, no_proxy=no_proxy),
                environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE"),
            )
            if len(self._hosts) >= _CACHE_LIMIT:
                self._hosts.clear()
            self._hosts[key] = found
        return found

    def netrc_auth(self, netloc: str, url: str) -> tuple[str, str] | None:
        """``get_netrc_auth(url)``, remembered per host."""
        try:
            return self._netrc[netloc]
        except KeyError:
            pass
        found = _REQUESTS_NETRC(url)
        if len(self._netrc) >= _CACHE_LIMIT:
            self._netrc.clear()
        self._netrc[netloc] = found
        return found


def merge_setting(request_setting: Any, session_setting: Any, dict_class: Any = OrderedDict) -> Any:
    """Return what ``requests.sessions.merge_setting`` returns, cheaper for the usual types.

    For None, the scalars of verify/stream/cert and the plain dicts requests itself makes, the
    answer is computed here without the isinstance checks against ``Mapping`` and (requests 2.34)
    runtime-checkable Protocols that cost most of its time; any other type, and any patch of
    ``requests.sessions.merge_setting``, goes to requests' own function (property-tested equal).
    """
    merge: Any = _sessions.merge_setting  # untyped in types-requests
    if merge is not _REQUESTS_MERGE_SETTING:
        return merge(request_setting, session_setting, dict_class)
    if session_setting is None:
        return request_setting
    if request_setting is None:
        return session_setting
    request_type, session_type = type(request_setting), type(session_setting)
    if request_type in _NOT_MAPPINGS or session_type in _NOT_MAPPINGS:
        return request_setting
    if request_type not in _PLAIN_MAPPINGS or session_type not in _PLAIN_MAPPINGS:
        return merge(request_setting, session_setting, dict_class)
    merged = dict_class(list(session_setting.items()))
    merged.update(list(request_setting.items()))
    for key in [key for key, value in merged.items() if value is None]:
        del merged[key]
    return merged


def _netloc(url: object) -> str | None:
    """Return the cache key of a URL, or None where only requests' own path may answer."""
    if type(url) is not str:  # bytes, or a URL object requests str()s: its own path decides
        return None
    try:
        return urlsplit(url).netloc
    except ValueError:  # malformed: requests raises its own exception (InvalidURL) for it
        return None


class _PoolSession(_Session):
    """Beneath the user's class in every session the pool makes: default timeout, snapshot.

    Each method does what requests.Session's does, then calls through with ``super()``; the
    snapshot's shortcuts stand in for requests' own code only where it is proven equal (property
    tests against requests' results) and only while requests' versions are the ones in force.
    """

    __slots__ = ()
    _ts_base: type[requests.Session]  # the factory's class (set on each made class)
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
        netloc = None if env is None or not self.trust_env else _netloc(url)
        if (
            netloc is None
            or type(proxies) is not dict
            or _Session.merge_environment_settings is not _REQUESTS_MERGE_ENV
            or _sessions.get_environ_proxies is not _REQUESTS_ENV_PROXIES
        ):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        # Session.merge_environment_settings with trust_env on (requests 2.28 to 2.34).
        assert env is not None  # for mypy: netloc is None without a snapshot
        host = env.host_env(netloc, url, proxies.get("no_proxy"))
        for key, value in host.proxies.items():
            proxies.setdefault(key, value)
        if verify is True or verify is None:
            verify = host.ca_bundle or verify
        return {
            "proxies": merge_setting(proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """Prepare as requests does; the netrc lookup comes from the snapshot."""
        env = self._ts_env
        if env is None or not self.trust_env or request.auth or self.auth:
            return super().prepare_request(request)
        netloc = _netloc(request.url)
        if (
            netloc is None
            or _Session.prepare_request is not _REQUESTS_PREPARE
            or _sessions.get_netrc_auth is not _REQUESTS_NETRC
        ):
            return super().prepare_request(request)
        auth = env.netrc_auth(netloc, request.url)
        if auth is not None:
            request = copy.copy(request)
            request.auth = auth
            return super().prepare_request(request)
        return self._prepare_without_netrc(request)

    def _prepare_without_netrc(self, request: requests.Request) -> requests.PreparedRequest:
        # Session.prepare_request when trust_env finds no netrc entry (requests 2.28 to 2.34),
        # through the names requests.sessions uses, looked up now.
        s: Any = _sessions  # untyped in types-requests
        cookies: Any = request.cookies or {}
        if not isinstance(cookies, cookielib.CookieJar):
            cookies = s.cookiejar_from_dict(cookies)
        merged_cookies = s.merge_cookies(
            s.merge_cookies(s.RequestsCookieJar(), self.cookies), cookies
        )
        prepared: requests.PreparedRequest = s.PreparedRequest()
        prepared.prepare(
            method=request.method.upper(),
            url=request.url,
            files=request.files,
            data=request.data,
            json=request.json,
            headers=merge_setting(request.headers, self.headers, s.CaseInsensitiveDict),
            params=merge_setting(request.params, self.params),
            auth=merge_setting(request.auth, self.auth),
            cookies=merged_cookies,
            hooks=s.merge_hooks(request.hooks, self.hooks),
        )
        return prepared

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (or copied), it is a session of the factory's class with the state that class
        # gives (its own __getstate__ if it has one) and plain HTTPAdapters: the pool's timeout,
        # snapshot and lifecycle stay with the pool.
        state = self.__getstate__()  # type: ignore[attr-defined]  # Session's, untyped
        return (self._ts_base, (), state)


_pool_classes: dict[type[requests.Session], type[_PoolSession]] = {}


def _pool_class(cls: type[requests.Session]) -> type[_PoolSession]:
    made = _pool_classes.get(cls)
    if made is None:
        # The user's class first: (made, cls, ..., _PoolSession, requests.Session), so every
        # override of cls runs and its super() reaches us. No new slots: cls's layout, so the
        # factory's session switches to it in place and stays an instance of cls.
        namespace = {
            "__slots__": (),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "_ts_base": cls,
        }
        bases = (_PoolSession,) if cls is _Session else (cls, _PoolSession)
        made = type(cls.__name__, bases, namespace)
        made = _pool_classes.setdefault(cls, made)
    return made


def is_pool_session(session: object) -> bool:
    """Tell whether the pool built and manages ``session`` (not a mock handed out as is)."""
    return isinstance(session, _PoolSession)


def build_session(
    options: Options,
    counters: Counters,
    lifeline: Lifeline,
    maxsize: int,
    env: EnvSnapshot | None,
) -> requests.Session:
    """Make one session: the factory's or a plain one, with the pool's adapters and defaults.

    ``requests.Session`` is looked up now: a real subclass put there (``requests_cache``'s
    ``install_cache()``) is what the pool builds on; anything else (a test's
    ``mock.patch("requests.Session")``) is called and what it returns is handed out untouched.

    :raises TypeError: if ``session_factory`` returns something other than a requests.Session.
    """
    factory = options.session_factory
    if factory is None:
        cls = requests.Session
        if not (isinstance(cls, type) and issubclass(cls, _Session)):
            logger.debug("requests.Session is %r, not a class: handing out what it returns", cls)
            return cls()
        session = cls()
    else:
        session = factory()
    if not isinstance(session, _Session):
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
