"""The environment snapshot yields exactly what requests computes for an unchanged environment."""

from __future__ import annotations

import os
from contextlib import contextmanager
from unittest import mock

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from threadsession import ThreadLocalSessionPool

CONTROLLED = [
    "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
    "no_proxy", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC",
]  # fmt: skip
HOSTS = ["127.0.0.1", "localhost", "example.com", "api.example.com", "10.1.2.3", "myhost"]

proxy_urls = st.sampled_from(
    ["http://proxy.local:3128", "http://10.0.0.1:8080", "socks5://127.0.0.1:1080", ""]
)
no_proxy_entries = st.sampled_from(
    ["127.0.0.1", "localhost", ".example.com", "example.com", "10.0.0.0/8", "myhost:8443", "*"]
)
no_proxy_lists = st.lists(no_proxy_entries, max_size=3).map(", ".join)
ca_paths = st.sampled_from(["/env/requests-ca.pem", "/env/curl-ca.pem", ""])

environments = st.fixed_dictionaries(
    {},
    optional={
        "http_proxy": proxy_urls,
        "HTTP_PROXY": proxy_urls,
        "https_proxy": proxy_urls,
        "HTTPS_PROXY": proxy_urls,
        "all_proxy": proxy_urls,
        "no_proxy": no_proxy_lists,
        "NO_PROXY": no_proxy_lists,
        "REQUESTS_CA_BUNDLE": ca_paths,
        "CURL_CA_BUNDLE": ca_paths,
    },
)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(HOSTS),
    st.sampled_from(["", ":8080", ":8443", ":443"]),
    st.sampled_from(["/", "/a/b?q=1", ""]),
)
request_proxies = st.one_of(
    st.just({}),
    st.fixed_dictionaries({}, optional={"http": proxy_urls, "https": proxy_urls}),
    st.fixed_dictionaries({"no_proxy": no_proxy_lists}),
)
verifies = st.sampled_from([None, True, False, "/request/ca.pem"])
session_verifies = st.sampled_from([True, False, "/session/ca.pem"])


@contextmanager
def environment(values: dict[str, str]):
    base = {k: v for k, v in os.environ.items() if k not in CONTROLLED}
    with mock.patch.dict(os.environ, {**base, **values}, clear=True):
        yield


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    env=environments,
    calls=st.lists(st.tuples(urls, request_proxies), min_size=1, max_size=6),
    verify=verifies,
    session_verify=session_verifies,
    session_proxies=st.sampled_from([{}, {"https": "http://session.proxy:1"}]),
    stream=st.sampled_from([None, True, False]),
    cert=st.sampled_from([None, "/client.pem"]),
    trust_env=st.booleans(),
)
# Cases a per-host cache gets wrong if it keys on too little: the port, the request's no_proxy.
@example(
    env={"http_proxy": "http://proxy.local:3128", "no_proxy": "myhost:8443"},
    calls=[("http://myhost:8443/", {}), ("http://myhost:8080/", {})],
    verify=None, session_verify=True, session_proxies={}, stream=None, cert=None, trust_env=True,
)  # fmt: skip
@example(
    env={"http_proxy": "http://proxy.local:3128"},
    calls=[("http://myhost/", {}), ("http://myhost/", {"no_proxy": "myhost"})],
    verify=None, session_verify=True, session_proxies={}, stream=None, cert=None, trust_env=True,
)  # fmt: skip
def test_merge_environment_settings_matches_requests(
    env, calls, verify, session_verify, session_proxies, stream, cert, trust_env
):
    with environment(env), ThreadLocalSessionPool() as pool:
        ours = pool.session()
        reference = requests.Session()
        for session in (ours, reference):
            session.verify = session_verify
            session.proxies = dict(session_proxies)
            session.trust_env = trust_env
        # The one documented difference (requests #3829): a session.verify the user set is not
        # replaced by REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE when the request passes no verify.
        reference_verify = (
            session_verify if verify is None and session_verify is not True else verify
        )
        for url, proxies in calls * 2:  # the second pass is answered from the snapshot
            expected = reference.merge_environment_settings(
                url, dict(proxies), stream, reference_verify, cert
            )
            got = ours.merge_environment_settings(url, dict(proxies), stream, verify, cert)
            assert got == expected, url
        reference.close()


NETRC_TEXT = """\
machine example.com login alice password wonderland
machine api.example.com login bob password builder
default login anon password anon-pass
"""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    url=urls,
    netrc=st.sampled_from(["with-default", "without-default", "missing"]),
    request_auth=st.sampled_from([None, ("u", "p")]),
    session_auth=st.sampled_from([None, ("s", "t")]),
    headers=st.sampled_from([None, {"X-A": "1"}]),
    params=st.sampled_from([None, {"page": "2"}]),
    cookies=st.sampled_from([None, {"c": "1"}]),
    method=st.sampled_from(["get", "POST", "put"]),
    data=st.sampled_from([None, b"body", {"k": "v"}]),
    trust_env=st.booleans(),
)
def test_prepare_request_matches_requests(
    tmp_path_factory, url, netrc, request_auth, session_auth, headers, params, cookies, method,
    data, trust_env
):  # fmt: skip
    directory = tmp_path_factory.mktemp("netrc")
    path = directory / "netrc"
    if netrc != "missing":
        text = NETRC_TEXT if netrc == "with-default" else NETRC_TEXT.rsplit("default", 1)[0]
        path.write_text(text)
        path.chmod(0o600)
    with environment({"NETRC": str(path)}), ThreadLocalSessionPool() as pool:
        ours, reference = pool.session(), requests.Session()
        prepared = []
        for session in (ours, reference):
            session.auth = session_auth
            session.trust_env = trust_env
            session.cookies.set("session-cookie", "v")
            request = requests.Request(
                method, url, headers=headers, params=params, cookies=cookies, data=data,
                auth=request_auth,
            )  # fmt: skip
            prepared.append(session.prepare_request(request))
            prepared.append(session.prepare_request(request))  # again, from the snapshot
        reference.close()
    got, got_again, expected, _ = prepared
    for p in (got, got_again):
        assert (p.method, p.url, p.body) == (expected.method, expected.url, expected.body)
        assert dict(p.headers) == dict(expected.headers)


def test_snapshot_is_refreshed_by_close_all_and_can_be_turned_off():
    url = "http://example.com/"
    with (
        environment({"http_proxy": "http://first:1"}),
        ThreadLocalSessionPool() as pool,
        ThreadLocalSessionPool(env_snapshot=False) as live,
    ):
        if True:
            assert pool.session().merge_environment_settings(url, {}, None, None, None)[
                "proxies"
            ] == {"http": "http://first:1"}
            os.environ["http_proxy"] = "http://second:2"
            old = pool.session().merge_environment_settings(url, {}, None, None, None)
            assert old["proxies"] == {"http": "http://first:1"}  # unchanged until close_all()
            assert live.session().merge_environment_settings(url, {}, None, None, None)[
                "proxies"
            ] == {"http": "http://second:2"}  # env_snapshot=False reads it every time
            pool.close_all()
            new = pool.session().merge_environment_settings(url, {}, None, None, None)
            assert new["proxies"] == {"http": "http://second:2"}


def test_session_verify_beats_the_env_ca_bundle():
    """requests #3829: with REQUESTS_CA_BUNDLE set, requests ignores session.verify; we do not."""
    url = "https://example.com/"
    with environment({"REQUESTS_CA_BUNDLE": "/env/ca.pem"}):
        for snapshot in (True, False):
            with ThreadLocalSessionPool(env_snapshot=snapshot) as pool:
                session = pool.session()
                assert session.merge_environment_settings(url, {}, None, None, None)["verify"] == (
                    "/env/ca.pem"
                )
                session.verify = "/mine/ca.pem"
                settings_ = session.merge_environment_settings(url, {}, None, None, None)
                assert settings_["verify"] == "/mine/ca.pem"
                session.verify = False
                assert (
                    session.merge_environment_settings(url, {}, None, None, None)["verify"] is False
                )
                # A verify passed with the request still wins, as in requests.
                assert (
                    session.merge_environment_settings(url, {}, None, "/req.pem", None)["verify"]
                    == "/req.pem"
                )


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_env_snapshot_option_is_checked(bad):
    with pytest.raises(TypeError, match=f"env_snapshot must be True or False, got {bad!r}"):
        ThreadLocalSessionPool(env_snapshot=bad)
