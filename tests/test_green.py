"""gevent (and eventlet) monkey-patching: each test patches first in a child interpreter.

The counting server runs here, in the test process, so it is untouched by the child's patching.
Skipped without gevent; ``.ci/run`` installs the ``gevent`` and ``eventlet`` extras and runs them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from helpers import ROOT, free_port, wait_until


def needs(module: str) -> None:
    """Skip unless ``module`` is installed, without importing it here.

    Imported, eventlet hooks fork() (a DeprecationWarning in every later fork test), and gevent
    must not be imported unpatched in the test process either: only the children use them.
    """
    if importlib.util.find_spec(module) is None:
        pytest.skip(
            f"{module} is not installed: pip install -e '.[test,gevent,eventlet]'",
            allow_module_level=True,
        )


needs("gevent")  # the whole module: the plain test run needs no gevent

TESTS = ROOT / "tests"
GREENLETS, GETS = 200, 5
MODES = ["per-thread", "shared"]


def read_json_line(proc: subprocess.Popen[str], timeout: float, errors) -> dict:
    """The child's next stdout line as JSON; AssertionError (with its stderr) if none comes."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        errors.seek(0)
        tail = errors.read()[-2000:]
        raise AssertionError(f"no report from the child in {timeout} s ({proc.poll()=}): {tail}")
    return json.loads(line)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a child by its pid: ``sig``, a deadline, then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def run_green_child(library: str, mode: str, server, tmp_path) -> tuple[dict, dict, int, str]:
    """Run green_child.py; return its two reports, the server's open count between, stderr."""
    errors = (tmp_path / "stderr.txt").open("w+")  # a file: a full stderr pipe would block it
    proc = subprocess.Popen(
        [sys.executable, "-X", "dev", "-W", "error", str(TESTS / "green_child.py"),
         library, mode, server.url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, text=True,
    )  # fmt: skip
    try:
        done = read_json_line(proc, 120, errors)
        # Per-thread: every greenlet's session closed as it ended (under eventlet, all but the
        # last one's: see green_child.py). Shared: every connection still pooled.
        expected = done["sessions_open"] if mode == "per-thread" else done["connections_opened"]
        wait_until(lambda: server.open == expected, 10)
        open_between = server.open
        assert proc.stdin is not None
        proc.stdin.write("close\n")
        proc.stdin.flush()
        closed = read_json_line(proc, 60, errors)
        proc.wait(60)
    finally:
        stop(proc)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        errors.seek(0)
        stderr = errors.read()
        errors.close()
    assert proc.returncode == 0, stderr
    return done, closed, open_between, stderr


def check_green_run(library: str, mode: str, server, tmp_path) -> None:
    done, closed, open_between, stderr = run_green_child(library, mode, server, tmp_path)
    print(
        f"\n{library} {mode}: {done['ok']}/{GREENLETS * GETS} ok, {done['connections_discarded']}"
        f" discards, {server.accepted} connections (peak concurrency {done['peak']}), "
        f"{done['sessions_created']} sessions, {open_between} open once the greenlets ended, "
        f"pool_maxsize {done['pool_maxsize']}; sessions_open {done['sessions_open']} "
        f"{done['waited']} s after the greenlets ended"
    )
    assert stderr == ""
    assert done["ok"] == server.requests == GREENLETS * GETS
    assert done["connections_discarded"] == 0
    assert done["connections_opened"] == server.accepted <= GREENLETS
    if mode == "per-thread":
        # A session per greenlet, closed as the greenlet ended (before close()).
        linger = 1 if library == "eventlet" else 0
        assert done["sessions_created"] == GREENLETS
        assert done["sessions_open"] == linger
        assert open_between == linger
        assert server.accepted == GREENLETS  # one connection per greenlet, 5 GETs each
    else:
        assert done["sessions_created"] == 1
        assert server.accepted <= done["peak"]
        assert open_between == server.accepted  # kept for reuse until close()
    if mode == "capped":  # 200 greenlets took turns on 4 connections, none failed
        assert server.accepted <= 4
        assert done["pool_maxsize"] == 4
    assert closed["sessions_open"] == 0
    assert wait_until(lambda: server.open == 0, 10), f"{server.open} open after close()"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", [*MODES, "capped"])
def test_gevent_patch_all_200_greenlets(server, tmp_path, mode):
    check_green_run("gevent", mode, server, tmp_path)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", MODES)
def test_eventlet_monkey_patch_200_greenlets(server, tmp_path, mode):
    needs("eventlet")
    check_green_run("eventlet", mode, server, tmp_path)


CLIENTS = 50


def wave(url: str) -> list[str]:
    """CLIENTS requests to the gunicorn worker at once, each on a connection of its own."""
    barrier = threading.Barrier(CLIENTS)

    def one(_: int) -> str:
        barrier.wait(30)
        return requests.get(url, timeout=60).text

    with ThreadPoolExecutor(CLIENTS) as executor:
        return list(executor.map(one, range(CLIENTS), timeout=120))


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", MODES)
def test_gunicorn_gevent_worker(server, tmp_path, mode):
    needs("gunicorn")
    port = free_port()
    env = dict(os.environ, THREADSESSION_UPSTREAM=server.url, THREADSESSION_MODE=mode)
    log = (tmp_path / "gunicorn.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-X", "dev", "-W", "error", "-m", "gunicorn", "-k", "gevent", "-w", "1",
         "-b", f"127.0.0.1:{port}", "--worker-connections", "200", "--graceful-timeout", "10",
         "--log-level", "warning", "--chdir", str(TESTS), "gunicorn_app:app"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert wait_until(lambda: accepts(port), 30), "gunicorn did not start listening"
        base = f"http://127.0.0.1:{port}"
        assert wave(base + "/") == ["ok"] * CLIENTS
        first = server.accepted
        # Per-thread: each request is a greenlet of its own, its session closed as it ends.
        assert wait_until(lambda: server.open == (0 if mode == "per-thread" else first), 10)
        between = server.open
        assert wave(base + "/") == ["ok"] * CLIENTS
        stats = requests.get(base + "/stats", timeout=30).json()
    finally:
        stop(worker)
        log.close()
    output = (tmp_path / "gunicorn.log").read_text()
    print(
        f"\ngunicorn -k gevent, {mode}: 2 x {CLIENTS} concurrent requests answered; upstream "
        f"{first} connections after the first, {server.accepted} after both, {between} open "
        f"between; discards {stats['connections_discarded']}, sessions {stats['sessions_created']}"
        f", pool_maxsize {stats['pool_maxsize']}"
    )
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    assert server.requests == 2 * CLIENTS
    assert stats["connections_discarded"] == 0
    if mode == "per-thread":
        # A session per request greenlet: one connection per request, none kept between.
        assert first == CLIENTS
        assert server.accepted == 2 * CLIENTS
        assert between == 0
        assert stats["sessions_created"] == 2 * CLIENTS
    else:
        # One session per worker process: the second wave reuses the first's connections.
        assert first <= CLIENTS
        assert server.accepted == first
        assert between == first
        assert stats["sessions_created"] == 1
    assert wait_until(lambda: server.open == 0, 10), f"{server.open} open after gunicorn stopped"
