"""Dask distributed: close every session of a worker process as it closes, and read its stats.

Needs ``distributed`` (``pip install 'threadsession[dask]'``). ``import threadsession`` never
imports this module or Dask; import ``threadsession.dask`` where a Dask client is made.

Each Dask worker process runs its tasks in a thread pool of ``nthreads`` threads that live as long
as the worker, so per-thread mode gives every worker exactly ``nthreads`` sessions, reused by every
task: a cluster holds up to workers x threads x hosts connections.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from distributed import WorkerPlugin

from ._pool import close_all, default_pool

if TYPE_CHECKING:
    from collections.abc import Callable

    from distributed import Client, Worker

    from ._pool import ThreadLocalSessionPool

__all__ = ["SessionPoolPlugin", "worker_stats"]


class SessionPoolPlugin(WorkerPlugin):  # type: ignore[misc]  # distributed is Any to mypy (setup.cfg)
    """A worker plugin that closes every threadsession session of the worker when it closes.

    Its ``teardown`` runs ``threadsession.close_all()`` in the worker process when the worker
    closes or the plugin is removed (``client.unregister_worker_plugin("threadsession")``), so
    every pool's sessions and sockets close then, not when the process dies. Register it once per
    cluster; workers that join later get it too. Idempotent: registering it again keeps the one
    already there. Pools stay usable, so tasks that run after a removal make fresh sessions.

    Example::

        client.register_plugin(SessionPoolPlugin())
        sizes = client.gather(client.map(fetch, urls))  # fetch is a @with_session function
        client.close()  # each worker's teardown closes its sessions
    """

    name = "threadsession"  # the plugin's name on the workers, for unregister_worker_plugin()
    idempotent = True

    def teardown(self, worker: Worker) -> None:
        """Close every session of every pool in this worker process (``close_all()``).

        Runs in the worker's event-loop thread, after its tasks are done.

        :param worker: the closing worker (unused: sessions are per process, not per worker).
        """
        close_all()


def _pool_stats(pool: Callable[[], ThreadLocalSessionPool]) -> dict[str, int]:
    return dataclasses.asdict(pool().stats())


def worker_stats(
    client: Client,
    pool: Callable[[], ThreadLocalSessionPool] = default_pool,
) -> dict[str, dict[str, int]]:
    """Return each worker's ``PoolStats`` as a dict, keyed by worker address.

    Calls ``pool()`` in every worker process through ``client.run`` (outside the task threads)
    and takes its stats there: by default ``default_pool()``, the pool of bare
    ``@with_session``. Safe from any thread of the client's process; a snapshot per worker.

    Example::

        for address, stats in worker_stats(client).items():
            print(address, stats["connections_opened"], stats["sessions_open"])

    :param client: a synchronous ``distributed.Client``.
    :param pool: a function of no arguments returning the pool to read, called in each worker;
        it is pickled to the workers, so it must reach the pool through a module they can
        import (``lambda: mymodule.POOL``).
    :raises TypeError: if ``client`` is asynchronous (its ``run`` returns an awaitable).
    """
    result = None if getattr(client, "asynchronous", False) else client.run(_pool_stats, pool)
    if not isinstance(result, dict):
        raise TypeError(
            f"worker_stats() needs a synchronous distributed.Client, got {client!r}; with an "
            f"asynchronous one, await client.run(...) yourself"
        )
    return {str(address): dict(stats) for address, stats in result.items()}
