"""The lean request path's shortcuts return exactly what requests' own functions return."""

from __future__ import annotations

import gc
import inspect
import os
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Mapping
from unittest import mock
from urllib.parse import urlencode

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests import sessions
from requests.structures import CaseInsensitiveDict

from threadsession import ThreadLocalSessionPool
from threadsession._session import merge_setting


class _OtherMapping(Mapping):  # a Mapping requests accepts that the shortcut must hand back
    def __init__(self, data):
        self._data = dict(data)

    def __getitem__(self, key):
        return self._data[key]

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


keys = st.sampled_from(["Accept", "accept", "X-A", "x-a", "page", "q", "http", "https"])
values = st.one_of(st.none(), st.sampled_from(["1", "v", "http://proxy:1", ""]))
pairs = st.lists(st.tuples(keys, values), max_size=5)
mappings = st.one_of(
    pairs.map(dict),
    pairs.map(OrderedDict),
    pairs.map(CaseInsensitiveDict),
    pairs.map(_OtherMapping),
)
settings_values = st.one_of(
    st.none(),
    mappings,
    pairs,  # a list of pairs: not a Mapping, returned as the request's setting
    st.booleans(),
    st.sampled_from(["/ca.pem", "", b"x", 0, 1, 1.5, ("cert.pem", "key.pem"), ()]),
)


def _shape(value):
    """Type and items in order: equality of two merge results, CaseInsensitiveDict included."""
    if isinstance(value, Mapping):
        return type(value), list(value.items())
    return type(value), value


@settings(max_examples=1500, deadline=None)
@given(
    request_setting=settings_values,
    session_setting=settings_values,
    dict_class=st.sampled_from([OrderedDict, CaseInsensitiveDict, dict]),
)
def test_merge_setting_matches_requests(request_setting, session_setting, dict_class):
    try:
        expected = sessions.merge_setting(request_setting, session_setting, dict_class)
    except Exception as exc:  # noqa: BLE001  # the same exception, or the test fails
        with pytest.raises(type(exc)):
            merge_setting(request_setting, session_setting, dict_class)
        return
    got = merge_setting(request_setting, session_setting, dict_class)
    assert _shape(got) == _shape(expected)
    if not isinstance(expected, Mapping) or expected is request_setting:
        assert got is expected  # requests hands one of its arguments back: so do we


def test_a_patched_merge_setting_is_called(monkeypatch):
    calls = []

    def patched(request_setting, session_setting, dict_class=OrderedDict):
        calls.append((request_setting, session_setting))
        return "patched"

    monkeypatch.setattr(sessions, "merge_setting", patched)
    assert merge_setting(None, None) == "patched"
    with ThreadLocalSessionPool() as pool:
        merged = pool.session().merge_environment_settings(
            "http://127.0.0.1:1/", {}, None, None, None
        )
    assert merged == dict.fromkeys(("proxies", "stream", "verify", "cert"), "patched")
    assert calls


def _fast_path_environment(*, ca_bundle: bool = True):
    """No proxy variables and no netrc file: the snapshot's fast paths are the ones taken.

    ``ca_bundle=False`` also drops REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE, for a comparison with
    requests that must not meet the one deliberate difference (requests #3829, see README).
    """
    dropped = ("proxy",) if ca_bundle else ("proxy", "ca_bundle")
    environ = {k: v for k, v in os.environ.items() if not any(d in k.lower() for d in dropped)}
    environ["NETRC"] = "/nonexistent/netrc"
    return mock.patch.dict(os.environ, environ, clear=True)


@settings(max_examples=200, deadline=None)
@given(
    session_headers=pairs,
    request_headers=st.one_of(st.none(), pairs.map(dict)),
    session_params=pairs.map(dict),
    request_params=st.one_of(st.none(), pairs.map(dict), st.just("a=1&b=2")),
    proxies=pairs.map(dict),
    session_proxies=pairs.map(dict),
)
def test_prepared_requests_and_settings_match_requests(
    session_headers, request_headers, session_params, request_params, proxies, session_proxies
):
    url = "http://127.0.0.1:1/path"
    with _fast_path_environment(), ThreadLocalSessionPool() as pool, requests.Session() as plain:
        ours = pool.session()
        results = []
        for session in (ours, plain):
            session.headers.update(dict(session_headers))
            session.params = dict(session_params)
            session.proxies = dict(session_proxies)
            request = requests.Request("GET", url, headers=request_headers, params=request_params)
            prepared = session.prepare_request(request)
            merged = session.merge_environment_settings(url, dict(proxies), None, None, None)
            results.append(
                (prepared.url, list(prepared.headers.items()), _shape(merged["proxies"]))
            )
    assert results[0] == results[1]


# Requests of every shape, for the step shortcuts of prepare_request (URL memo, header checks,
# cookie-less jar, auth from the URL): each is prepared twice (the second time from the memos)
# by a pool session and by a plain requests.Session, and every part of the results compared.
url_parts = st.tuples(
    st.sampled_from(["", "  "]),
    st.sampled_from(["http://", "https://", "HTTP://", "", "ftp://"]),
    st.sampled_from(["", "user@", "user:pass@", "us%40er:p%3Ass@", ":@"]),
    st.sampled_from(
        ["example.com", "EXAMPLE.com", "127.0.0.1", "[::1]", "bücher.de", "*.example.com", ".x", ""]
    ),
    st.sampled_from(["", ":8080", ":0", ":99999", ":abc"]),
    st.sampled_from(["", "/", "/a b", "/%7Euser", "/ü", "/a/../b", "/%zz"]),
    st.sampled_from(["", "?a=1", "?a=1&b=%20", "?ü=ü"]),
    st.sampled_from(["", "#frag", "#a b"]),
)
shaped_urls = st.one_of(
    url_parts.map("".join),
    st.sampled_from(["mailto:a@example.com", "data:,x", "http://[::1", b"http://example.com/b"]),
)
request_params = st.one_of(
    st.none(),
    st.sampled_from(["a=1&b=2", "", b"x=1"]),
    st.dictionaries(
        st.sampled_from(["a", "b", "ü"]),
        st.one_of(
            st.sampled_from(["1", "", "x y", "ü"]), st.none(), st.just(["1", "2"]), st.just(1)
        ),
        max_size=3,
    ),
    st.just([("a", "1"), ("a", "2")]),
)
header_values = st.sampled_from(["v", " leading", "a\nb", "", b"bytes", 1, "é"])
request_headers = st.one_of(
    st.none(), st.dictionaries(st.sampled_from(["X-A", "x-a", "Accept", "Bad Name"]), header_values)
)
bodies = st.sampled_from([None, b"raw", "text", {"k": "v"}, [("k", "1"), ("k", "2")], {}])


def _stamps(jar) -> tuple[bool, bool]:
    """Whether cookielib stamped the jar (and its policy) with the time, as it does when read."""
    return hasattr(jar, "_now"), hasattr(jar._policy, "_now")


def _prepared_state(p: requests.PreparedRequest) -> tuple:
    cookies = sorted((c.name, c.value, c.domain, c.path) for c in p._cookies)
    hooks = {event: list(functions) for event, functions in p.hooks.items()}
    return (
        p.method, p.url, list(p.headers.items()), p.body, hooks, cookies, p._body_position,
        _stamps(p._cookies),
    )  # fmt: skip


def _prepare_or_error(session: requests.Session, request: requests.Request) -> tuple:
    try:
        return ("ok", _prepared_state(session.prepare_request(request)))
    except Exception as exc:  # noqa: BLE001  # the same exception and message, or the test fails
        return ("raised", type(exc), str(exc))


def _hook(response, *args, **kwargs):
    return response


@settings(max_examples=600, deadline=None)
@given(
    url=shaped_urls,
    params=request_params,
    session_params=st.sampled_from([{}, {"s": "1"}]),
    headers=request_headers,
    session_headers=st.sampled_from([{}, {"X-S": "1"}, {"Accept": None}]),
    request_cookies=st.sampled_from([None, {}, {"c": "1"}]),
    session_cookie=st.booleans(),
    auth=st.sampled_from([None, ("u", "p"), ()]),
    session_auth=st.sampled_from([None, ("s", "t")]),
    hooks=st.sampled_from([None, {"response": _hook}, {"response": [_hook, _hook]}]),
    method=st.sampled_from(["get", "POST", "HEAD"]),
    data=bodies,
    json=st.sampled_from([None, {"j": 1}]),
    trust_env=st.booleans(),
)
def test_prepare_request_steps_match_requests(
    url, params, session_params, headers, session_headers, request_cookies, session_cookie, auth,
    session_auth, hooks, method, data, json, trust_env,
):  # fmt: skip
    with _fast_path_environment(), ThreadLocalSessionPool() as pool, requests.Session() as plain:
        results = []
        for session in (pool.session(), plain):
            session.trust_env = trust_env
            session.params = dict(session_params)
            session.headers.update(session_headers)
            session.auth = session_auth
            if session_cookie:
                session.cookies.set("s", "1", domain="example.com")
            request = requests.Request(
                method, url, headers=headers, params=params, cookies=request_cookies, auth=auth,
                hooks=hooks, data=data, json=json,
            )  # fmt: skip
            results.append([_prepare_or_error(session, request) for _ in range(2)])
    ours, expected = results
    assert ours == expected


# Every helper the step shortcuts stand in for, by the name requests calls it through: patched
# (as a test or an add-on would), it must be what pool sessions call.
_PATCHABLE = [
    *((requests.models, name) for name in ("parse_url", "requote_uri", "get_auth_from_url")),
    *((requests.models, name) for name in ("check_header_validity", "get_cookie_header")),
    *((requests.models, name) for name in ("urlencode", "urlunparse", "to_native_string")),
    *((requests.models, name) for name in ("unicode_is_ascii", "to_key_val_list")),
    *((requests.utils, name) for name in ("unquote_unreserved", "quote", "urlparse", "unquote")),
    *((requests.utils, name) for name in ("_validate_header_part",)),
    (requests.sessions, "merge_cookies"),
    (requests.sessions, "cookiejar_from_dict"),
    (requests.cookies, "MockRequest"),
    *((requests.cookies, name) for name in ("_is_prepared",) if hasattr(requests.cookies, name)),
    (requests.cookies.RequestsCookieJar, "add_cookie_header"),
    (requests.cookies.RequestsCookieJar, "update"),
    *((requests.models.PreparedRequest, name) for name in ("prepare", "prepare_url")),
    *((requests.models.PreparedRequest, name) for name in ("_encode_params", "prepare_auth")),
    *((requests.models.PreparedRequest, name) for name in ("prepare_headers", "prepare_cookies")),
]


@pytest.mark.parametrize(("owner", "name"), _PATCHABLE, ids=[n for _, n in _PATCHABLE])
def test_a_patched_step_helper_is_called(owner, name):
    url = "http://example.com/path"
    params = {"q": "a b"}
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        session = pool.session()
        session.prepare_request(requests.Request("GET", url, params=params))  # memos filled
        original = getattr(owner, name)
        if isinstance(inspect.getattr_static(owner, name), staticmethod):
            spy = mock.MagicMock(side_effect=original)
            patch = mock.patch.object(owner, name, staticmethod(spy))
        else:
            patch = mock.patch.object(owner, name, autospec=True, side_effect=original)
        with patch as patched:
            spy = getattr(patched, "__func__", patched)  # the staticmethod's mock, or autospec's
            prepared = session.prepare_request(requests.Request("GET", url, params=params))
            pool_calls = spy.call_count
            spy.reset_mock()
            plain.prepare_request(requests.Request("GET", url, params=params))
            assert pool_calls == spy.call_count, f"{name}: called {pool_calls}, requests calls it"
        assert prepared.url == f"{url}?q=a+b"


def test_an_answer_made_under_a_patch_is_not_remembered():
    url = "http://example.com/unpatched"
    with ThreadLocalSessionPool() as pool:
        session = pool.session()

        def patched(*args, **kwargs):
            return "patched=1"

        with mock.patch.object(requests.models, "urlencode", patched):
            first = session.prepare_request(requests.Request("GET", url, params={"q": "1"}))
        again = session.prepare_request(requests.Request("GET", url, params={"q": "1"}))
    assert (first.url, again.url) == (f"{url}?patched=1", f"{url}?q=1")


def test_a_cookie_jar_subclass_put_in_requests_is_used():
    class Consent(requests.cookies.RequestsCookieJar):
        def add_cookie_header(self, request):
            request.add_unredirected_header("Cookie", "consent=yes")

    url = "http://example.com/"
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        ours = pool.session()
        with mock.patch.object(requests.sessions, "RequestsCookieJar", Consent):
            headers = [
                s.prepare_request(requests.Request("GET", url)).headers for s in (ours, plain)
            ]
    assert [h.get("Cookie") for h in headers] == ["consent=yes", "consent=yes"]


def test_cookies_are_merged_before_the_netrc_lookup_as_in_requests():
    def netrc(url, raise_errors=False):
        raise RuntimeError("netrc looked up")

    def bad_cookies(*args, **kwargs):
        raise ValueError("bad cookies")

    request = requests.Request("GET", "http://example.com/", cookies={"a": "1"})
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        sessions = (pool.session(), plain)
        with (
            mock.patch.object(requests.sessions, "get_netrc_auth", netrc),
            mock.patch.object(requests.sessions, "cookiejar_from_dict", bad_cookies),
        ):
            for session in sessions:
                with pytest.raises(ValueError, match="bad cookies"):
                    session.prepare_request(request)


def test_str_and_bytes_header_values_are_never_compared(tmp_path):
    # "v" and b"v" hash alike: a memo mixing them would compare them, which python -bb turns into
    # an error (plain requests never compares them).
    code = """if True:
        import requests, threadsession
        with threadsession.ThreadLocalSessionPool() as pool:
            for value in ("v", b"v", "v"):
                r = requests.Request("GET", "http://example.com/", headers={"X": value})
                assert pool.session().prepare_request(r).headers["X"] == value
        print("ok")
    """
    done = subprocess.run(
        [sys.executable, "-bb", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "ok", "")


def test_long_urls_and_header_values_are_not_remembered():
    from threadsession._memo import MAX_KEY_LENGTH
    from threadsession._session import _URLS, _VALID_STR_HEADERS

    url = "http://example.com/" + "a" * MAX_KEY_LENGTH
    value = "v" * MAX_KEY_LENGTH
    with ThreadLocalSessionPool() as pool:
        prepared = pool.session().prepare_request(
            requests.Request("GET", url, headers={"X-Long": value})
        )
    assert prepared.url == url
    assert prepared.headers["X-Long"] == value
    assert not any(key[0] == url for key in list(_URLS))
    assert ("X-Long", value) not in _VALID_STR_HEADERS


class _EqualProxy:
    """A wrapper that compares equal to what it wraps, as wrapt's proxies (APM agents) do."""

    def __init__(self, wrapped):
        self.wrapped, self.calls = wrapped, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.wrapped(*args, **kwargs)

    def __eq__(self, other):
        return other is self.wrapped or other is self

    __hash__ = object.__hash__


def test_a_replacement_that_compares_equal_to_requests_own_is_still_called():
    url = "http://example.com/proxied"
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        ours = pool.session()
        ours.prepare_request(requests.Request("GET", url))  # memos filled
        calls = []
        for session in (ours, plain):
            proxy = _EqualProxy(requests.models.parse_url)
            assert proxy == requests.models.parse_url
            with mock.patch.object(requests.models, "parse_url", proxy):
                session.prepare_request(requests.Request("GET", url))
            calls.append(proxy.calls)
    assert calls == [1, 1]


def test_a_non_ascii_host_is_idna_encoded_on_every_request_as_in_requests():
    url = "http://bücher.example/"
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        ours = pool.session()
        ours.prepare_request(requests.Request("GET", url))
        counts = []
        with mock.patch("idna.encode", side_effect=__import__("idna").encode) as spy:
            for session in (ours, plain):
                spy.reset_mock()
                prepared = session.prepare_request(requests.Request("GET", url))
                counts.append((spy.call_count, prepared.url))
    assert counts[0] == counts[1]
    assert counts[0][0] >= 1


def test_patched_data_the_memoised_steps_read_is_seen():
    """requests.utils' UNRESERVED_SET and header validators, patched after the memos filled."""
    import re

    url = "http://example.com/%41"
    strict = re.compile(r"^$")
    if hasattr(requests.utils, "_HEADER_VALIDATORS_STR"):  # requests 2.31+
        name_re = requests.utils._HEADER_VALIDATORS_STR[0]
        validators = mock.patch.object(requests.utils, "_HEADER_VALIDATORS_STR", (name_re, strict))
    else:  # requests 2.28 to 2.30 read a dict, patched in place
        name_re = requests.utils.HEADER_VALIDATORS[str][0]
        validators = mock.patch.dict(requests.utils.HEADER_VALIDATORS, {str: (name_re, strict)})
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        ours = pool.session()
        ours.prepare_request(requests.Request("GET", url))
        results = []
        for session in (ours, plain):
            with mock.patch.object(requests.utils, "UNRESERVED_SET", frozenset()):
                unreserved = session.prepare_request(requests.Request("GET", url)).url
            with validators, pytest.raises(requests.exceptions.InvalidHeader) as refused:
                session.prepare_request(requests.Request("GET", url))
            results.append((unreserved, str(refused.value)))
    assert results[0] == results[1]
    assert results[0][0] == url  # %41 stays quoted with no unreserved characters


class _Pairs:
    """Headers that are not a Mapping, whose items are lists: requests takes them as they are."""

    def items(self):
        return [["X-A", "1"], ["X-B", b"2"]]


def test_header_items_that_are_not_tuples():
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        results = [
            _prepare_or_error(
                session, requests.Request("GET", "http://example.com/", headers=_Pairs())
            )
            for session in (pool.session(), plain)
        ]
    assert results[0] == results[1]
    assert results[0][0] == "ok"


def test_memo_starts_over_when_full():
    from threadsession._memo import _LIMIT, Memo

    memo: Memo[int, int] = Memo()
    for key in range(_LIMIT):
        memo.put(key, key)
    assert len(memo) == _LIMIT
    memo.put(-1, -1)
    assert dict(memo) == {-1: -1}


# PoolAdapter's shortcuts: request_url from a memo when no proxy applies, build_response without
# cookielib when the response sets no cookie. Compared with requests' HTTPAdapter.
@settings(max_examples=400, deadline=None)
@given(
    url=shaped_urls.filter(lambda u: isinstance(u, str)),
    proxies=st.sampled_from(
        [None, {}, {"http": "http://p:1"}, {"https": "http://p:1"}, {"all": "socks5://p:1"}]
    ),
)
def test_request_url_matches_requests(url, proxies):
    from requests.adapters import HTTPAdapter

    from threadsession._adapter import PoolAdapter

    prepared = requests.PreparedRequest()
    prepared.url, prepared.method = url, "GET"  # as prepared, whatever prepare_url would say
    with ThreadLocalSessionPool() as pool:
        ours = pool.session().get_adapter("http://x/")
        assert isinstance(ours, PoolAdapter)
        answers = []
        for adapter in (ours, ours, HTTPAdapter()):
            try:
                answers.append(("ok", adapter.request_url(prepared, proxies)))
            except Exception as exc:  # noqa: BLE001  # the same exception, or the test fails
                answers.append(("raised", type(exc), str(exc)))
    assert answers[0] == answers[1] == answers[2]


def _response_state(response: requests.Response) -> tuple:
    # The server's clock moves between two responses: Date values and Max-Age expiries are
    # compared as present or not, everything else as is.
    def jar(cookies):
        return sorted((c.name, c.value, c.domain, c.path, c.expires is None) for c in cookies)

    headers = [(k, "<date>" if k.lower() == "date" else v) for k, v in response.headers.items()]
    return (
        response.status_code, headers, response.encoding, response.url,
        response.reason, response.content, jar(response.cookies), type(response.raw),
        response.request.url, response.history, _stamps(response.cookies),
    )  # fmt: skip


@pytest.mark.parametrize(
    "query",
    ["", "?cookie=a=1", "?cookie=a=1;%20Path=/;%20Max-Age=60", "?status=404&cookie=b=2", "?size=5"],
)
def test_build_response_matches_requests(server, query):
    url = f"{server.url}/{query}"
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        ours = pool.session()
        got = [_response_state(ours.get(url)) for _ in range(2)]
        expected = [_response_state(plain.get(url)) for _ in range(2)]
        assert got == expected
        assert sorted(ours.cookies.items()) == sorted(plain.cookies.items())
        assert bool(ours.cookies) == ("cookie=" in query)  # the cookie path still ran


_ADAPTER_PATCHABLE = [
    (requests.adapters, "select_proxy"),
    (requests.adapters, "urlparse"),
    *((requests.adapters, name) for name in ("_is_prepared",) if hasattr(requests.adapters, name)),
    (requests.utils, "urlparse"),
    (requests.models, "urlsplit"),
    (requests.adapters, "extract_cookies_to_jar"),
    (requests.cookies, "MockRequest"),
    (requests.cookies, "MockResponse"),
    (requests.cookies.RequestsCookieJar, "extract_cookies"),
    (requests.cookies.RequestsCookieJar, "make_cookies"),
    (requests.adapters.HTTPAdapter, "request_url"),
    (requests.adapters.HTTPAdapter, "build_response"),
    (requests.models.PreparedRequest, "path_url"),
]


@pytest.mark.parametrize(
    ("owner", "name"), _ADAPTER_PATCHABLE, ids=[n for _, n in _ADAPTER_PATCHABLE]
)
def test_a_patched_adapter_helper_is_called(server, owner, name):
    url = f"{server.url}/"
    with ThreadLocalSessionPool() as pool, requests.Session() as plain:
        session = pool.session()
        for s in (session, plain):
            s.trust_env = False  # the environment snapshot's own reads are not counted here
            s.get(url)  # the memos hold this request, both sessions are connected
        original = getattr(owner, name)
        if isinstance(original, property):
            spy = mock.PropertyMock(side_effect=lambda: "/")
            patch = mock.patch.object(owner, name, new=spy)
        else:
            patch = mock.patch.object(owner, name, autospec=True, side_effect=original)
        counts = []
        with patch as patched:
            spy = spy if isinstance(original, property) else patched
            for s in (session, plain):
                spy.reset_mock()
                assert s.get(url).status_code == 200
                counts.append(spy.call_count)
            # The mock holds the responses it saw, and through them the sockets' makefile()
            # objects, which keep a closed socket's descriptor open: let them go.
            spy.reset_mock()
        assert counts[0] == counts[1] > 0, f"{name}: called {counts[0]}, requests {counts[1]}"


# Nothing a shortcut remembers belongs to a session: a change to any of the session's state
# between two requests shows in the next one, as in requests. Each example applies the same
# sequence of changes to a pool session and a plain one, preparing a request after each.
def _set_header(s):
    s.headers["X-Changed"] = "1"


def _drop_header(s):
    s.headers.pop("Accept", None)


def _set_cookie(s):
    s.cookies.set("c", "1", domain="example.com")


def _clear_cookies(s):
    s.cookies.clear()


def _set_params(s):
    s.params = {"p": "1"}


def _set_auth(s):
    s.auth = ("u", "p")


def _clear_auth(s):
    s.auth = None


def _set_hook(s):
    s.hooks["response"].append(_hook)


def _set_proxies(s):
    s.proxies = {"http": "http://127.0.0.1:1"}


def _set_verify(s):
    s.verify = False


def _set_cert(s):
    s.cert = "/client.pem"


def _toggle_trust_env(s):
    s.trust_env = not s.trust_env


def _mount(s):
    s.mount("http://example.com/special", requests.adapters.HTTPAdapter())


_CHANGES = [
    _set_header, _drop_header, _set_cookie, _clear_cookies, _set_params, _set_auth, _clear_auth,
    _set_hook, _set_proxies, _set_verify, _set_cert, _toggle_trust_env, _mount,
]  # fmt: skip
_CHANGE_URLS = [
    "http://example.com/special/x",
    "http://u:p@example.com/a?b=1",
    "https://example.com/",
]


@settings(max_examples=150, deadline=None)
@given(changes=st.lists(st.sampled_from(_CHANGES), max_size=8), url=st.sampled_from(_CHANGE_URLS))
def test_every_change_to_a_session_shows_in_its_next_request(changes, url):
    with (
        _fast_path_environment(ca_bundle=False),
        ThreadLocalSessionPool() as pool,
        requests.Session() as plain,
    ):
        ours = pool.session()
        seen = []
        for session in (ours, plain):
            states = []
            for change in [None, *changes]:
                if change is not None:
                    change(session)
                prepared = session.prepare_request(requests.Request("GET", url))
                merged = session.merge_environment_settings(prepared.url, {}, None, None, None)
                adapter = type(session.get_adapter(prepared.url)).__name__
                states.append((_prepared_state(prepared), sorted(merged.items()), adapter))
            seen.append(states)
    ours_states, plain_states = seen
    # The pool's own adapter is mounted where requests has its HTTPAdapter.
    plain_states = [(p, m, "PoolAdapter" if a == "HTTPAdapter" else a) for p, m, a in plain_states]
    mounted = [(p, m, a) for p, m, a in ours_states]
    assert [s[:2] for s in mounted] == [s[:2] for s in plain_states]
    assert [s[2] for s in mounted] == [
        "HTTPAdapter" if _mount in changes[: i] and url.startswith("http://example.com/special")
        else "PoolAdapter"
        for i in range(len(changes) + 1)
    ]  # fmt: skip


# Redirects, against the real server: resolve_redirects rebuilds each hop from a copy of the
# prepared request (method, body, auth, cookies and proxies), and every response it follows goes
# through the pool adapter's build_response. Each example sends the same request through the same
# chain of hops with a pool session and a plain one, and compares every hop and the jar after.
hops = st.lists(
    st.tuples(
        st.sampled_from([301, 302, 303, 307, 308]),
        st.sampled_from(["absolute", "relative", "other host"]),
        st.sampled_from([None, "r=1", "r=2; Path=/; Max-Age=60", "gone=1; Max-Age=0"]),
    ),
    max_size=3,
)


def _chain(base: str, other: str, chain: list, last: str) -> str:
    """The first hop's URL; each hop's reply redirects to the next, the last replies ``last``."""
    url = f"{base}/end?{last}"
    for status, form, cookie in reversed(chain):
        host = other if form == "other host" else base
        query = {"status": str(status), "location": url}
        if form == "relative":
            query["location"] = url.split(base, 1)[1] if url.startswith(base) else url
        if cookie:
            query["cookie"] = cookie
        url = f"{host}/hop?{urlencode(query)}"
    return url


def _hop_state(r: requests.Response) -> tuple:
    sent = r.request
    return (
        r.status_code, r.url, sent.method, sent.url, sorted(sent.headers.items()), sent.body,
        sorted(r.cookies.items()), r.headers.get("Location"),
    )  # fmt: skip


def _follow(session: requests.Session, method: str, url: str, **kwargs) -> tuple:
    try:
        response = session.request(method, url, **kwargs)
    except requests.exceptions.RequestException as exc:
        if exc.response is not None:  # TooManyRedirects carries the last hop, still open
            exc.response.close()
        return ("raised", type(exc), str(exc).replace(url, "<url>"))
    with response:
        return ("ok", [_hop_state(r) for r in (*response.history, response)])


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chain=hops,
    last=st.sampled_from(["status=200", "status=404", "status=200&cookie=end=1"]),
    method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
    data=st.sampled_from([None, b"raw", {"k": "v"}]),
    auth=st.sampled_from([None, ("u", "p")]),
    request_cookies=st.sampled_from([None, {"c": "1"}]),
    session_cookie=st.booleans(),
    session_header=st.booleans(),
    max_redirects=st.sampled_from([30, 2]),
)
def test_redirects_match_requests(
    server, chain, last, method, data, auth, request_cookies, session_cookie, session_header,
    max_redirects,
):  # fmt: skip
    base = server.url.rstrip("/")
    other = base.replace("127.0.0.1", "localhost")  # another host, still loopback
    url = _chain(base, other, chain, last)
    kwargs = {"data": data, "auth": auth, "cookies": request_cookies}
    with _fast_path_environment(), ThreadLocalSessionPool() as pool, requests.Session() as plain:
        results, jars, methods = [], [], []
        for session in (pool.session(), plain):
            session.max_redirects = max_redirects
            if session_cookie:
                session.cookies.set("s", "1", domain="127.0.0.1")
            if session_header:
                session.headers["X-S"] = "1"
            server.reset()
            results.append([_follow(session, method, url, **kwargs) for _ in range(2)])
            jars.append(sorted((c.name, c.value, c.domain, c.path) for c in session.cookies))
            methods.append(list(server.methods))
    # requests before 2.34 leave each followed response in a reference cycle that holds its
    # connection: the collector closes it (plain sessions alike), the test must not wait on it.
    gc.collect()
    assert results[0] == results[1]
    assert jars[0] == jars[1]
    assert methods[0] == methods[1]  # what the server was sent, hop by hop
