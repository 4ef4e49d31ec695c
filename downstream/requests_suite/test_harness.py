"""The harness itself: the guard refuses before anything is sent, the plugin reaches every Session.

run.py runs this file (with ``-p requests_suite.guard -p pytester``) before requests' suite, so
a broken tripwire or a plugin that misses a way of making a session stops the run first. No test
here hands a non-loopback address to a real socket function: refusals are checked on wrappers
around recording fakes.
"""

from __future__ import annotations

import _socket
import socket
from typing import Any

import pytest

from requests_suite import guard


def _recorder(calls: list[tuple[Any, ...]]) -> Any:
    def original(*args: Any) -> str:
        calls.append(args[1:] if isinstance(args[0], socket.socket) else args)
        return "called"

    return original


def test_names_other_than_localhost_are_never_looked_up() -> None:
    """A name other than localhost never reaches the resolver; numbers need none."""
    calls: list[tuple[Any, ...]] = []
    getaddrinfo = guard._guard_lookup("getaddrinfo", _recorder(calls))
    gethostbyaddr = guard._guard_lookup("gethostbyaddr", _recorder(calls))
    for host in ("localhost", "127.0.0.1", "::1", "[::1]", None, "10.255.255.1"):
        assert getaddrinfo(host, 80) == "called"  # numeric: resolving sends nothing
    for host in ("example.com", "doesnotexist.google.com", "non-resolvable-address"):
        with pytest.raises(guard.LoopbackGuardError, match=host):
            getaddrinfo(host, 80)
    with pytest.raises(guard.LoopbackGuardError):
        gethostbyaddr("10.255.255.1")  # a reverse lookup asks a DNS server
    assert len(calls) == 6
    guard._pending.clear()  # this test's refusals were deliberate


def test_connects_beyond_loopback_are_refused() -> None:
    """Calls to connect and sendto beyond loopback raise before the real call."""
    calls: list[tuple[Any, ...]] = []
    connect = guard._guard_connect("connect", _recorder(calls))
    sendto = guard._guard_sendto(_recorder(calls))
    with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert connect(tcp, ("127.0.0.1", 9)) == "called"
        assert connect(tcp, ("localhost", 9)) == "called"
        for address in (("10.255.255.1", 80), ("example.com", 80), ("0.0.0.0", 80)):
            with pytest.raises(guard.LoopbackGuardError):
                connect(tcp, address)
        with pytest.raises(guard.LoopbackGuardError):
            sendto(udp, b"x", ("10.0.0.1", 53))
        with pytest.raises(guard.LoopbackGuardError):
            sendto(udp, b"x", 0, ("10.0.0.1", 53))
    assert calls == [(("127.0.0.1", 9),), (("localhost", 9),)]
    guard._pending.clear()


def test_the_guard_is_installed_and_loopback_still_works() -> None:
    """The run's socket functions are the guarded ones, and 127.0.0.1 still connects."""
    assert socket.socket.connect is not _socket.socket.connect
    assert socket.getaddrinfo.__qualname__.startswith("_guard_lookup")
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname(), timeout=10)
        peer, _ = server.accept()
        peer.close()
        client.close()


def test_a_test_that_tries_fails_whatever_it_expected(pytester: pytest.Pytester) -> None:
    """A refusal fails its test even where the test expected an OSError."""
    pytester.makepyfile(
        """
        import pytest
        from requests_suite import guard

        def test_expects_a_connection_error():
            with pytest.raises(OSError):
                raise guard._refuse("socket.connect", ("192.0.2.1", 80))

        def test_clean():
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "requests_suite.guard")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*loopback guard: socket.connect(('192.0.2.1', 80)) refused*"])


def test_every_way_of_making_a_session_goes_through_a_pool(pytester: pytest.Pytester) -> None:
    """Session(), session(), subclasses, requests.get and unpickling all use a pool."""
    pytester.makepyfile(
        """
        import http.server, pickle, threading
        import requests, requests.sessions
        from requests_suite import plugin

        def pool_made(session):
            adapter = session.get_adapter("http://127.0.0.1/")
            return type(adapter).__module__.startswith("threadsession")

        class Custom(requests.Session):
            def __init__(self, marker):
                super().__init__()
                self.marker = marker

        def test_constructors():
            made = [requests.Session(), requests.sessions.Session(), requests.session()]
            custom = Custom("m")
            assert custom.marker == "m" and isinstance(custom, Custom)
            for session in [*made, custom]:
                assert isinstance(session, requests.Session)
                assert pool_made(session), type(session).__mro__
            # Unpickling calls no __init__, as for a plain Session (object.__new__, then
            # __setstate__): the copy is a session with the pickled (plain) adapters, not a
            # pool-made one.
            before = plugin._made[0]
            copy = pickle.loads(pickle.dumps(made[0]))
            assert isinstance(copy, requests.Session) and not pool_made(copy)
            assert plugin._made[0] == before

        def test_module_level_get_uses_a_pool():
            server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
            thread = threading.Thread(target=server.handle_request)
            thread.start()
            before = plugin._made[0]
            requests.get("http://127.0.0.1:%d/" % server.server_address[1], timeout=10)
            thread.join(10)
            server.server_close()
            assert plugin._made[0] == before + 1

        def test_bypass_fails():
            plugin._ORIGINAL()
        """
    )
    plugins = ("-p", "requests_suite.guard", "-p", "requests_suite.plugin")
    result = pytester.runpytest_subprocess(*plugins)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*_ test_bypass_fails _*", "constructed without the pool: *"])
