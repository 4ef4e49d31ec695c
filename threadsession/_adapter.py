"""The HTTPAdapter the pool builds: the only module that touches urllib3 internals.

Each hook into urllib3 is a small subclass; beside each one is the urllib3 fact it relies on and
the versions it was checked on (1.26.20 for Python 3.9 users pinned by botocore, 2.6.3 that 3.9
resolves today, and 2.8.0).
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import PoolManager

if TYPE_CHECKING:
    from collections.abc import Iterable

    import requests

    from ._config import AdapterOptions
    from ._stats import Counters

__all__ = ["Lifeline", "PoolAdapter", "abandon_in_child", "grow_session", "retire_session"]


class Lifeline:
    """One session's "closed by its pool" flag, shared by its adapters and their host pools.

    A separate object so that host pools need no reference back to the adapter or the session.
    """

    __slots__ = ("retired",)

    def __init__(self) -> None:
        self.retired = False


class _ConnectionQueue(queue.LifoQueue):  # type: ignore[type-arg]
    """urllib3's per-host pool queue, made countable, growable and drainable.

    urllib3 keeps ``maxsize`` slots in a LifoQueue: ``None`` for a slot with no connection yet,
    otherwise an idle connection; ``_put_conn`` puts with ``block=False`` and treats
    ``queue.Full`` as "pool is full, discard" (1.26.20, 2.6.3, 2.8.0).
    """

    counters: Counters | None = None

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:  # noqa: FBT001, FBT002  # queue.Queue's signature
        try:
            super().put(item, block, timeout)
        except queue.Full:
            if item is not None and self.counters is not None:
                self.counters.connection_discarded()
            raise

    def grow(self, maxsize: int) -> None:
        """Raise maxsize, adding empty slots under the idle connections: none is dropped."""
        with self.mutex:
            extra = maxsize - self.maxsize
            if extra <= 0:
                return
            self.maxsize = maxsize
            # LifoQueue hands out from the end, so warm connections stay first in line.
            self.queue[:0] = [None] * extra
            self.not_empty.notify(extra)

    def take_connections(self) -> list[Any]:
        """Swap every idle connection for an empty slot; return them to be closed by the caller."""
        with self.mutex:
            taken = [conn for conn in self.queue if conn is not None]
            self.queue[:] = [None] * len(self.queue)
        return taken

    def reset_after_fork(self) -> None:
        """Give a forked child fresh locks: a thread lost in the fork may have held the old one."""
        self.mutex = threading.Lock()
        self.not_empty = threading.Condition(self.mutex)
        self.not_full = threading.Condition(self.mutex)
        self.all_tasks_done = threading.Condition(self.mutex)


class _CountingConnection(HTTPConnection):
    """Counts every TCP connect, reconnects of the same object included."""

    _ts_counters: Counters | None = None

    def connect(self) -> None:
        # urllib3 calls connect() for the first request on a connection object and again after
        # it was closed (Connection: close, dropped keep-alive) (1.26.20, 2.6.3, 2.8.0).
        super().connect()
        if self._ts_counters is not None:
            self._ts_counters.connection_opened()


class _CountingHTTPSConnection(_CountingConnection, HTTPSConnection):
    pass


def _close_all(connections: Iterable[Any]) -> None:
    for conn in connections:
        conn.close()


class _HostPool(HTTPConnectionPool):
    """A urllib3 host pool that counts, grows, and never keeps a socket after its session closed."""

    ConnectionCls = _CountingConnection
    QueueCls = _ConnectionQueue
    _ts_counters: Counters
    _ts_lifeline: Lifeline
    _ts_queue: _ConnectionQueue

    def _ts_bind(self, counters: Counters, lifeline: Lifeline, maxsize: int) -> None:
        # urllib3 builds the queue in __init__ as QueueCls(maxsize) (1.26.20, 2.6.3; 2.8.0 via
        # _new_pool_queue) and swaps self.pool to None on close(): keep our own reference.
        self._ts_queue = self.pool  # type: ignore[assignment]
        self._ts_queue.counters = counters
        self._ts_queue.grow(maxsize)
        self._ts_counters = counters
        self._ts_lifeline = lifeline

    def _new_conn(self) -> Any:
        conn = super()._new_conn()
        conn._ts_counters = self._ts_counters  # type: ignore[attr-defined]
        return conn

    def _put_conn(self, conn: Any) -> None:
        if conn is not None and self._ts_lifeline.retired:
            conn.close()
            conn = None  # give the slot back, so pool_block accounting stays right
        super()._put_conn(conn)
        # urllib3's close() sets self.pool to None, then drains the queue; a hand-back that read
        # self.pool before the swap can land after the drain and would sit there until GC. Check
        # again after putting, and drain ourselves.
        if conn is not None and (self.pool is None or self._ts_lifeline.retired):
            _close_all(self._ts_queue.take_connections())


class _HTTPSHostPool(_HostPool, HTTPSConnectionPool):
    ConnectionCls = _CountingHTTPSConnection


def _close_host_pool(pool: HTTPConnectionPool) -> None:
    pool.close()


class _PoolManager(PoolManager):
    """A PoolManager whose host pools are ours, and that closes the pools it drops."""

    def __init__(self, counters: Counters, lifeline: Lifeline, maxsize: int, **kwargs: Any) -> None:
        # ``maxsize`` in connection_pool_kw is part of every pool key: it must never change, or
        # every later lookup makes a new host pool and orphans the warm one. Growth goes to the
        # queues instead (see grow()).
        super().__init__(maxsize=maxsize, **kwargs)
        self.pool_classes_by_scheme = {"http": _HostPool, "https": _HTTPSHostPool}
        # urllib3 2 made RecentlyUsedContainer without dispose_func, so clear() and LRU eviction
        # only drop host pools and their idle sockets wait for GC (2.6.3, 2.8.0; 1.26.20 closed
        # them): close them at once, as 1.26 did.
        self.pools.dispose_func = _close_host_pool
        self._ts_counters = counters
        self._ts_lifeline = lifeline
        self._ts_maxsize = maxsize

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        # Called under self.pools.lock by connection_from_pool_key (1.26.20, 2.6.3, 2.8.0), so
        # grow() below sees every pool or this one sees the new size.
        pool = super()._new_pool(scheme, host, port, request_context)
        if isinstance(pool, _HostPool):
            pool._ts_bind(self._ts_counters, self._ts_lifeline, self._ts_maxsize)
        return pool

    def _ts_host_pools(self) -> list[_HostPool]:
        # RecentlyUsedContainer forbids iteration; _container is its OrderedDict (1.26.20, 2.x).
        with self.pools.lock:
            return [p for p in self.pools._container.values() if isinstance(p, _HostPool)]

    def grow(self, maxsize: int) -> None:
        with self.pools.lock:
            if maxsize <= self._ts_maxsize:
                return
            self._ts_maxsize = maxsize
            pools = [p for p in self.pools._container.values() if isinstance(p, _HostPool)]
        for pool in pools:
            pool._ts_queue.grow(maxsize)

    def abandon_in_child(self) -> None:
        """In a forked child: close the inherited sockets without taking a lock the parent held."""
        self.pools.lock = threading.RLock()
        for pool in self._ts_host_pools():
            pool._ts_queue.reset_after_fork()
            # Closing the child's copy of the fd sends nothing: the parent's connection lives on.
            _close_all(pool._ts_queue.take_connections())


class PoolAdapter(HTTPAdapter):
    """The HTTPAdapter the pool mounts: counts connections and discards, grows, retires.

    :param counters: where connects and discards are counted.
    :param lifeline: the session's "closed by the pool" flag.
    :param options: pool_connections, pool_block, max_retries, as on HTTPAdapter.
    :param maxsize: the pool_maxsize in force.
    """

    def __init__(
        self, counters: Counters, lifeline: Lifeline, options: AdapterOptions, maxsize: int
    ) -> None:
        # HTTPAdapter.__init__ calls init_poolmanager, which needs these.
        self._ts_counters = counters
        self._ts_lifeline = lifeline
        super().__init__(
            pool_connections=options.pool_connections,
            pool_maxsize=maxsize,
            max_retries=options.max_retries,
            pool_block=options.pool_block,
        )

    def init_poolmanager(
        self,
        connections: int,
        maxsize: int,
        block: bool = False,  # noqa: FBT001, FBT002  # HTTPAdapter's signature
        **pool_kwargs: Any,
    ) -> None:
        """Build our PoolManager; HTTPAdapter calls this from __init__ and __setstate__."""
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _PoolManager(
            self._ts_counters,
            self._ts_lifeline,
            maxsize,
            num_pools=connections,
            block=block,
            **pool_kwargs,
        )

    def grow(self, maxsize: int) -> None:
        """Raise pool_maxsize of every host pool, present and future, keeping idle connections."""
        self._pool_maxsize = max(self._pool_maxsize, maxsize)
        self.poolmanager.grow(maxsize)


def _pool_adapters(session: requests.Session) -> list[PoolAdapter]:
    return [a for a in session.adapters.values() if isinstance(a, PoolAdapter)]


def retire_session(session: requests.Session, lifeline: Lifeline) -> None:
    """Close a session for good: its idle sockets now, every later hand-back once it is done."""
    lifeline.retired = True
    session.close()


def grow_session(session: requests.Session, maxsize: int) -> None:
    """Raise pool_maxsize on every adapter the pool built for this session."""
    for adapter in _pool_adapters(session):
        adapter.grow(maxsize)


def abandon_in_child(session: requests.Session, lifeline: Lifeline) -> None:
    """In a forked child, retire a parent's session: close its inherited sockets, take no lock."""
    lifeline.retired = True
    for adapter in _pool_adapters(session):
        manager = adapter.poolmanager
        if isinstance(manager, _PoolManager):
            manager.abandon_in_child()
