"""PoolStats, the snapshot that ``ThreadLocalSessionPool.stats()`` returns."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._adapter import Lifeline

__all__ = ["PoolStats"]


@dataclass(frozen=True)
class PoolStats:
    """A consistent snapshot of one pool's counters, taken under the pool's lock.

    Every count is exact under any number of threads; a forked child starts its own counts at
    zero. Counts cover the pool's own adapters (the defaults and ``mounts`` given as option dicts);
    adapters made by a ``mounts`` factory are the user's and are not counted.

    Example::

        stats = pool.stats()
        assert stats.connections_discarded == 0
        print(f"{stats.connections_opened} connections for {stats.sessions_created} sessions")

    :param sessions_created: sessions the pool has made.
    :param sessions_closed: sessions the pool has closed, their pooled sockets included.
    :param sessions_open: ``sessions_created - sessions_closed``.
    :param connections_opened: TCP connections opened through the pool's adapters, reconnects of a
        urllib3 connection object included.
    :param connections_discarded: connections urllib3 closed because a host pool was full (each
        one logged "Connection pool is full, discarding connection").
    :param pool_maxsize: the ``pool_maxsize`` now in force: the size new sessions start their
        host pools at (the sizing rule's, raised by executors in shared mode; it never shrinks),
        or the largest host pool of a session still open, if a hand-back grew one past that. Not a
        high-water mark: a grown host pool's size goes when its session is closed (``close_all()``,
        its thread's end); ``pool_growths`` keeps counting its growths.
    :param connections_expired: pooled connections closed, once each, because they were older
        than ``max_connection_age`` or idle longer than ``keepalive_expiry``.
    :param stale_retries: requests sent again by ``retry_stale`` after a reused connection failed
        before any byte of the response arrived (urllib3's own retries are not counted).
    :param pool_growths: slots added to host pools because a connection came back to a full one
        (``pool_block=False``), where urllib3 alone would have discarded it.
    """

    sessions_created: int
    sessions_closed: int
    sessions_open: int
    connections_opened: int
    connections_discarded: int
    pool_maxsize: int
    connections_expired: int
    stale_retries: int
    pool_growths: int = 0


class Counters:
    """The lock-protected counts behind :class:`PoolStats`, shared by a pool and its adapters.

    It holds no reference to the pool, so connections and cleanup callbacks can count into it
    without keeping the pool alive.
    """

    __slots__ = (
        "connections_discarded",
        "connections_expired",
        "connections_opened",
        "grown",
        "lock",
        "pool_growths",
        "pool_maxsize",
        "sessions_closed",
        "sessions_created",
        "stale_retries",
    )

    def __init__(self, pool_maxsize: int) -> None:
        self.lock = threading.Lock()
        self.pool_maxsize = pool_maxsize  # the sizing rule's size, which new sessions start at
        # Per open session (its Lifeline, a key only): its largest host pool a hand-back grew.
        self.grown: dict[object, int] = {}
        self.pool_growths = 0
        self.sessions_created = 0
        self.sessions_closed = 0
        self.connections_opened = 0
        self.connections_discarded = 0
        self.connections_expired = 0
        self.stale_retries = 0

    def connection_opened(self) -> None:
        with self.lock:
            self.connections_opened += 1

    def connection_discarded(self) -> None:
        with self.lock:
            self.connections_discarded += 1

    def connection_expired(self) -> None:
        with self.lock:
            self.connections_expired += 1

    def pool_grew(self, maxsize: int, lifeline: Lifeline | None) -> None:
        with self.lock:
            self.pool_growths += 1
            # A closed session's host pool keeps no connection: its size is not in force. Its
            # lifeline is retired before session_closed() drops its entry, so none comes back.
            if lifeline is not None and not lifeline.retired:
                self.grown[lifeline] = max(self.grown.get(lifeline, 0), maxsize)

    def stale_retry(self) -> None:
        with self.lock:
            self.stale_retries += 1

    def session_closed(self, lifeline: object) -> None:
        with self.lock:
            self.sessions_closed += 1
            self.grown.pop(lifeline, None)

    def snapshot(self) -> PoolStats:
        with self.lock:
            return PoolStats(
                sessions_created=self.sessions_created,
                sessions_closed=self.sessions_closed,
                sessions_open=self.sessions_created - self.sessions_closed,
                connections_opened=self.connections_opened,
                connections_discarded=self.connections_discarded,
                pool_maxsize=max(self.pool_maxsize, max(self.grown.values(), default=0)),
                connections_expired=self.connections_expired,
                stale_retries=self.stale_retries,
                pool_growths=self.pool_growths,
            )

    def reset_after_fork(self) -> None:
        """Start the child's own counts; the parent's lock may have been held by a lost thread."""
        self.lock = threading.Lock()
        self.sessions_created = self.sessions_closed = 0
        self.connections_opened = self.connections_discarded = 0
        self.connections_expired = self.stale_retries = 0
        self.pool_growths = 0
        self.grown = {}
