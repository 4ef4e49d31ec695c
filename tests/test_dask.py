"""threadsession.dask on a real LocalCluster: 2 worker processes x 4 threads, 8 connections."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import dask_tasks
import pytest
from helpers import SERVER_THREAD_PREFIX, run_child, wait_until

WORKERS = 2
THREADS = 4
TIMEOUT = 60
# distributed's process-wide executor for (de)serialising large messages: made on first use, and
# kept for the life of the process by design (distributed.utils._offload_executor).
DASK_PROCESS_THREADS = ("Dask-Offload",)


@pytest.fixture(autouse=True)
def _no_thread_left():
    """Overrides conftest's: every thread the test started has ended, but Dask's own."""
    before = set(threading.enumerate())

    def left() -> list[threading.Thread]:
        return [
            t
            for t in threading.enumerate()
            if t not in before
            and t.is_alive()
            and not t.name.startswith((SERVER_THREAD_PREFIX, *DASK_PROCESS_THREADS))
        ]

    yield
    assert wait_until(lambda: not left(), 10), f"test left threads running: {left()}"


def test_the_core_package_never_imports_dask():
    child = run_child(
        """
        import sys, threadsession
        threadsession.default_pool().session()
        loaded = {"threadsession.dask", "dask", "distributed"} & set(sys.modules)
        assert not loaded, loaded
        """
    )
    assert child.returncode == 0, child.stderr


def test_one_session_per_worker_thread_closed_by_the_plugin(server, monkeypatch, tmp_path):
    distributed = pytest.importorskip("distributed")
    from threadsession.dask import SessionPoolPlugin, worker_stats

    tests = str(Path(__file__).resolve().parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
    )
    cluster = client = None
    try:
        cluster = distributed.LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=THREADS,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # The scheduler's HTTP server (health and metrics) still starts, on 8787 unless told
            # otherwise, with a UserWarning if that port is taken: any free port instead.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            local_directory=str(tmp_path),  # the workers' scratch space
            timeout=TIMEOUT,
        )
        client = distributed.Client(cluster, timeout=TIMEOUT)
        client.register_plugin(SessionPoolPlugin())
        # 10 ms each: every worker always has more tasks than threads, so all 4 of its threads
        # run (Dask starts one thread per task submitted until it has nthreads, and keeps them).
        urls = [f"{server.url}/?delay=10&n={n}" for n in range(400)]
        futures = client.map(dask_tasks.fetch, urls, pure=False)
        distributed.wait(futures, timeout=TIMEOUT)
        triples = client.gather(futures)
        assert server.requests == 400
        assert len(set(triples)) == WORKERS * THREADS
        assert len({pid for pid, _, _ in triples}) == WORKERS
        assert server.accepted == WORKERS * THREADS
        assert server.open == WORKERS * THREADS
        stats = worker_stats(client)
        print("worker_stats:", stats)
        assert len(stats) == WORKERS
        for one in stats.values():
            assert one["sessions_created"] == one["sessions_open"] == THREADS, stats
            assert one["connections_opened"] == THREADS, stats
            assert one["connections_discarded"] == 0, stats

        # Removing the plugin runs its teardown: close_all() in every worker, sockets included.
        client.unregister_worker_plugin(SessionPoolPlugin.name)
        assert wait_until(lambda: server.open == 0, 10), f"{server.open} open after teardown"
        assert all(one["sessions_open"] == 0 for one in worker_stats(client).values())

        # The pools stay usable: the threads make fresh sessions, closed again as workers close.
        client.register_plugin(SessionPoolPlugin())
        futures = client.map(dask_tasks.fetch, urls[:80], pure=False)
        distributed.wait(futures, timeout=TIMEOUT)
        assert server.accepted == 2 * WORKERS * THREADS
        assert server.open == WORKERS * THREADS
        del futures
    finally:
        if client is not None:
            client.close(timeout=TIMEOUT)
        if cluster is not None:
            cluster.close(timeout=TIMEOUT)
    assert wait_until(lambda: server.open == 0, 10), f"{server.open} open after cluster.close()"
