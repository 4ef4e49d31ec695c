"""The lean request path's shortcuts return exactly what requests' own functions return."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from unittest import mock

import pytest
import requests
from hypothesis import given, settings
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
    # No proxy variables and no netrc file: the snapshot's fast paths are the ones taken.
    environ = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    environ["NETRC"] = "/nonexistent/netrc"
    with (
        mock.patch.dict(os.environ, environ, clear=True),
        ThreadLocalSessionPool() as pool,
        requests.Session() as plain,
    ):
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
