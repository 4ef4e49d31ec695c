"""Building one session the way the pool's options say, beneath the user's own Session class."""

from __future__ import annotations

import copyreg
import logging
import os
from collections import OrderedDict
from http import cookiejar as cookielib
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import requests
from requests import cookies as _cookies
from requests import models as _models
from requests import sessions as _sessions
from requests import utils as _utils
from requests.cookies import RequestsCookieJar
from requests.structures import CaseInsensitiveDict

from ._adapter import PoolAdapter
from ._config import adapter_maxsize
from ._memo import MAX_KEY_LENGTH, Memo, Originals

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

# PreparedRequest.prepare and the steps it calls, and the helpers those call, by the names
# requests calls them through: the step shortcuts below are taken only while all of these are in
# force, with methods read on the PreparedRequest class in use (a subclass's override, a patch or
# an add-on's replacement of any of them takes requests' own path, where it is called).
_PREPARED = _models.PreparedRequest
_R_CHECK_HEADER = _models.check_header_validity  # type: ignore[attr-defined]  # untyped in types-requests
_R_AUTH_FROM_URL = _models.get_auth_from_url
_HEADER_VALIDATORS: dict[type, Any] = getattr(_utils, "HEADER_VALIDATORS", {})
_LEAN_PREPARE = Originals(
    [
        # prepare_url and what it calls, and the data they read
        *((_models, name) for name in ("parse_url", "requote_uri", "urlencode", "urlunparse")),
        *((_models, name) for name in ("to_native_string", "unicode_is_ascii", "to_key_val_list")),
        *((_utils, name) for name in ("unquote_unreserved", "quote", "UNRESERVED_SET")),
        # prepare_auth's look for user:password in the URL
        *((_models, "get_auth_from_url"), (_utils, "urlparse"), (_utils, "unquote")),
        # prepare_headers: check_header_validity, its helper and the validators they read
        *((_models, "check_header_validity"), (_models, "CaseInsensitiveDict")),
        *((_utils, name) for name in ("_validate_header_part", "HEADER_VALIDATORS")),
        *((_utils, name) for name in ("_HEADER_VALIDATORS_STR", "_HEADER_VALIDATORS_BYTE")),
        *((_HEADER_VALIDATORS, kind) for kind in (str, bytes)),  # read by requests 2.28
        # the merge of two empty cookie jars, and prepare_cookies of the empty result
        *((_sessions, name) for name in ("merge_cookies", "cookiejar_from_dict")),
        *((_sessions, "RequestsCookieJar"), (_cookies, "RequestsCookieJar")),
        *((RequestsCookieJar, name) for name in ("add_cookie_header", "update", "__iter__")),
        (RequestsCookieJar, "__len__"),
        *((_models, "get_cookie_header"), (_cookies, "MockRequest")),
        (_cookies, "_is_prepared"),  # requests 2.34's MockRequest calls it
    ],
    methods=(
        *("prepare", "prepare_url", "_encode_params", "_get_idna_encoded_host", "prepare_auth"),
        *("prepare_headers", "prepare_cookies"),
    ),
    base=_PREPARED,
)
_HEADER_VALUES = frozenset({str, bytes})
_PARAMS_DICTS = frozenset({dict, OrderedDict})

# prepare_url's answer for (url, params) and whether that URL carries user:password (what
# prepare_auth looks for), and the (name, value) headers check_header_validity has passed (str
# and bytes values apart: "v" and b"v" hash alike, and comparing them warns under python -b):
# pure functions of their keys, so one memo per process, bounded.
_KnownURL = tuple[str, bool]  # the prepared URL; whether it has user:password
_URLS: Memo[tuple[str, object], _KnownURL] = Memo()
_VALID_STR_HEADERS: Memo[tuple[str, str], None] = Memo()
_VALID_BYTES_HEADERS: Memo[tuple[str, bytes], None] = Memo()


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
        self._hosts: Memo[tuple[str, str | None], _HostEnv] = Memo()
        self._netrc: Memo[str, tuple[str, str] | None] = Memo()

    def host_env(self, netloc: str, url: str, no_proxy: str | None) -> _HostEnv:
        """Return the proxies and CA bundle requests would find for ``url``, kept per host."""
        key = (netloc, no_proxy)
        found = self._hosts.get(key)
        if found is None:
            environ = os.environ
            found = self._hosts.put(
                key,
                _HostEnv(
                    _REQUESTS_ENV_PROXIES(url, no_proxy=no_proxy),
                    environ.get("REQUESTS_CA_BUNDLE") or environ.get("CURL_CA_BUNDLE"),
                ),
            )
        return found

    def netrc_auth(self, netloc: str, url: str) -> tuple[str, str] | None:
        """``get_netrc_auth(url)``, remembered per host."""
        try:
            return self._netrc[netloc]
        except KeyError:
            pass
        return self._netrc.put(netloc, _REQUESTS_NETRC(url))


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


def _url_key(url: object, params: object) -> tuple[str, object] | None:
    """Key of prepare_url's answer: the URL and params it is a pure function of, or None."""
    if type(url) is not str or len(url) > MAX_KEY_LENGTH or not url.isascii():
        return None  # a non-ASCII host goes through IDNA encoding each time, as in requests
    if params is None or type(params) is str:
        return (url, params)
    if type(params) in _PARAMS_DICTS:
        items = tuple(params.items())  # type: ignore[attr-defined]  # a dict, checked above
        # Only str keys and values: 1 and True are equal keys but encode differently.
        if all(type(key) is str and type(value) is str for key, value in items):
            return (url, items)
    return None


def _prepare_steps(
    p: requests.PreparedRequest,
    empty_jar: RequestsCookieJar | None,
    method: Any,
    url: Any,
    headers: Any,
    files: Any,
    data: Any,
    params: Any,
    auth: Any,
    cookies: Any,
    hooks: Any,
    json: Any,
) -> None:
    """``p.prepare(...)`` step by step (requests 2.28 to 2.34), the pure steps from memos.

    prepare_url's result is a function of the URL and params only, prepare_auth with no auth
    only looks for user:password in that URL, check_header_validity only looks at the pair, and
    a jar without cookies adds no Cookie header: each is taken from a memo (or skipped). Called
    only while _LEAN_PREPARE is in force for ``type(p)``.
    """
    p.prepare_method(method)
    key = _url_key(url, params)
    known = None if key is None else _URLS.get(key)
    if known is None:
        p.prepare_url(url, params)  # raises for a URL requests refuses: never memoised
        if key is not None:
            known = _memo_url(key, p.url)
    else:
        p.url = known[0]
    _prepare_headers(p, headers)
    if cookies is empty_jar:
        # What add_cookie_header leaves on a jar without cookies: its time stamp.
        jar: Any = cookies  # cookielib's private attributes are untyped
        jar._policy._now = jar._now = int(cookielib.time.time())  # type: ignore[attr-defined]
        p._cookies = cookies  # type: ignore[attr-defined]  # requests' own attribute
    else:
        p.prepare_cookies(cookies)
    p.prepare_body(data, files, json)
    if not (auth is None and known is not None and not known[1]):
        p.prepare_auth(auth, url)
    p.prepare_hooks(hooks)


def _memo_url(key: tuple[str, object], prepared_url: Any) -> _KnownURL | None:
    """Remember prepare_url's answer, and whether get_auth_from_url finds user:password in it."""
    if len(prepared_url) > MAX_KEY_LENGTH:
        return None
    try:
        has_auth = any(_R_AUTH_FROM_URL(prepared_url))
    except Exception:  # noqa: BLE001  # prepare_auth will raise it, on requests' own path
        return None
    return _URLS.put(key, (prepared_url, has_auth))


def _prepare_headers(p: requests.PreparedRequest, headers: Any) -> None:
    """``p.prepare_headers(headers)``, checking each (name, value) pair once per process."""
    # PreparedRequest.prepare_headers (requests 2.28 to 2.34).
    m: Any = _models  # untyped in types-requests
    prepared = p.headers = CaseInsensitiveDict()
    if headers:
        for header in headers.items():
            name, value = header
            kind = type(value)
            if type(header) is tuple and type(name) is str and kind in _HEADER_VALUES:
                valid = _VALID_STR_HEADERS if kind is str else _VALID_BYTES_HEADERS
                if header not in valid:
                    _R_CHECK_HEADER(header)
                    if len(name) + len(value) <= MAX_KEY_LENGTH:
                        valid.put(header, None)
                prepared[name] = value  # to_native_string(name) is name for a str
            else:
                m.check_header_validity(header)
                prepared[m.to_native_string(name)] = value


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
        """Prepare as requests does: the netrc lookup from the snapshot, pure steps memoised."""
        if _Session.prepare_request is not _REQUESTS_PREPARE:
            return super().prepare_request(request)
        # Session.prepare_request (requests 2.28 to 2.34), through the names requests.sessions
        # uses, looked up now.
        s: Any = _sessions  # untyped in types-requests
        lean = _LEAN_PREPARE.in_force(s.PreparedRequest)
        cookies: Any = request.cookies or {}
        jar = self.cookies
        empty_jar = None
        if (
            lean
            and type(cookies) is dict
            and not cookies
            and type(jar) is RequestsCookieJar
            and not len(jar)
        ):
            # Neither the request nor the session has a cookie: requests' two merges make a new
            # empty RequestsCookieJar.
            merged_cookies = empty_jar = s.RequestsCookieJar()
        else:
            if not isinstance(cookies, cookielib.CookieJar):
                cookies = s.cookiejar_from_dict(cookies)
            merged_cookies = s.merge_cookies(s.merge_cookies(s.RequestsCookieJar(), jar), cookies)
        auth = request.auth
        if self.trust_env and not auth and not self.auth:
            env = self._ts_env
            netloc = None if env is None else _netloc(request.url)
            if netloc is None or s.get_netrc_auth is not _REQUESTS_NETRC:
                auth = s.get_netrc_auth(request.url)
            else:
                assert env is not None  # for mypy: netloc is None without a snapshot
                auth = env.netrc_auth(netloc, request.url)
        prepared: requests.PreparedRequest = s.PreparedRequest()
        arguments = {
            "method": request.method.upper(),
            "url": request.url,
            "files": request.files,
            "data": request.data,
            "json": request.json,
            "headers": merge_setting(request.headers, self.headers, s.CaseInsensitiveDict),
            "params": merge_setting(request.params, self.params),
            "auth": merge_setting(auth, self.auth),
            "cookies": merged_cookies,
            "hooks": s.merge_hooks(request.hooks, self.hooks),
        }
        if lean and type(prepared) is s.PreparedRequest:
            _prepare_steps(prepared, empty_jar, **arguments)
        else:
            prepared.prepare(**arguments)
        return prepared

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (or copied), it is a session of the factory's class with the state that class
        # gives (its own __getstate__ if it has one) and plain HTTPAdapters: the pool's timeout,
        # snapshot and lifecycle stay with the pool. Made as pickle makes a plain Session, with
        # object.__new__ and __setstate__ (no __init__, which may need arguments), through the
        # stdlib's copyreg, so loading it needs only the factory's class, not threadsession.
        state = self.__getstate__()  # type: ignore[attr-defined]  # Session's, untyped
        return (copyreg._reconstructor, (self._ts_base, object, None), state)  # type: ignore[attr-defined]


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
