from __future__ import annotations

import gc
import ssl
import threading

import pytest
from helpers import SERVER_THREAD_PREFIX, CountingServer, wait_until


@pytest.fixture(scope="session")
def _server():
    server = CountingServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tls(tmp_path_factory):
    """A server-side TLS context for 127.0.0.1 from a CA of the test's own, and that CA's path."""
    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return context, str(path)


@pytest.fixture
def server(_server: CountingServer):
    """The session's server with counts from zero; the test must leave no connection open."""
    assert wait_until(lambda: _server.open == 0), f"{_server.open} connections left open before"
    _server.reset()
    yield _server
    assert wait_until(lambda: _server.open == 0), f"test left {_server.open} connections open"


def _foreign_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t not in before and t.is_alive() and not t.name.startswith(SERVER_THREAD_PREFIX)
    ]


@pytest.fixture(autouse=True)
def _no_thread_left():
    before = set(threading.enumerate())
    yield
    assert wait_until(lambda: not _foreign_threads(before)), (
        f"test left threads running: {_foreign_threads(before)}"
    )
    gc.collect()


def pytest_report_header() -> list[str]:
    import requests
    import urllib3

    import threadsession

    return [
        f"threadsession {threadsession.__version__} from {threadsession.__file__}",
        f"requests {requests.__version__}, urllib3 {urllib3.__version__}",
    ]
