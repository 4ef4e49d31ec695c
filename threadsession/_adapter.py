"""The HTTPAdapter the pool builds: the only module that touches urllib3 internals.

Each hook into urllib3 is a small subclass; beside each one is the urllib3 fact it relies on and
the versions it was checked on (1.26.20 for Python 3.9 users pinned by botocore, 2.6.3 that 3.9
resolves today, and 2.8.0).
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.cookiejar
import logging
import os
import queue
import socket
import ssl
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import EmptyPoolError
from urllib3.poolmanager import PoolManager, ProxyManager
from urllib3.util.ssltransport import SSLTransport
from urllib3.util.timeout import Timeout

from ._config import HOST_POOLS_FLOOR, hard_cap
from ._memo import MAX_KEY_LENGTH, Memo, Originals

if TYPE_CHECKING:
    from collections.abc import Iterable

    from ._config import AdapterOptions, Lifetime
    from ._stats import Counters

__all__ = [
    "Lifeline",
    "PoolAdapter",
    "abandon_all_in_child",
    "abandon_in_child",
    "check_urllib3",
    "grow_session",
    "retire_session",
]


def check_urllib3(version: str) -> None:
    """Refuse urllib3-future, which installs itself as ``urllib3`` (its versions are X.Y.9NN).

    :raises ImportError: naming the version found and the fix.
    """
    patch = version.split(".")[2:3]
    if patch and patch[0].isdigit() and int(patch[0]) >= 900:
        raise ImportError(
            f"threadsession needs urllib3 1.26 or 2.x, but the 'urllib3' imported here is "
            f"urllib3-future {version} (installed by niquests or another package; it replaces "
            f"urllib3 and its connection pools work differently). Fix: keep niquests in a "
            f"virtualenv of its own, or reinstall it without the override, as urllib3-future "
            f"documents: pip uninstall -y urllib3-future urllib3 && pip install 'urllib3<3' && "
            f"URLLIB3_NO_OVERRIDE=1 pip install --force-reinstall niquests --no-binary "
            f"urllib3-future"
        )


check_urllib3(urllib3.__version__)  # type: ignore[attr-defined]  # it is, untyped

logger = logging.getLogger(__name__)


class Lifeline:
    """One session's "closed by its pool" flag, shared by its adapters and their host pools.

    A separate object so that host pools need no reference back to the adapter or the session.
    """

    __slots__ = ("retired",)

    def __init__(self) -> None:
        self.retired = False


class _ConnectionQueue:
    """urllib3's per-host pool queue (``QueueCls``): LIFO, countable, growable, drainable.

    Our own class, not a ``queue.LifoQueue`` subclass: what that name is depends on the program
    (after ``gevent.monkey.patch_all()`` it is gevent's queue, with none of the stdlib's
    internals). It relies only on ``threading.Lock``/``threading.Condition``, looked up when the
    queue is made, so under gevent they are gevent's and a wait yields to other greenlets.

    What urllib3 asks of it (1.26.20, 2.6.3, 2.8.0): ``QueueCls(maxsize)``, then ``maxsize``
    ``put(None)`` to fill the slots; ``_get_conn`` calls ``get(block=pool.block, timeout=...)``
    and opens a new connection on ``queue.Empty`` (``EmptyPoolError`` when blocking);
    ``_put_conn`` calls ``put(conn, block=False)`` and on ``queue.Full`` closes the connection
    and logs "Connection pool is full, discarding connection" (``qsize()`` in that line);
    ``close()`` and the pool's finalizer drain it with ``get(block=False)`` until ``queue.Empty``.
    Items are ``None`` (a slot with no connection yet) or an idle connection.

    With ``growable`` (``pool_block=False``) ``put`` never refuses a connection: when every slot
    holds an idle one, the queue grows by one slot (counted, one DEBUG line). Otherwise
    ``maxsize`` is a hard cap, as in urllib3. ``put`` never waits: urllib3 puts with
    ``block=False`` only, into a queue that has room.
    """

    counters: Counters | None = None
    lifeline: Lifeline | None = None  # the session's, set by the host pool
    growable = False  # set by the host pool: pool_block=False
    name = ""  # host:port, for the growth log line

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Any] = collections.deque()  # handed out from the right
        self._new_locks()

    def _new_locks(self) -> None:
        # Looked up now, not at import: gevent's patch_all() replaces these names.
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)

    def qsize(self) -> int:
        """Slots now in the queue (empty ones included), as queue.Queue.qsize."""
        return len(self._items)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:  # noqa: FBT001, FBT002  # queue.Queue's signature
        """Take the most recently returned item; raise queue.Empty as queue.Queue.get does."""
        with self._not_empty:
            if block:
                deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
                while not self._items:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise queue.Empty
                    self._not_empty.wait(remaining)
            elif not self._items:
                raise queue.Empty
            return self._items.pop()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:  # noqa: FBT001, FBT002  # queue.Queue's signature
        """Hand back a slot or a connection; a full queue grows or refuses (see the class)."""
        with self._mutex:
            grown = self._put_locked(item)
        if grown is None:
            if self.counters is not None:
                self.counters.connection_discarded()
            raise queue.Full
        if grown:
            if self.counters is not None:
                self.counters.pool_grew(grown, self.lifeline)
            logger.debug(
                "host pool %s grew to %d connections: a connection came back to a full pool",
                self.name,
                grown,
            )

    def _put_locked(self, item: Any) -> int | None:
        """Put under the mutex; return the new maxsize if it grew, 0 if not, None if refused."""
        items, grown = self._items, 0
        if len(items) >= self.maxsize:
            if item is None:
                # The placeholder of a connection opened past maxsize (urllib3 puts None back
                # after a failed request): it had no slot to return.
                return 0
            if not self.growable:
                return None
            if None in items:
                items.remove(None)  # an empty slot makes room: no need to grow
            else:
                self.maxsize = grown = self.maxsize + 1
        items.append(item)
        self._not_empty.notify()
        return grown

    def grow(self, maxsize: int) -> None:
        """Raise maxsize, adding empty slots under the idle connections: none is dropped."""
        with self._mutex:
            extra = maxsize - self.maxsize
            if extra <= 0:
                return
            self.maxsize = maxsize
            # Handed out from the right, so warm connections stay first in line.
            self._items.extendleft([None] * extra)
            self._not_empty.notify(extra)

    def take_connections(self) -> list[Any]:
        """Swap every idle connection for an empty slot; return them to be closed by the caller."""
        with self._mutex:
            taken = [conn for conn in self._items if conn is not None]
            self._items = collections.deque([None] * len(self._items))
        return taken

    def reset_after_fork(self) -> None:
        """Give a forked child fresh locks: a thread lost in the fork may have held the old one.

        Takes no lock; the queue stays usable with what it held.
        """
        self._new_locks()


class _Counting:
    """Mixed in above whatever connection class urllib3 is using: counts and dates connects.

    Counting happens where a real socket appears on a connection: after ``connect()`` and after
    a request (a wrapper such as vcrpy's stub opens its real connection inside the request, or
    not at all when it replays). Each socket is counted once, so reconnects of the same object
    (after ``Connection: close`` or a dropped keep-alive) count and a replay counts nothing.
    """

    _ts_counters: Counters | None = None
    _ts_counted: object = None  # the socket last counted
    _ts_connected_at = 0.0  # time.monotonic() of the last connect
    _ts_idle_since = 0.0  # time.monotonic() of the last return to the pool

    def connect(self) -> None:
        # urllib3 calls connect() for the first request on a connection object and again after
        # it was closed (Connection: close, dropped keep-alive) (1.26.20, 2.6.3, 2.8.0).
        super().connect()  # type: ignore[misc]
        self._ts_note_connect()

    def _ts_note_connect(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None and sock is not self._ts_counted and _is_connection(sock):
            self._ts_counted = sock
            self._ts_connected_at = time.monotonic()
            if self._ts_counters is not None:
                self._ts_counters.connection_opened()


# What a connection's sock is when a connection was made: a socket, an SSLSocket, urllib3's
# SSLTransport (TLS in TLS through an HTTPS proxy), or a wrapper of a TLS backend of urllib3's or
# another library's: pyOpenSSL's WrappedSocket (urllib3.contrib.pyopenssl), or any other. Each
# of them is a connection, whatever its type. The one known exception is vcrpy's replay, which
# puts a VCRFakeSocket there (vcr/stubs, vcrpy 5 to 9.4) for a connection never made. That type
# is rejected by name, not duck-typed: the fake answers fileno() with 0 (stdin, a valid fd), has
# no sendall() today but could gain it (it gained recv() for urllib3-future), and a real
# wrapper need have no fileno() of its own. tests/test_addons.py's vcrpy test fails if vcrpy
# renames it.
_SOCKETS = (socket.socket, SSLTransport)


def _is_connection(sock: object) -> bool:
    if isinstance(sock, _SOCKETS):  # the common case, first
        return True
    stubs = sys.modules.get("vcr.stubs")  # only ever set if the program imported vcrpy
    fake = getattr(stubs, "VCRFakeSocket", None)
    return not (isinstance(fake, type) and isinstance(sock, fake))


_counting_classes: dict[type[Any], type[Any]] = {}


def _counting_class(base: Any, pool_cls: type[Any]) -> type[Any]:
    """Return ``base`` (the ConnectionCls in force) with counting mixed in, made once."""
    made = _counting_classes.get(base)
    if made is None:
        if not isinstance(base, type):
            raise TypeError(
                f"{pool_cls.__name__}.ConnectionCls is {base!r}, not a class: something replaced "
                f"urllib3's connection class with an object threadsession cannot build on (a "
                f"mock?); patch it with a subclass of urllib3.connection.HTTPConnection instead"
            )
        made = type(base.__name__, (_Counting, base), {"__module__": __name__})
        made = _counting_classes.setdefault(base, made)
    return made


def _ours(cls: type[Any]) -> bool:
    return cls.__module__ == __name__


def _note_connect(conn: Any) -> None:
    note = getattr(conn, "_ts_note_connect", None)  # None: a connection class of our own
    if note is not None:
        note()


def _close_all(connections: Iterable[Any]) -> None:
    for conn in connections:
        conn.close()


# What a keep-alive connection the server already closed raises before any byte of the response:
# EOF on the status line (RemoteDisconnected), a reset, a broken pipe, a TLS EOF.
_STALE_ERRORS = (
    http.client.RemoteDisconnected,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
)
_RESENDABLE_BODIES = (bytes, bytearray, memoryview, str)


class _HostPool(HTTPConnectionPool):
    """A urllib3 host pool that counts, grows, and never keeps a socket after its session closed."""

    QueueCls = _ConnectionQueue  # type: ignore[assignment]  # urllib3 2.x types it LifoQueue
    _ts_counters: Counters
    _ts_lifeline: Lifeline
    _ts_lifetime: Lifetime
    _ts_pool_timeout: float | None
    _ts_queue: _ConnectionQueue
    _ts_connections: weakref.WeakSet[Any]
    _ts_dropped = False  # the manager let this host pool go (LRU eviction or clear())

    def _ts_bind(self, manager: _ManagerHooks) -> None:
        # urllib3 builds the queue in __init__ as QueueCls(maxsize) (1.26.20, 2.6.3; 2.8.0 via
        # _new_pool_queue) and swaps self.pool to None on close(): keep our own reference.
        self._ts_queue = self.pool  # type: ignore[assignment]
        self._ts_queue.counters = manager._ts_counters
        self._ts_queue.lifeline = manager._ts_lifeline
        self._ts_queue.name = f"{self.host}:{self.port}"
        # pool_block=True: pool_maxsize is a hard cap, threads wait for a connection (urllib3's
        # blocking get). Otherwise urllib3 opens a connection when none is idle, so keep it
        # when it comes back: a discard only costs the next request a handshake.
        self._ts_queue.growable = not self.block
        self._ts_queue.grow(manager._ts_maxsize)
        self._ts_counters = manager._ts_counters
        self._ts_lifeline = manager._ts_lifeline
        self._ts_lifetime = manager._ts_lifetime
        self._ts_pool_timeout = manager._ts_pool_timeout
        # Every connection this pool made and that is still alive, idle or checked out: a forked
        # child must close its copy of a socket another thread had in flight at the fork, which
        # sits in no queue. CPython never frees the lost threads' frames in the child (3.9 to
        # 3.13), so nothing else would close it while the child lives.
        self._ts_connections = weakref.WeakSet()

    def _new_conn(self) -> Any:
        # Whatever ConnectionCls urllib3's class has now (vcrpy and other add-ons patch
        # HTTPConnectionPool.ConnectionCls at run time), counted; urllib3's _new_conn builds
        # self.ConnectionCls(host, port, ...) (1.26.20, 2.6.3, 2.8.0).
        owner = next(k for k in type(self).__mro__ if "ConnectionCls" in vars(k) and not _ours(k))
        self.ConnectionCls = _counting_class(vars(owner)["ConnectionCls"], owner)
        conn = super()._new_conn()
        conn._ts_counters = self._ts_counters  # type: ignore[attr-defined]
        self._ts_connections.add(conn)
        return conn

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn: Any = super()._get_conn(timeout)
        lifetime = self._ts_lifetime
        # A pooled connection has a socket; a fresh one or a slot's placeholder has none yet.
        if lifetime.expires and conn.sock is not None:
            now = time.monotonic()
            age, idle = lifetime.max_connection_age, lifetime.keepalive_expiry
            if (age is not None and now - conn._ts_connected_at >= age) or (
                idle is not None and now - conn._ts_idle_since >= idle
            ):
                # The same object reconnects on the request (urllib3 reopens a closed one).
                conn.close()
                self._ts_counters.connection_expired()
        return conn

    def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        # urlopen calls _make_request(conn, method, url, body=..., ...) for every attempt, and
        # lets socket errors of send and status line through unwrapped (1.26.20, 2.6.3, 2.8.0).
        reused = conn.sock is not None
        try:
            response = super()._make_request(conn, method, url, *args, **kwargs)
        except _STALE_ERRORS:
            body = kwargs.get("body")  # by keyword in 1.26.20 and 2.x; by position it would
            # be timeout in 1.26
            if not (
                reused
                and method.upper() in self._ts_lifetime.retry_methods
                and (body is None or isinstance(body, _RESENDABLE_BODIES))
            ):
                raise
        # The server closed the kept-alive connection before answering: send once more on a
        # new one. Its failure is the caller's, through urllib3's own retry handling.
        else:
            _note_connect(conn)
            return response
        conn.close()
        self._ts_counters.stale_retry()
        response = super()._make_request(conn, method, url, *args, **kwargs)
        _note_connect(conn)
        return response

    def urlopen(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        """Pass pool_timeout, which requests' HTTPAdapter never does, when pool_block is on."""
        if self.block and kwargs.get("pool_timeout") is None:
            wait: object = self._ts_pool_timeout
            if wait is None:  # no longer than the request's connect timeout
                timeout = kwargs.get("timeout")
                wait = timeout.connect_timeout if isinstance(timeout, Timeout) else timeout
            kwargs["pool_timeout"] = wait if isinstance(wait, (int, float)) else None
        return super().urlopen(method, url, *args, **kwargs)

    def _put_conn(self, conn: Any) -> None:
        if conn is not None:
            if self._ts_lifeline.retired or self._ts_dropped:
                conn.close()
                # Give the slot back for pool_block's accounting; a connection opened past
                # pool_maxsize had none, and the queue drops such a placeholder.
                with contextlib.suppress(AttributeError):  # self.pool is None once closed
                    self.pool.put(None, block=False)  # type: ignore[union-attr]
                return
            conn._ts_idle_since = time.monotonic()
        super()._put_conn(conn)
        # The session may have closed, or the manager dropped this host pool, while we handed
        # back: its drain can miss a connection put after it. Check again after putting.
        if conn is not None and (
            self.pool is None or self._ts_lifeline.retired or self._ts_dropped
        ):
            _close_all(self._ts_queue.take_connections())


class _HTTPSHostPool(_HostPool, HTTPSConnectionPool):
    pass


def _drop_host_pool(pool: HTTPConnectionPool) -> None:
    """Let a host pool go, as a manager does: close its idle sockets, keep it usable.

    urllib3 (1.26.16+ and 2.x) no longer closes evicted or cleared host pools, because a thread
    may still be sending on one (urllib3 #1252, #2954); their idle sockets then wait for GC.
    Close the idle ones now, and have every later hand-back closed, never pooled.
    """
    if isinstance(pool, _HostPool):
        pool._ts_dropped = True
        _close_all(pool._ts_queue.take_connections())


# ---- In a forked child -------------------------------------------------------------------------
#
# CPython runs the thread-exit closers of the threads a fork leaves behind inside os.fork(), in the
# child, before any at-fork hook (3.9 to 3.13), and a lock one of those threads held stays held
# forever there: a BufferedReader's (a reply being read), a queue's or a manager's mutex, a
# Counters lock, OpenSSL's own (SSL_free() may take the SSL_CTX's session-cache lock). So the code
# below, and its callers in _pool (the at-fork hooks and the closers' pid-mismatch branch), take
# no lock and call nothing that may take one: no close() through http.client, urllib3 or ssl, no
# logging. What they touch, and why each is safe:
# - Plain attributes and containers (Lifeline.retired, conn.sock, SSLSocket._sslobj,
#   session.adapters, adapter.proxy_manager, RecentlyUsedContainer._container and .lock, the
#   WeakSets below): read and written under the GIL, which the child's one thread holds; a lost
#   thread left each consistent, since none of them changes in C code that releases the GIL.
# - _ConnectionQueue.reset_after_fork() (fresh locks, the old ones unread) and then
#   take_connections() (those fresh locks only).
# - socket.socket.detach(): the C detach sets the object's fd to -1 and returns it, taking no lock;
#   os.close() closes this process's copy only: nothing reaches the server (no FIN, no TLS
#   close_notify), and the parent's connection and its request in flight go on.
# - The objects are then dropped, and their finalizers are harmless. A detached socket has no fd
#   (its close, or the last makefile() reference going, closes nothing and warns nothing), so it
#   can never close an fd number the child has reused. A reply's BufferedReader is closed, under
#   its own lock, only by the finalizer of a reply nothing references: one a lost thread was
#   reading is referenced by that thread's frame, which CPython never frees in the child (3.9 to
#   3.13). urllib3 2's host-pool finalizer closes what is in the queue: take_connections()
#   emptied it. The TLS state of each socket goes into _KEPT_IN_CHILD, so SSL_free() never runs.
#   Later use of a parent's reply or connection by the child's own code fails (EBADF).

# Every host pool and manager we built that is still alive, whichever session owns it (or owned
# it: closed, mid-close on another thread at the fork, evicted): the child sweeps them all.
_host_pools: weakref.WeakSet[_HostPool] = weakref.WeakSet()
_managers: weakref.WeakSet[_ManagerHooks] = weakref.WeakSet()
# TLS objects a forked child inherited and must never free (see above). The memory is the
# parent's, already in the child (copy-on-write): keeping it costs nothing.
_KEPT_IN_CHILD: list[Any] = []
_TLS_LAYERS = 3  # a socket under at most TLS in TLS (urllib3 2, an HTTPS proxy) and a spare


def _release_fd_in_child(sock: Any) -> None:
    """Close this process's copy of a socket's fd; leave the object nothing to use or close."""
    for _ in range(_TLS_LAYERS):
        if isinstance(sock, socket.socket):
            # Without _sslobj, an SSLSocket reads and writes as a plain (detached) socket.
            tls = getattr(sock, "_sslobj", None) if isinstance(sock, ssl.SSLSocket) else None
            if tls is not None:
                _KEPT_IN_CHILD.append(tls)
                sock._sslobj = None  # type: ignore[attr-defined]
            fd = socket.socket.detach(sock)  # socket and SSLSocket (3.9 to 3.13)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
            return
        if sock is None:
            return
        # urllib3 2's SSLTransport (2.6.3, 2.8.0) and pyOpenSSL's WrappedSocket (1.26.20) keep
        # their TLS state over the socket in .socket.
        _KEPT_IN_CHILD.append(sock)
        sock = getattr(sock, "socket", None)


def _drop_copy_in_child(conn: Any) -> None:
    """In a forked child, close this process's copy of a connection's socket, in any state.

    Idle, or checked out by a thread lost in the fork with a response half read (whose
    makefile() would keep ``socket.close()`` from closing the fd anyway). Nothing is sent; the
    connection object is left without a socket: used again, it would open its own.
    """
    sock = getattr(conn, "sock", None)  # a plain attribute of http.client's HTTPConnection
    conn.sock = None
    _release_fd_in_child(sock)


def _abandon_host_pool_in_child(pool: _HostPool) -> None:
    pool._ts_lifeline.retired = True  # a connection handed back in the child is closed
    pool._ts_queue.reset_after_fork()
    # The idle ones are in the queue; those other threads had checked out at the fork only in
    # _ts_connections (which holds the idle ones too: dropping a copy twice is a no-op).
    for conn in pool._ts_queue.take_connections():
        _drop_copy_in_child(conn)
    for conn in list(pool._ts_connections):
        _drop_copy_in_child(conn)


def abandon_all_in_child() -> None:
    """In a forked child: drop the copies of every socket of every host pool we built."""
    global _proxy_build  # a lock another thread held at the fork stays held
    _proxy_build = threading.RLock()
    for manager in list(_managers):
        manager.pools.lock = threading.RLock()  # RecentlyUsedContainer's (1.26.20, 2.x)
    for pool in list(_host_pools):
        _abandon_host_pool_in_child(pool)


class _ManagerHooks(PoolManager):
    """Makes a PoolManager (or ProxyManager) use our host pools and let go of them cleanly."""

    _ts_counters: Counters
    _ts_lifeline: Lifeline
    _ts_lifetime: Lifetime
    _ts_pool_timeout: float | None
    _ts_maxsize: int

    def _ts_setup(self, adapter: PoolAdapter, maxsize: int, num_pools: int) -> None:
        # ``maxsize`` in connection_pool_kw is part of every pool key: it must never change, or
        # every later lookup makes a new host pool and orphans the warm one. Growth goes to the
        # queues instead (see grow()).
        self.pool_classes_by_scheme = {"http": _HostPool, "https": _HTTPSHostPool}
        self.pools.dispose_func = _drop_host_pool
        # Past pool_connections hosts, the LRU would drop a warm host pool only to reopen it on
        # the next request there: keep at least HOST_POOLS_FLOOR (capacity costs nothing until a
        # host is seen; _maxsize is RecentlyUsedContainer's bound, 1.26.20 and 2.x).
        self.pools._maxsize = max(num_pools, HOST_POOLS_FLOOR)
        # Copied, not referenced: the pools must not keep the adapter (or its session) alive.
        self._ts_counters = adapter._ts_counters
        self._ts_lifeline = adapter._ts_lifeline
        self._ts_lifetime = adapter._ts_lifetime
        self._ts_pool_timeout = adapter._ts_pool_timeout
        self._ts_maxsize = maxsize
        _managers.add(self)

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
            pool._ts_bind(self)
            _host_pools.add(pool)
        return pool

    def _ts_host_pools(self) -> list[_HostPool]:
        # RecentlyUsedContainer forbids iteration; _container is its OrderedDict (1.26.20, 2.x).
        with self.pools.lock:
            return [p for p in self.pools._container.values() if isinstance(p, _HostPool)]

    def grow(self, maxsize: int) -> None:
        with self.pools.lock:  # an RLock: _ts_host_pools takes it again
            if maxsize <= self._ts_maxsize:
                return
            self._ts_maxsize = maxsize
            pools = self._ts_host_pools()
        for pool in pools:
            pool._ts_queue.grow(maxsize)

    def abandon_in_child(self) -> None:
        """In a forked child: drop the copies of its sockets, take no lock (see above)."""
        self.pools.lock = threading.RLock()
        # Not _ts_host_pools(): the old lock may be held (RecentlyUsedContainer's _container is
        # an OrderedDict, 1.26.20 and 2.x).
        for pool in list(self.pools._container.values()):
            if isinstance(pool, _HostPool):
                _abandon_host_pool_in_child(pool)


class _PoolManager(_ManagerHooks):
    """requests' PoolManager (what HTTPAdapter.init_poolmanager makes), with our host pools."""


class _ProxyManager(_ManagerHooks, ProxyManager):
    """requests' ProxyManager (what HTTPAdapter.proxy_manager_for makes), with our host pools."""


# What a PoolManager's pool_classes_by_scheme is unless somebody set their own (1.26.20, 2.x).
_URLLIB3_POOL_CLASSES = urllib3.poolmanager.pool_classes_by_scheme
_kept_as_built: dict[tuple[type, str], object] = {}  # (manager class, why) already logged
# Held while requests' proxy_manager_for builds and stores a new manager and we adopt it: two
# threads of a shared session asking for one new proxy at once would each build one, and the
# first, overwritten in proxy_manager, would never be closed; and a manager requests has stored
# but we have not adopted yet must not be sent through. Module-wide (a new proxy is rare); a
# forked child gets a new one (see abandon_all_in_child), whichever thread held it at the fork.
# Nothing is logged while it is held (a logging handler may itself send through a proxy),
# unless a patched proxy_manager_for asks for another proxy while it builds one.
_proxy_build = threading.RLock()  # a patch may ask for another proxy


def _adopt(
    adapter: PoolAdapter, manager: Any, base: type, hooks: type[_ManagerHooks]
) -> tuple[Any, str | None]:
    """Give the manager requests built our host pools; return it, and why not if it is kept.

    HTTPAdapter builds its managers in init_poolmanager and proxy_manager_for: a patch or an
    override of either (an ``ssl_context``, a ``source_address``, socket options) has set what it
    wanted when this runs. The manager keeps every setting: only its class changes, to ``hooks``,
    the subclass of ``base`` that adds our hooks and no state of its own (so the layouts match).
    Any other manager, or one already holding host pools or pool classes of its own, is kept as
    built: requests sends through it, but its connections are not counted, grown or expired.
    """
    kind: type = type(manager)  # compared as a value: mypy would narrow ``manager`` to object
    if kind is hooks:
        return manager, None  # adopted already
    if kind is not base:
        return (
            manager,
            f"is a {kind.__module__}.{kind.__qualname__}, not urllib3's own {base.__name__}",
        )
    if manager.pool_classes_by_scheme is not _URLLIB3_POOL_CLASSES:
        return manager, f"is a {base.__name__} with pool_classes_by_scheme of its own"
    if len(manager.pools):
        return manager, f"is a {base.__name__} that already holds host pools"
    # PoolManager and ProxyManager are plain classes with a __dict__ and no __slots__ (1.26.20,
    # 2.x), as are our subclasses: Python allows the assignment between such layouts.
    manager.__class__ = hooks
    maxsize = manager.connection_pool_kw.get("maxsize", 1)  # HTTPConnectionPool's default
    manager._ts_setup(adapter, maxsize, manager.pools._maxsize)
    return manager, None


def _log_kept(manager: Any, why: str | None) -> None:
    """Say once per manager class and reason that a manager is used as built (see _adopt)."""
    token = object()  # dict.setdefault is atomic: of threads racing, one logs
    if why is None or _kept_as_built.setdefault((type(manager), why), token) is not token:
        return
    logger.warning(
        "threadsession: the manager that HTTPAdapter.init_poolmanager or proxy_manager_for "
        "(patched or overridden) built for a pool session %s: it is used as built, and its "
        "connections are not counted in stats(), grown or expired",
        why,
    )


# requests' versions of what PoolAdapter's shortcuts stand in for, and of the helpers they call,
# by the names requests calls them through: each shortcut is taken only while its Originals are
# in force (a test's or an add-on's patch of any of them takes requests' own path, where it is
# called).
_adapters: Any = requests.adapters  # untyped in types-requests
_utils: Any = requests.utils
_models: Any = requests.models
_R_BUILD_RESPONSE = HTTPAdapter.build_response
_PATH_STEP = Originals(
    [
        (HTTPAdapter, "request_url"),
        (_adapters, "select_proxy"),
        (_adapters, "urlparse"),
        (_adapters, "_is_prepared"),  # requests 2.34 calls it first
        (_utils, "urlparse"),
        (_models, "urlsplit"),
    ],
)
# PreparedRequest.path_url (a property of its base RequestEncodingMixin) is found in the classes'
# own dicts, not read through the class: that would run a patched PropertyMock, a call requests
# does not make.
_PATH_URL_MRO = tuple(vars(k) for k in requests.PreparedRequest.__mro__)
_R_PATH_URL = next(d["path_url"] for d in _PATH_URL_MRO if "path_url" in d)


def _path_url_in_force() -> bool:
    found = next((d["path_url"] for d in _PATH_URL_MRO if "path_url" in d), None)
    return found is _R_PATH_URL


_NO_COOKIE_STEP = Originals(
    [
        (_adapters, "extract_cookies_to_jar"),
        (requests.cookies, "MockRequest"),
        (requests.cookies, "MockResponse"),
        (requests.cookies.RequestsCookieJar, "extract_cookies"),
        (requests.cookies.RequestsCookieJar, "make_cookies"),
        (requests.cookies, "_is_prepared"),  # requests 2.34's MockRequest calls it
    ]
)
# request_url's answer for a URL sent with no proxy: the URL's path and query, a pure function.
_PATHS: Memo[str, str] = Memo()


def _sets_no_cookie(resp: Any) -> bool:
    """Tell whether extract_cookies_to_jar would find no cookie to take from ``resp``.

    It reads the Set-Cookie and Set-Cookie2 headers of ``resp._original_response.msg`` and
    returns at once without them (requests 2.28 to 2.34, http.cookiejar 3.9 to 3.13).
    """
    original = getattr(resp, "_original_response", None)
    if not original:
        return True  # extract_cookies_to_jar's own first test
    msg = getattr(original, "msg", None)
    return (
        type(msg) is http.client.HTTPMessage
        and "Set-Cookie" not in msg
        and "Set-Cookie2" not in msg
    )


class PoolAdapter(HTTPAdapter):
    """The HTTPAdapter the pool mounts: counts, grows, expires connections, resends stale ones.

    :param counters: where connects, discards, expiries and stale retries are counted.
    :param lifeline: the session's "closed by the pool" flag.
    :param options: pool_connections, pool_block, max_retries (as on HTTPAdapter), pool_timeout.
    :param maxsize: the pool_maxsize in force.
    :param lifetime: max_connection_age, keepalive_expiry and the methods retry_stale resends.
    """

    # Set by HTTPAdapter.init_poolmanager (requests 2.28 to 2.34), untyped in types-requests.
    _pool_connections: int
    _pool_maxsize: int
    _pool_block: bool

    def __init__(
        self,
        counters: Counters,
        lifeline: Lifeline,
        options: AdapterOptions,
        maxsize: int,
        lifetime: Lifetime,
    ) -> None:
        # HTTPAdapter.__init__ calls init_poolmanager, which needs these.
        self._ts_counters = counters
        self._ts_lifeline = lifeline
        self._ts_lifetime = lifetime
        self._ts_pool_timeout = options.pool_timeout
        self._ts_capped = hard_cap(options) is not None
        # The proxy managers proxy_manager_for has finished with (built and adopted, or kept).
        self._ts_ready_proxies: dict[str, Any] = {}
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
        """Build the PoolManager as HTTPAdapter does (a patch of it runs), with our host pools.

        HTTPAdapter calls this from __init__ and __setstate__.
        """
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        if not hasattr(self, "poolmanager"):  # a test double that builds nothing
            raise TypeError(
                f"threadsession: HTTPAdapter.init_poolmanager ({HTTPAdapter.init_poolmanager!r}) "
                "set no self.poolmanager, which a pool session needs (and requests' "
                "HTTPAdapter.close() reads); have the patch call the original, or set "
                "self.poolmanager, or stub HTTPAdapter.send or use responses/requests-mock instead"
            )
        self.poolmanager, why = _adopt(self, self.poolmanager, PoolManager, _PoolManager)
        _log_kept(self.poolmanager, why)

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Send as HTTPAdapter does; a pool_block wait that times out is a ConnectionError."""
        try:
            return super().send(request, *args, **kwargs)
        except EmptyPoolError as exc:
            # requests lets urllib3's EmptyPoolError escape as is (2.25 to 2.34).
            raise requests.exceptions.ConnectionError(
                f"no free connection to {exc.pool.host}:{exc.pool.port} came back in time: "
                f"pool_block=True and all {self._pool_maxsize} are in use; raise pool_maxsize, "
                f"or pool_timeout (or the connect timeout) to wait longer",
                request=request,
            ) from exc

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        """Return the URL to send, as HTTPAdapter does; with no proxy, from a memo."""
        url = request.url
        if (
            proxies
            or type(url) is not str
            or len(url) > MAX_KEY_LENGTH
            or type(request) is not requests.PreparedRequest
            or not _PATH_STEP.in_force()
            or not _path_url_in_force()
        ):
            return super().request_url(request, proxies)
        # With no proxies, HTTPAdapter.request_url is request.path_url (with a leading "//"
        # folded up to requests 2.32): a function of the URL alone, whatever the version.
        found = _PATHS.get(url)
        if found is None:
            found = _PATHS.put(url, super().request_url(request, proxies))
        return found

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        """Build the Response as HTTPAdapter does; one that sets no cookie skips cookielib."""
        if HTTPAdapter.build_response is not _R_BUILD_RESPONSE:
            return super().build_response(req, resp)
        # HTTPAdapter.build_response (requests 2.28 to 2.34), through the names requests.adapters
        # uses. extract_cookies_to_jar finds no Set-Cookie header in a response without one and
        # then only stamps the new jar with the time: that stamp is all it does there.
        is_prepared = getattr(_adapters, "_is_prepared", None)  # requests 2.34: a no-op check
        if is_prepared is not None:
            assert is_prepared(req)  # as requests asserts it
        response: requests.Response = _adapters.Response()
        response.status_code = getattr(resp, "status", None)  # type: ignore[assignment]
        response.headers = _adapters.CaseInsensitiveDict(getattr(resp, "headers", {}))
        response.encoding = _adapters.get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = response.raw.reason
        url = req.url
        response.url = url.decode("utf-8") if isinstance(url, bytes) else url  # type: ignore[assignment]
        jar: Any = response.cookies
        if (
            type(jar) is requests.cookies.RequestsCookieJar
            and _NO_COOKIE_STEP.in_force()
            and _sets_no_cookie(resp)
        ):
            if getattr(resp, "_original_response", None):  # else extract returns at once
                jar._policy._now = jar._now = int(http.cookiejar.time.time())  # type: ignore[attr-defined]
        else:
            _adapters.extract_cookies_to_jar(jar, req, resp)
        response.request = req
        response.connection = self
        return response

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        """Return the manager for a proxy as HTTPAdapter does (a patch of it runs), adopted.

        A new ProxyManager gets our host pools; SOCKS proxies keep requests' own manager (not
        counted, expired or grown).
        """
        manager = self.proxy_manager.get(proxy)
        if manager is not None and self._ts_ready_proxies.get(proxy) is manager:
            return super().proxy_manager_for(proxy, **proxy_kwargs)
        # New, or stored by requests and not adopted yet (another thread is adopting it, under
        # the lock), or put in proxy_manager by somebody else.
        why = None
        with _proxy_build:
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            if self._ts_ready_proxies.get(proxy) is not manager:
                if not proxy.lower().startswith("socks"):
                    manager, why = _adopt(self, manager, ProxyManager, _ProxyManager)
                self._ts_ready_proxies[proxy] = manager
        _log_kept(manager, why)
        return manager

    def close(self) -> None:
        """Close as HTTPAdapter does, while no thread stores a new proxy's manager.

        HTTPAdapter.close iterates proxy_manager: a store meanwhile (another thread of a shared
        session asking for a new proxy) would stop it halfway, leaving the rest open.
        """
        with _proxy_build:
            super().close()

    def _ts_managers(self) -> list[_ManagerHooks]:
        managers = [self.poolmanager, *list(self.proxy_manager.values())]
        return [m for m in managers if isinstance(m, _ManagerHooks)]

    def grow(self, maxsize: int) -> None:
        """Raise pool_maxsize of every host pool, present and future, keeping idle connections.

        A no-op under a hard cap (pool_block=True with a pool_maxsize given).
        """
        if self._ts_capped:
            return
        with _proxy_build:  # a new proxy's manager, built and adopted meanwhile, is seen done
            self._pool_maxsize = max(self._pool_maxsize, maxsize)
            managers = self._ts_managers()
        for manager in managers:
            manager.grow(maxsize)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (or copied), it is a plain HTTPAdapter with the same settings.
        state = {attr: getattr(self, attr, None) for attr in self.__attrs__}
        return (HTTPAdapter, (), state)


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
    """In a forked child, retire a parent's session: drop its sockets' copies, take no lock.

    Touches the session's ``adapters`` and each adapter's managers only (see "In a forked
    child" above).
    """
    lifeline.retired = True
    for adapter in _pool_adapters(session):
        for manager in adapter._ts_managers():
            manager.abandon_in_child()
