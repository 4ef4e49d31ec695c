"""pytest plugin for both runs of requests' suite: loopback only, deselection, outcomes.

Loaded with ``-p requests_suite.guard`` by run.py, in the plain run and in the pool run alike:

- ``--ts-deselect FILE``: deselects the tests listed there (each would send a packet to a
  non-loopback address or resolve a name other than localhost);
- a tripwire under the deselection: while the run lasts, a DNS lookup of any name but localhost
  and a connect/sendto to any address outside 127.0.0.0/8 and ::1 raise ``LoopbackGuardError``
  (an ``OSError``) *before* anything leaves the machine, and the test that tried fails, naming
  the call. A test the list missed therefore fails loudly instead of reaching the network;
- ``--ts-outcomes FILE``: writes every test's outcome and one-line cause as JSON for run.py.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pytest

from requests_suite._shared import fail_report, listed, read_id_list

if TYPE_CHECKING:
    from collections.abc import Iterator

_LOCAL_NAMES = frozenset({"localhost", "localhost.", "localhost.localdomain"})
_pending: list[str] = []  # refused since the last test report claimed them
_outside: list[str] = []  # refused outside any test (collection, between tests)
_originals: dict[tuple[Any, str], Any] = {}


class LoopbackGuardError(OSError):
    """A test tried to reach beyond 127.0.0.1: refused before any packet was sent."""


def _is_loopback(host: object, *, numeric_ok: bool = False) -> bool:
    # numeric_ok: resolving a numeric address asks no DNS server; connecting to it is checked.
    if host is None or host in ("", b""):
        return True  # a passive lookup or a wildcard bind: nothing is sent
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").lower()
    if name in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    return numeric_ok or address.is_loopback


def _refuse(call: str, target: object) -> LoopbackGuardError:
    message = f"loopback guard: {call}({target!r}) refused: only 127.0.0.1/localhost is allowed"
    _pending.append(message)
    return LoopbackGuardError(message)


def _socket_address(address: object) -> object:
    # AF_INET (host, port), AF_INET6 (host, port, flow, scope); AF_UNIX paths stay local.
    if isinstance(address, tuple) and address:
        return address[0]
    return None


def _guard_lookup(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def lookup(host: object, *args: Any, **kwargs: Any) -> Any:
        if not _is_loopback(host, numeric_ok=name in ("getaddrinfo", "gethostbyname")):
            raise _refuse(f"socket.{name}", host)
        return original(host, *args, **kwargs)

    return lookup


def _guard_nameinfo(original: Callable[..., Any]) -> Callable[..., Any]:
    def getnameinfo(sockaddr: object, flags: int) -> Any:
        if not _is_loopback(_socket_address(sockaddr)):
            raise _refuse("socket.getnameinfo", sockaddr)
        return original(sockaddr, flags)

    return getnameinfo


def _guard_connect(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(self: socket.socket, address: object) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(
            _socket_address(address)
        ):
            raise _refuse(f"socket.{name}", address)
        return original(self, address)

    return connect


def _guard_sendto(original: Callable[..., Any]) -> Callable[..., Any]:
    def sendto(self: socket.socket, data: Any, *rest: Any) -> Any:
        # sendto(data, address) or sendto(data, flags, address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(
            _socket_address(rest[-1] if rest else None)
        ):
            raise _refuse("socket.sendto", rest[-1])
        return original(self, data, *rest)

    return sendto


def _install() -> None:
    lookups = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr")
    for name in lookups:
        _patch(socket, name, _guard_lookup(name, getattr(socket, name)))
    _patch(socket, "getnameinfo", _guard_nameinfo(socket.getnameinfo))
    for name in ("connect", "connect_ex"):
        _patch(socket.socket, name, _guard_connect(name, getattr(socket.socket, name)))
    _patch(socket.socket, "sendto", _guard_sendto(socket.socket.sendto))


def _patch(owner: Any, name: str, replacement: Any) -> None:
    # socket.socket inherits connect & co. from _socket.socket: None means "was inherited".
    _originals[(owner, name)] = owner.__dict__.get(name)
    setattr(owner, name, replacement)


def _uninstall() -> None:
    for (owner, name), original in _originals.items():
        if original is None:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _originals.clear()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Options of run.py's two runs."""
    group = parser.getgroup("requests_suite", "threadsession: requests' suite")
    group.addoption("--ts-deselect", metavar="FILE", help="deselect the test ids in FILE")
    group.addoption("--ts-outcomes", metavar="FILE", help="write outcomes as JSON to FILE")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Arm the tripwire before the suite's modules are imported."""
    _install()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Give socket its own functions back."""
    _uninstall()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests of ``--ts-deselect``."""
    path = config.getoption("ts_deselect")
    if not path:
        return
    entries = read_id_list(Path(path))
    keep = [item for item in items if not listed(item.nodeid, entries)]
    dropped = [item for item in items if listed(item.nodeid, entries)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Set aside what was tried before this test (collection, between tests): no test's."""
    _outside.extend(_pending)
    _pending.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail the phase in which the test tried to leave loopback, whatever it expected."""
    outcome: Any = yield
    if _pending:
        fail_report(outcome.get_result(), _pending)


class _Outcomes:
    """Outcome and one-line cause per test id, the precedence pytest's own summary uses."""

    def __init__(self) -> None:
        self.tests: dict[str, dict[str, str]] = {}

    def add(self, report: pytest.TestReport) -> None:
        outcome, cause = _classify(report)
        if outcome is None:
            return
        entry = self.tests.setdefault(report.nodeid, {"outcome": outcome, "cause": cause})
        if outcome == "error" or entry["outcome"] == "passed":
            entry.update(outcome=outcome, cause=cause)


def _classify(report: pytest.TestReport) -> tuple[str | None, str]:
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if xfail:
            return ("xfailed" if report.skipped else "xpassed"), str(report.wasxfail)
        return report.outcome, _cause(report)
    if report.failed:
        return "error", f"{report.when}: {_cause(report)}"
    if report.skipped:
        return ("xfailed" if xfail else "skipped"), _cause(report)
    return None, ""


def _cause(report: pytest.TestReport) -> str:
    longrepr: Any = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple):  # a skip: (path, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else ""


_outcomes = _Outcomes()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record each phase's report."""
    _outcomes.add(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the outcomes; a violation outside any test fails the run too."""
    path = session.config.getoption("ts_outcomes")
    if path:
        Path(path).write_text(json.dumps(_outcomes.tests, indent=1, sort_keys=True), "utf-8")
    _outside.extend(_pending)
    _pending.clear()
    if _outside:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name what was refused outside any test."""
    for message in _outside:
        terminalreporter.write_line(f"outside any test: {message}", red=True)
