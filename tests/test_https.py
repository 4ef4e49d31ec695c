"""Over real TLS: verification against the test's own CA, reuse, and stale retries."""

from __future__ import annotations

import pytest
import requests
from helpers import serving

from threadsession import ThreadLocalSessionPool


def test_session_verify_is_honoured_despite_requests_ca_bundle(tls, monkeypatch):
    """requests #3829: an env CA bundle overrides session.verify in requests; not in ours."""
    context, ca_path = tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", requests.certs.where())
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with serving(tls=context) as server, ThreadLocalSessionPool() as pool:
        session = pool.session()
        session.verify = ca_path
        for _ in range(5):
            assert session.get(server.url).text == "ok"
        assert server.accepted == 1
        assert pool.stats().connections_opened == 1
        plain = requests.Session()
        plain.verify = ca_path
        with pytest.raises(requests.exceptions.SSLError):  # the env bundle won
            plain.get(server.url)
        plain.close()
        with ThreadLocalSessionPool() as other, pytest.raises(requests.exceptions.SSLError):
            other.get(server.url)  # without session.verify, the env bundle applies: no trust


def test_stale_tls_connection_is_sent_again(tls, monkeypatch):
    context, ca_path = tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
    with serving(tls=context, drop_after=1) as server, ThreadLocalSessionPool() as pool:
        for _ in range(4):
            assert pool.get(server.url).text == "ok"
        assert pool.stats().stale_retries == 3
        assert server.accepted == pool.stats().connections_opened == 4
