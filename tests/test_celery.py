"""The README's Celery recipe with a real worker: prefork pool, filesystem broker, file results."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import wait_until

pytest.importorskip("celery")

TESTS = Path(__file__).resolve().parent
TASKS = 24
CONCURRENCY = 2
TIMEOUT = 60


def test_prefork_worker_one_session_per_child_all_closed_at_shutdown(server, tmp_path, monkeypatch):
    monkeypatch.setenv("THREADSESSION_CELERY_DIR", str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.delitem(sys.modules, "celery_app", raising=False)
    celery_app = importlib.import_module("celery_app")
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-W", "always::ResourceWarning", "-m", "celery", "-A", "celery_app",
         "worker", "--pool=prefork",
         f"--concurrency={CONCURRENCY}", "--loglevel=INFO", "--without-heartbeat",
         "--without-gossip", "--without-mingle", "--hostname=threadsession@localhost"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        results = [celery_app.fetch.delay(f"{server.url}/?n={n}") for n in range(TASKS)]
        triples = [tuple(result.get(timeout=TIMEOUT, interval=0.05)) for result in results]
        pids = {pid for pid, _, _ in triples}
        assert 1 <= len(pids) <= CONCURRENCY
        assert server.requests == 2 * TASKS
        # One session per child (its main thread runs every task), one connection per session.
        assert len(set(triples)) == len(pids), triples
        assert server.accepted == len(pids) <= CONCURRENCY
        assert server.open == len(pids)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: children exit, then the worker
        try:
            worker.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(TIMEOUT)
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert worker.returncode == 0, output
    assert "ResourceWarning" not in output, output
    assert wait_until(lambda: server.open == 0, 10), f"{server.open} open after the worker stopped"
    exits = [json.loads(p.read_text()) for p in (tmp_path / "exits").glob("*.json")]
    print(f"children used {sorted(pids)}; server accepted {server.accepted}; exits {exits}")
    # Every child that ran a task closed its session as it exited (the recipe's signal handler).
    assert pids <= {e["pid"] for e in exits}, (exits, output)
    assert all(e["open_after"] == 0 for e in exits), exits
    assert all(e["open_before"] == 1 for e in exits if e["pid"] in pids), exits
