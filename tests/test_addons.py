"""requests add-ons, used as their users use them, through a pool shared by 8 worker threads.

Each test asserts the add-on's documented behaviour and, where the network is used, the pool's
guarantees: the server's connection count equals ``stats().connections_opened``, the executor
closes its workers' sessions, no ResourceWarning (``filterwarnings = error``). Each add-on is
optional (the ``addons`` extra): without it its test is skipped, and ``.ci/run`` installs the
extra and checks that every add-on imports before running this file.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable
from unittest import mock
from urllib.parse import urlsplit

import pytest
import requests
import urllib3
from helpers import CountingServer, Handler, free_port, serving, wait_until

from threadsession import ThreadLocalSessionPool

WORKERS = 8
REQUESTS = 24  # three per worker on average


class EchoHandler(Handler):
    """Handler, plus ``/echo``: a JSON reply of the method, path, headers and body received."""

    def _echo(self) -> None:
        if urlsplit(self.path).path != "/echo":
            Handler._reply(self)
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.count_request(self.command, body)
        self.served += 1
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {name.lower(): value for name, value in self.headers.items()},
                "body": body.decode("latin-1"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _echo


@pytest.fixture(scope="module")
def _server():
    """This module's server (conftest's ``server`` fixture resets and checks it): it echoes."""
    server = CountingServer()
    server.RequestHandlerClass = EchoHandler
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def echo_serving(**options: Any) -> Iterator[CountingServer]:
    """A server of the test's own (to stop it mid-test, or with TLS), answering /echo too."""
    with serving(**options) as server:
        server.RequestHandlerClass = EchoHandler  # read per connection; none has come yet
        yield server


def fan_out(
    pool: ThreadLocalSessionPool, task: Callable[[int], Any], count: int = REQUESTS
) -> list[Any]:
    """Run ``task(i)`` for ``count`` values on ``pool.executor(8)``; the results, in order."""
    with pool.executor(WORKERS) as executor:
        return list(executor.map(task, range(count), timeout=60))


def on_distinct_threads(pool: ThreadLocalSessionPool, task: Callable[[int], Any]) -> list[Any]:
    """Run ``task(i)`` once on each of the executor's 8 workers (a barrier holds them apart)."""
    barrier = threading.Barrier(WORKERS, timeout=30)

    def apart(index: int) -> Any:
        barrier.wait()
        return task(index)

    return fan_out(pool, apart, WORKERS)


def assert_pool_guarantees(
    pool: ThreadLocalSessionPool, server: CountingServer, *, network: bool = True
) -> None:
    """After the executor: its sessions are closed, and every connection was counted."""
    stats = pool.stats()
    print(f"server accepted {server.accepted}, requests {server.requests}; {stats}")
    assert stats.sessions_open == 0, stats  # pool.executor() closed its workers' sessions
    assert server.accepted == stats.connections_opened, (server.accepted, stats)
    if network:  # keep-alive: at most one connection per worker, all closed now
        assert 1 <= stats.connections_opened <= WORKERS, stats
        assert wait_until(lambda: server.open == 0, 10.0), f"{server.open} connections left open"
    else:
        assert stats.connections_opened == 0, stats


# responses ------------------------------------------------------------------------------------


def test_responses_decorator_mocks_pool_requests(server):
    responses = pytest.importorskip("responses")
    url = f"{server.url}/api/items"

    @responses.activate
    def run() -> tuple[list[Any], int]:
        responses.add(responses.GET, url, json={"mocked": True})
        with ThreadLocalSessionPool() as pool:
            bodies = fan_out(pool, lambda _: pool.get(url).json())
            assert_pool_guarantees(pool, server, network=False)
        return bodies, len(responses.calls)

    bodies, calls = run()
    assert bodies == [{"mocked": True}] * REQUESTS
    assert calls == REQUESTS
    assert server.requests == 0


def test_responses_context_manager_with_passthrough(server):
    responses = pytest.importorskip("responses")
    mocked, real = f"{server.url}/mocked", f"{server.url}/?size=5"
    with responses.RequestsMock() as rsps, ThreadLocalSessionPool() as pool:
        rsps.add(responses.GET, mocked, body="fake")
        rsps.add_passthru(real)

        def task(index: int) -> str:
            return pool.get(real if index % 2 else mocked).text

        texts = fan_out(pool, task)
        assert texts == ["fake", "xxxxx"] * (REQUESTS // 2)
        assert len(rsps.calls) == REQUESTS // 2  # a passthrough prefix is not recorded
        assert server.requests == REQUESTS // 2  # only the passthrough ones reached the server
        assert_pool_guarantees(pool, server)


# requests-mock --------------------------------------------------------------------------------


def test_requests_mock_context_manager_with_real_http(server):
    requests_mock = pytest.importorskip("requests_mock")
    mocked, real = f"{server.url}/mocked", f"{server.url}/?size=3"
    with requests_mock.Mocker(real_http=True) as mocker, ThreadLocalSessionPool() as pool:
        mocker.get(mocked, text="fake")

        def task(index: int) -> str:
            return pool.get(real if index % 2 else mocked).text

        texts = fan_out(pool, task)
        assert texts == ["fake", "xxx"] * (REQUESTS // 2)
        assert mocker.call_count == REQUESTS  # real_http ones are in its history too
        assert sum(call.path == "/mocked" for call in mocker.request_history) == REQUESTS // 2
        assert server.requests == REQUESTS // 2
        assert_pool_guarantees(pool, server)


def test_requests_mock_pytest_fixture(server, request):
    pytest.importorskip("requests_mock")
    requests_mock = request.getfixturevalue("requests_mock")  # the plugin's documented fixture
    url = f"{server.url}/api/items"
    requests_mock.post(url, status_code=201, json={"created": True})
    with ThreadLocalSessionPool() as pool:
        replies = fan_out(pool, lambda i: pool.post(url, json={"n": i}))
        assert [reply.status_code for reply in replies] == [201] * REQUESTS
        assert sorted(call.json()["n"] for call in requests_mock.request_history) == list(
            range(REQUESTS)
        )
        assert_pool_guarantees(pool, server, network=False)
    assert server.requests == 0


# requests-cache -------------------------------------------------------------------------------


# url-normalize 2.2 (what Python 3.9 gets with requests-cache) calls idna's deprecated
# transitional mode: a third-party warning on every cached request, not the pool's.
IDNA_TRANSITIONAL = pytest.mark.filterwarnings(
    "ignore:Transitional processing is deprecated:DeprecationWarning"
)


@IDNA_TRANSITIONAL
def test_requests_cache_cached_session_as_factory(server):
    requests_cache = pytest.importorskip("requests_cache")
    url = f"{server.url}/?size=7"
    with ThreadLocalSessionPool(
        session_factory=lambda: requests_cache.CachedSession(backend="memory")
    ) as pool:

        def task(_: int) -> tuple[bool, bool, str]:
            reply: Any = pool.get(url)  # a requests_cache CachedResponse
            return (
                isinstance(pool.session(), requests_cache.CachedSession),
                reply.from_cache,
                reply.text,
            )

        results = fan_out(pool, task)
        assert all(cached_class for cached_class, _, _ in results)
        assert {text for _, _, text in results} == {"x" * 7}
        sessions = pool.stats().sessions_created
        misses = sum(not from_cache for _, from_cache, _ in results)
        assert misses == sessions == server.requests  # one miss per session's own memory cache
        assert_pool_guarantees(pool, server)


@IDNA_TRANSITIONAL
def test_requests_cache_install_cache_reaches_pool_sessions(server):
    requests_cache = pytest.importorskip("requests_cache")
    url = f"{server.url}/?size=4"
    with ThreadLocalSessionPool() as pool:  # made before the patch: classes are read per session
        requests_cache.install_cache(backend="memory")
        try:

            def task(_: int) -> tuple[bool, bool]:
                reply: Any = pool.get(url)  # a requests_cache CachedResponse
                return isinstance(pool.session(), requests_cache.CachedSession), reply.from_cache

            results = fan_out(pool, task)
            again = fan_out(pool, task)  # a second round: every thread reads the one cache
        finally:
            requests_cache.uninstall_cache()
        assert all(cached_class for cached_class, _ in results + again)
        misses = sum(not from_cache for _, from_cache in results)
        # install_cache shares one backend: each thread's first request may miss or hit.
        assert 1 <= misses == server.requests <= pool.stats().sessions_created
        assert all(from_cache for _, from_cache in again)
        assert_pool_guarantees(pool, server)


# vcrpy and betamax: record against the server, replay with it stopped -------------------------


def test_vcrpy_records_then_replays_without_network(tmp_path):
    vcr = pytest.importorskip("vcr")
    cassette_path = str(tmp_path / "pool.yaml")
    # vcrpy itself is not thread-safe (vcrpy#849: concurrent requests are lost from the
    # recording; each stub it makes unpatches urllib3 for everyone meanwhile, so a concurrent
    # replay can reach the network, plain requests.Session included). Eight workers and their
    # eight sessions, then, but one request at a time.
    one_at_a_time = threading.Lock()

    def get(url: str) -> str:
        with one_at_a_time:
            return pool.get(url).text

    with echo_serving() as server:
        urls = [f"{server.url}/?size={index + 3}" for index in range(REQUESTS)]
        recording = vcr.use_cassette(cassette_path, record_mode="once")
        with recording as cassette, ThreadLocalSessionPool() as pool:
            recorded = fan_out(pool, lambda i: get(urls[i]))
            assert len(cassette) == REQUESTS  # every request recorded
            assert server.requests == REQUESTS
            assert_pool_guarantees(pool, server)
    assert recorded == ["x" * (index + 3) for index in range(REQUESTS)]

    # The server is stopped: nothing listens on its port. Replay must not touch the network.
    replaying = vcr.use_cassette(cassette_path, record_mode="none")
    with replaying as cassette, ThreadLocalSessionPool() as pool:
        replayed = fan_out(pool, lambda i: get(urls[i]))
        assert cassette.all_played
        stats = pool.stats()
        assert stats.connections_opened == 0, stats
        assert stats.sessions_open == 0, stats
    assert replayed == recorded


# betamax 0.9 calls datetime.utcnow(), deprecated since Python 3.12: its warning, not the pool's.
@pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")
def test_betamax_records_then_replays_without_network(tmp_path):
    betamax = pytest.importorskip("betamax")
    library = str(tmp_path)

    def with_cassette(pool, urls, record: str) -> Callable[[int], list[str]]:
        def task(worker: int) -> list[str]:
            # A recorder per thread, on that thread's session, with a cassette of its own.
            recorder = betamax.Betamax(pool.session(), cassette_library_dir=library)
            with recorder.use_cassette(f"worker-{worker}", record=record):
                return [pool.get(url).text for url in urls[worker]]

        return task

    with echo_serving() as server:
        urls = [[f"{server.url}/?size={w * 3 + n + 3}" for n in range(3)] for w in range(WORKERS)]
        with ThreadLocalSessionPool() as pool:
            recorded = on_distinct_threads(pool, with_cassette(pool, urls, "once"))
            assert server.requests == 3 * WORKERS
            assert_pool_guarantees(pool, server)
    assert recorded == [["x" * (w * 3 + n + 3) for n in range(3)] for w in range(WORKERS)]

    with ThreadLocalSessionPool() as pool:  # server stopped: replay only
        replayed = on_distinct_threads(pool, with_cassette(pool, urls, "none"))
        stats = pool.stats()
        assert stats.connections_opened == 0, stats
        assert stats.sessions_open == 0, stats
    assert replayed == recorded


# requests-oauthlib ----------------------------------------------------------------------------


def test_requests_oauthlib_oauth2_session_as_factory(server, monkeypatch):
    requests_oauthlib = pytest.importorskip("requests_oauthlib")
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test server speaks plain HTTP
    token = {"access_token": "pool-token", "token_type": "Bearer"}
    with ThreadLocalSessionPool(
        session_factory=lambda: requests_oauthlib.OAuth2Session("client-id", token=token)
    ) as pool:

        def task(_: int) -> tuple[bool, str | None]:
            session = pool.session()
            authorized = isinstance(session, requests_oauthlib.OAuth2Session) and session.authorized
            return authorized, pool.get(f"{server.url}/echo").json()["headers"].get("authorization")

        results = fan_out(pool, task)
        assert results == [(True, "Bearer pool-token")] * REQUESTS
        assert_pool_guarantees(pool, server)


# requests-toolbelt ----------------------------------------------------------------------------


def test_toolbelt_base_url_session_as_factory(server):
    sessions = pytest.importorskip("requests_toolbelt.sessions")
    with ThreadLocalSessionPool(
        session_factory=lambda: sessions.BaseUrlSession(base_url=f"{server.url}/")
    ) as pool:

        def task(_: int) -> tuple[str | None, str, str]:
            session = pool.session()
            # BaseUrlSession overrides prepare_request too: a relative URL gets the base.
            prepared = session.prepare_request(requests.Request("GET", "/echo"))
            # requests' documented prepared-request flow: the environment's settings, merged.
            settings = session.merge_environment_settings(prepared.url, {}, None, None, None)
            sent = session.send(prepared, **settings).json()["path"]
            return prepared.url, sent, pool.get("echo?via=get").json()["path"]

        results = fan_out(pool, task)
        assert results == [(f"{server.url}/echo", "/echo", "/echo?via=get")] * REQUESTS
        assert_pool_guarantees(pool, server)


def test_toolbelt_source_address_adapter_through_mounts(server):
    adapters = pytest.importorskip("requests_toolbelt.adapters.source")
    with ThreadLocalSessionPool(
        mounts={"http://": lambda: adapters.SourceAddressAdapter(("127.0.0.1", 0))}
    ) as pool:

        def task(_: int) -> tuple[str, str]:
            adapter = pool.session().get_adapter(server.url)
            return type(adapter).__name__, pool.get(f"{server.url}/?size=3").text

        results = fan_out(pool, task)
        assert results == [("SourceAddressAdapter", "xxx")] * REQUESTS
        stats = pool.stats()
        print(f"server accepted {server.accepted}; {stats}")
        assert stats.sessions_open == 0, stats
        # The adapter is the user's (not counted in connections_opened); it keeps one
        # connection alive per session, and closing the sessions closed its sockets.
        assert server.accepted == stats.sessions_created, (server.accepted, stats)
        assert wait_until(lambda: server.open == 0, 10.0), f"{server.open} connections left open"


def test_toolbelt_multipart_encoder_upload(server):
    multipart = pytest.importorskip("requests_toolbelt.multipart.encoder")
    with ThreadLocalSessionPool() as pool:

        def task(index: int) -> tuple[bool, bool, bool]:
            encoder = multipart.MultipartEncoder(
                fields={
                    "index": str(index),
                    "file": (f"f{index}.bin", b"payload-%d" % index, "application/octet-stream"),
                }
            )
            echo = pool.post(
                f"{server.url}/echo", data=encoder, headers={"Content-Type": encoder.content_type}
            ).json()
            return (
                echo["headers"]["content-type"] == encoder.content_type,
                int(echo["headers"]["content-length"]) == len(echo["body"]) == encoder.len,
                f'filename="f{index}.bin"' in echo["body"] and f"payload-{index}" in echo["body"],
            )

        assert fan_out(pool, task) == [(True, True, True)] * REQUESTS
        assert server.requests == REQUESTS
        assert_pool_guarantees(pool, server)


# OpenTelemetry --------------------------------------------------------------------------------


def test_opentelemetry_requests_instrumentor_one_span_per_request(server):
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.requests")
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    instrumentor = instrumentation.RequestsInstrumentor()
    with ThreadLocalSessionPool() as pool:  # made before instrumenting: Session.send is patched
        instrumentor.instrument(tracer_provider=provider)
        try:
            echoes = fan_out(pool, lambda _: pool.get(f"{server.url}/echo").json())
        finally:
            instrumentor.uninstrument()
        spans = exporter.get_finished_spans()
        assert len(spans) == REQUESTS
        assert {span.name for span in spans} == {"GET"}
        # Each request carried its own span's context to the server (W3C traceparent).
        sent = {echo["headers"].get("traceparent") for echo in echoes}
        expected = {
            f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"
            f"{span.context.trace_flags:02x}"
            for span in spans
        }
        assert sent == expected
        assert_pool_guarantees(pool, server)
    provider.shutdown()


# truststore over real TLS ---------------------------------------------------------------------


def test_truststore_inject_into_ssl_over_real_tls(tls, monkeypatch):
    truststore = pytest.importorskip("truststore")
    context, ca_path = tls
    # The "system" store truststore reads on Linux is OpenSSL's default paths: SSL_CERT_FILE.
    # requests itself is left to its default (certifi), which does not know the test's CA.
    monkeypatch.setenv("SSL_CERT_FILE", ca_path)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with echo_serving(tls=context) as server:
        with ThreadLocalSessionPool() as pool:  # made before the injection, as at import time
            truststore.inject_into_ssl()
            try:
                texts = fan_out(pool, lambda _: pool.get(f"{server.url}/?size=6").text)
            finally:
                truststore.extract_from_ssl()
            assert texts == ["x" * 6] * REQUESTS
            assert_pool_guarantees(pool, server)
        # Undone: certifi alone does not trust the test CA, so the same request now fails.
        with ThreadLocalSessionPool() as pool, pytest.raises(requests.exceptions.SSLError):
            pool.get(server.url)


# urllib3's pyOpenSSL backend: its WrappedSocket counted as a connection ----------------------


def openssl_version(openssl: Any) -> tuple[int, ...]:
    return tuple(int(part) for part in openssl.__version__.split(".")[:2])


# urllib3 1.26's pyopenssl module calls pyOpenSSL's X509 accessors, deprecated by pyOpenSSL 24.3:
# their warnings, not the pool's.
@pytest.mark.filterwarnings("ignore:X509.get_:DeprecationWarning")
def test_pyopenssl_inject_into_urllib3_counts_and_dates_connections(tls, monkeypatch):
    openssl = pytest.importorskip("OpenSSL")
    pyopenssl = pytest.importorskip("urllib3.contrib.pyopenssl")
    if urllib3.__version__.startswith("1.") and openssl_version(openssl) >= (25, 1):
        # Not the pool's: urllib3 1.26.20 sets verify_mode again on the SSLContext it kept when
        # a connection object reconnects, which pyOpenSSL 25.1 deprecates and 26 refuses.
        pytest.skip("urllib3 1.26's pyopenssl module cannot reconnect with pyOpenSSL 25.1+")
    context, ca_path = tls
    # A CA path makes verify a string: requests then builds no default context of its own, and
    # urllib3 builds each connection's from util.ssl_.SSLContext, which the injection replaces.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    age = 1.0
    with echo_serving(tls=context) as server:
        pyopenssl.inject_into_urllib3()
        try:
            with ThreadLocalSessionPool(max_connection_age=age) as pool:
                with pool.get(f"{server.url}/?size=4", stream=True) as response:
                    sock_type = type(response.raw.connection.sock)
                    assert response.text == "x" * 4
                assert sock_type is pyopenssl.WrappedSocket, sock_type
                # The age counts from the connect: reused until then, replaced after; bounded.
                start, sent = time.monotonic(), 1
                while server.accepted < 2 and time.monotonic() - start < 10 * age:
                    assert pool.get(f"{server.url}/?size=5").text == "x" * 5
                    sent += 1
                assert server.accepted == 2
                assert sent > 2, sent  # the first connection was reused until it aged out
                assert pool.stats().connections_expired == 1, pool.stats()
                texts = fan_out(pool, lambda _: pool.get(f"{server.url}/?size=6").text)
                assert texts == ["x" * 6] * REQUESTS
                pool.close_all()  # the main thread's session too
                stats = pool.stats()
            print(f"server accepted {server.accepted}; {stats}")
            assert server.accepted == stats.connections_opened, (server.accepted, stats)
            assert 3 <= stats.connections_opened <= WORKERS + 2, stats
            assert wait_until(lambda: server.open == 0, 10.0), f"{server.open} left open"
        finally:
            pyopenssl.extract_from_urllib3()


# The user's own Session classes: every override runs, the pool's behaviour beneath it ----------


class PipLikeSession(requests.Session):
    """pip's PipSession sets its own default timeout in request(); it must beat the pool's."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts_sent: list[Any] = []

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 2.5)
        return super().request(method, url, *args, **kwargs)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.timeouts_sent.append(kwargs.get("timeout"))  # what reaches the transport
        return super().send(request, **kwargs)


def test_user_request_override_sets_its_own_timeout(server):
    with ThreadLocalSessionPool(session_factory=PipLikeSession) as pool:  # default timeout

        def task(_: int) -> list[Any]:
            pool.get(f"{server.url}/")
            session = pool.session()
            assert isinstance(session, PipLikeSession)
            return list(session.timeouts_sent)

        sent = {timeout for timeouts in fan_out(pool, task) for timeout in timeouts}
        assert sent == {2.5}  # never the pool's default
        assert_pool_guarantees(pool, server)


class SigningSession(requests.Session):
    """Adds a header to every request it prepares (a request-signing session)."""

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        prepared.headers["X-Signature"] = f"signed {prepared.method} {prepared.path_url}"
        return prepared


def test_user_prepare_request_override_runs_without_auth(server):
    with ThreadLocalSessionPool(session_factory=SigningSession) as pool:
        echoes = fan_out(pool, lambda i: pool.get(f"{server.url}/echo?n={i}").json())
        signatures = [echo["headers"].get("x-signature") for echo in echoes]
        assert signatures == [f"signed GET /echo?n={i}" for i in range(REQUESTS)]
        assert_pool_guarantees(pool, server)


class DirectSession(requests.Session):
    """The usual work-around for requests #3829: environment proxies never apply."""

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        settings["proxies"] = {}
        return settings


def test_user_merge_environment_settings_override_clears_proxies(server, monkeypatch):
    proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    url = f"{server.url}/?size=3"
    with DirectSession() as plain:  # plain requests: the override wins, the request goes direct
        assert plain.get(url, timeout=10).text == "xxx"
    assert wait_until(lambda: server.open == 0, 10.0)  # counted as closed before the reset
    server.reset()
    with ThreadLocalSessionPool(session_factory=DirectSession) as pool:
        texts = fan_out(pool, lambda _: pool.get(url).text)
        assert texts == ["xxx"] * REQUESTS
        assert server.requests == REQUESTS
        assert_pool_guarantees(pool, server)


class StatefulSession(requests.Session):
    """A factory class that pickles state of its own through __getstate__/__setstate__."""

    def __init__(self) -> None:
        super().__init__()
        self.region = "eu-west"

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()  # type: ignore[assignment]
        state["region"] = self.region
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        region = state.pop("region")
        super().__setstate__(state)  # type: ignore[misc]  # types-requests omits it
        self.region = region


def test_pickling_keeps_the_factory_class_getstate(server):
    with ThreadLocalSessionPool(session_factory=StatefulSession, headers={"X-Pool": "yes"}) as pool:

        def task(_: int) -> bytes:
            session = pool.session()
            assert isinstance(session, StatefulSession)
            session.region = f"region-{threading.get_ident()}"
            assert pool.get(f"{server.url}/").text == "ok"
            return pickle.dumps(session)

        for blob in fan_out(pool, task, WORKERS):
            with pickle.loads(blob) as copy:  # a plain session of the factory's class
                assert type(copy) is StatefulSession
                assert copy.region.startswith("region-")
                assert copy.headers["X-Pool"] == "yes"
        assert_pool_guarantees(pool, server)


# mock.patch("requests.Session"): the most common unit-test pattern for requests code -----------


def test_mock_patch_requests_session_reaches_pool_sessions(server):
    url = f"{server.url}/api/items"
    with mock.patch("requests.Session") as session_class:
        fake = session_class.return_value
        fake.get.return_value.json.return_value = {"mocked": True}
        assert requests.Session().get(url).json() == {"mocked": True}  # plain code under it
        with ThreadLocalSessionPool() as pool:
            replies = fan_out(pool, lambda _: pool.get(url).json())
            assert replies == [{"mocked": True}] * REQUESTS
            assert_pool_guarantees(pool, server, network=False)
        assert fake.get.call_count == REQUESTS + 1
        # Handed out untouched: the pool manages (mounts, counts, closes) only sessions it built.
        fake.close.assert_not_called()
    assert server.requests == 0


@pytest.mark.parametrize("shared", [False, True], ids=["per-thread", "shared"])
def test_mock_patch_requests_session_ends_with_the_patch(server, shared):
    """A mock the pool handed out is dropped once requests.Session is no longer that mock."""
    with ThreadLocalSessionPool(shared=shared) as pool:
        with mock.patch("requests.Session") as first:
            assert pool.session() is first.return_value
            assert pool.session() is first.return_value  # the same one while the patch lasts
        with mock.patch("requests.Session") as second:  # another patch: its own mock
            assert pool.session() is second.return_value
            assert pool.get(f"{server.url}/") is second.return_value.get.return_value
        # Patch over: a pool session, mounted and counted, as a plain requests.Session() is.
        session = pool.session()
        assert isinstance(session, requests.Session)
        assert not isinstance(session, mock.Mock), session
        assert pool.get(f"{server.url}/").text == "ok"
        assert pool.session() is session
        stats = pool.stats()
        assert stats.sessions_created == stats.sessions_open == 1, stats
        assert stats.connections_opened == server.accepted == 1, (stats, server.accepted)
    first.return_value.close.assert_not_called()
    second.return_value.close.assert_not_called()
    assert server.requests == 1


@pytest.mark.parametrize("shared", [False, True], ids=["per-thread", "shared"])
def test_mock_patch_requests_session_after_the_session_was_made_keeps_it(server, shared):
    """A pool session made before the patch is handed out under it (see the README)."""
    url = f"{server.url}/"
    with ThreadLocalSessionPool(shared=shared) as pool:
        session = pool.session()
        with mock.patch("requests.Session") as session_class:
            assert requests.Session() is session_class.return_value  # plain code: the mock
            assert pool.session() is session  # the pool's code never calls requests.Session
            assert pool.get(url).text == "ok"  # a real request, through the pool's adapters
        assert pool.session() is session
        assert pool.get(url).text == "ok"
        stats = pool.stats()
        assert stats.sessions_created == 1, stats
        assert stats.connections_opened == server.accepted == 1, (stats, server.accepted)
    assert server.requests == 2
