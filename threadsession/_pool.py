"""ThreadLocalSessionPool, default_pool(), close_all(), and the registry of live pools."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import requests

from ._adapter import (
    Lifeline,
    abandon_all_in_child,
    abandon_in_child,
    grow_session,
    retire_session,
)
from ._config import (
    DEFAULT_POOLSIZE,
    DEFAULT_TIMEOUT,
    check_options,
    hard_cap,
    initial_maxsize,
    positive_int,
)
from ._errors import PoolClosedError
from ._session import EnvSnapshot, build_session, is_pool_session
from ._stats import Counters, PoolStats

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from types import TracebackType

    from typing_extensions import Self

    from ._config import MountFactory, Options, TimeoutArg

__all__ = ["ThreadLocalSessionPool", "close_all", "default_pool"]

logger = logging.getLogger(__name__)

_CLOSED = "this ThreadLocalSessionPool is closed; make a new pool to go on"


class _Record:
    """One session the pool made: what closing it needs, and whether it is closed."""

    __slots__ = ("closed", "lifeline", "pid", "session")

    def __init__(self, session: requests.Session, lifeline: Lifeline) -> None:
        self.session = session
        self.lifeline = lifeline
        self.pid = os.getpid()
        self.closed = False  # set once, under the core's lock (or in a forked child)


def _close_records(records: list[_Record], counters: Counters) -> None:
    """Close sessions already unregistered and marked closed; count each once its sockets are."""
    error: BaseException | None = None
    for record in records:
        try:
            retire_session(record.session, record.lifeline)
        except Exception as exc:  # noqa: BLE001, PERF203  # close the others, re-raise the first
            error = error or exc
        finally:
            counters.session_closed(record.lifeline)
    if error is not None:
        raise error


class _Core:
    """The part of a pool that cleanup callbacks hold: never the pool, so it can be collected.

    ``counters.lock`` is the one lock of the pool: it guards ``records``, ``retired`` and the
    counters. It is never held across ``Session.close()``, network I/O or user code.
    """

    __slots__ = ("counters", "records", "retired")

    def __init__(self, maxsize: int) -> None:
        self.counters = Counters(maxsize)
        self.records: set[_Record] = set()
        self.retired = False

    def take_all(self, *, retire: bool = False) -> list[_Record]:
        """Unregister every open session and mark it closed (the caller closes them)."""
        with self.counters.lock:
            self.retired = self.retired or retire
            records, self.records = list(self.records), set()
            for record in records:
                record.closed = True
        return records

    def register(self, record: _Record) -> int:
        """Add a new session; return the pool_maxsize now in force.

        :raises PoolClosedError: if the pool was retired meanwhile (the session is then closed).
        """
        with self.counters.lock:
            if not self.retired:
                self.records.add(record)
                self.counters.sessions_created += 1
                return self.counters.pool_maxsize
        record.session.close()
        raise PoolClosedError(_CLOSED)

    def close_record(self, record: _Record) -> None:
        """Close one session, once. Runs in dying threads too: no logging, no current_thread()."""
        if record.pid != os.getpid():
            # A forked child: the closers of the threads lost in the fork run here, inside
            # os.fork(), before our at-fork hook and any of the child's code (3.9 to 3.13).
            # Those threads may have held the counters' lock, a queue's, a reply's: take none.
            # Touched: the record's flag (a plain attribute), os.getpid() (a system call) and
            # what _adapter's "In a forked child" lists.
            record.closed = True
            abandon_in_child(record.session, record.lifeline)
            return
        with self.counters.lock:
            if record.closed:
                return
            record.closed = True
            self.records.discard(record)
        _close_records([record], self.counters)

    def close_all(self) -> None:
        """Close every session registered so far."""
        _close_records(self.take_all(), self.counters)

    def grow(self, maxsize: int) -> None:
        """Raise pool_maxsize in force for every open session; it never shrinks."""
        with self.counters.lock:
            if maxsize <= self.counters.pool_maxsize:
                return
            self.counters.pool_maxsize = maxsize
            sessions = [record.session for record in self.records]
        for session in sessions:
            grow_session(session, maxsize)

    def after_fork_in_child(self) -> None:
        """Forget the parent's sessions without using them; count the child's from zero.

        Takes no lock: the set is read and swapped under the GIL alone, the counters get a fresh
        lock without touching the old one, and abandon_in_child takes none.
        """
        records, self.records = list(self.records), set()
        self.counters.reset_after_fork()
        for record in records:
            if not record.closed:
                record.closed = True
                abandon_in_child(record.session, record.lifeline)


class _ThreadExitCloser:
    """Lives in one thread's local storage: dies, and closes that thread's session, as it ends.

    CPython clears a thread's ``threading.local`` values while the thread ends, before
    ``join()`` returns (3.9 to 3.13), so the session's sockets close without waiting for GC.
    """

    __slots__ = ("core", "record")

    def __init__(self, core: _Core, record: _Record) -> None:
        self.core = core
        self.record = record

    def __del__(self) -> None:
        # Runs in a forked child too, inside os.fork(), for each thread lost in the fork:
        # close_record then takes no lock (its pid-mismatch branch).
        if not self.record.closed:  # plain attribute read: safe at interpreter shutdown
            self.core.close_record(self.record)


class _State:
    """Where a pool finds the calling thread's session (shared mode: the one session).

    ``session`` is set once the session is made; until then reading it raises AttributeError,
    which sends ``ThreadLocalSessionPool.session()`` down its slow path. ``close_all()`` swaps in a
    fresh state, so every thread's next read misses and makes a new session.

    What a patched ``requests.Session`` (a test's mock) returned is kept in ``unmanaged`` instead,
    with the object that made it, and never in ``session``: every call takes the slow path, which
    hands it out only while ``requests.Session`` is still that object. The fast path of a pool
    session pays nothing for it.
    """

    session: requests.Session
    closer: _ThreadExitCloser
    unmanaged: tuple[Any, object] | None = None  # (what the patch returned, the patch)


_thread_states: dict[type, type[_State]] = {}


def _thread_state() -> _State:
    """Per-thread mode: a state each thread sees its own session and closer in.

    Made from the ``threading.local`` in force when the pool makes it, not at import: after
    ``gevent.monkey.patch_all()`` (or eventlet's ``monkey_patch()``) that is the greenlet-local
    class, so each greenlet gets its own session, closed as the greenlet ends.
    """
    local = threading.local
    cls = _thread_states.get(local)
    if cls is None:
        made = type("_ThreadState", (_State, local), {"__module__": __name__})
        cls = _thread_states.setdefault(local, made)
    return cls()


class _ClosedState(_State):
    """The state of a retired pool: every read raises PoolClosedError."""

    def __getattr__(self, name: str) -> Any:
        raise PoolClosedError(_CLOSED)


class ThreadLocalSessionPool:
    """Hands each thread its own ``requests.Session`` and closes it when the thread ends.

    Safe from any thread: ``session()`` returns the same Session on every call from one thread
    and a different one in every other thread (in shared mode, one Session for all). Sessions
    are closed, sockets included, when their thread ends, on ``close_all()``/``close()``, at
    interpreter exit, and are never used in a forked child. Every option is keyword-only and
    checked here.

    Example::

        with ThreadLocalSessionPool() as pool, pool.executor(max_workers=16) as ex:
            pages = list(ex.map(lambda url: pool.get(url).text, urls))
        print(pool.stats())

    :param shared: one Session for all threads, its pool_maxsize grown to every executor.
    :param max_workers: shared mode: size the pool for this many threads from the start.
    :param pool_connections: host pools kept per adapter, as on ``HTTPAdapter``.
    :param pool_maxsize: connections kept per host pool; None sizes automatically, an int is a
        minimum: host pools start at max(10, this, and in shared mode max_workers and every
        executor), and grow when a connection comes back to a full one, so none is discarded.
    :param pool_block: as on ``HTTPAdapter``: wait for a free connection instead of opening one;
        ``pool_maxsize`` is then a hard cap, exactly that size, never grown.
    :param max_retries: an int or a ``urllib3.util.Retry``, as on ``HTTPAdapter``.
    :param timeout: default for requests that pass none: seconds, a (connect, read) pair or a
        ``urllib3.Timeout``; None for no default. 30 seconds unless given.
    :param headers: merged into each new session's headers.
    :param mounts: ``{url_prefix: dict of HTTPAdapter options}`` (missing ones default to the
        pool's) or ``{url_prefix: callable() -> adapter}``, called once per session.
    :param session_factory: ``callable() -> requests.Session`` making each new session; the pool
        then mounts its adapters on it.
    :param pool_timeout: with ``pool_block=True``: seconds a request waits for a free connection
        before a ``requests.ConnectionError``; None waits as long as its connect timeout.
    :param max_connection_age: seconds from connect after which a connection is not reused.
    :param keepalive_expiry: seconds idle in the pool after which a connection is not reused.
    :param env_snapshot: read the proxy, CA-bundle and netrc settings of the environment once
        per host (refreshed by ``close_all()``) instead of on every request, as requests does;
        False restores requests' per-request reads.
    :param retry_stale: resend once, on a new connection, a request whose reused keep-alive
        connection failed before any byte of the response: True for idempotent methods, False
        for none, or a collection of method names (``{"GET", "POST"}``) to opt others in.
    :raises TypeError: for an option of the wrong kind, naming it and the value.
    :raises ValueError: for an option of the right kind but a wrong value.
    """

    def __init__(
        self,
        *,
        shared: bool = False,
        max_workers: int | None = None,
        pool_connections: int = DEFAULT_POOLSIZE,
        pool_maxsize: int | None = None,
        pool_block: bool = False,
        max_retries: Any = 0,
        timeout: TimeoutArg = DEFAULT_TIMEOUT,
        headers: Mapping[str, str | bytes] | None = None,
        mounts: Mapping[str, Mapping[str, Any] | MountFactory] | None = None,
        session_factory: Callable[[], requests.Session] | None = None,
        pool_timeout: float | None = None,
        max_connection_age: float | None = None,
        keepalive_expiry: float | None = None,
        retry_stale: bool | Iterable[str] = True,
        env_snapshot: bool = True,
    ) -> None:
        self._options: Options = check_options(
            shared=shared,
            max_workers=max_workers,
            pool_connections=pool_connections,
            pool_maxsize=pool_maxsize,
            pool_block=pool_block,
            max_retries=max_retries,
            timeout=timeout,
            headers=headers,
            mounts=mounts,
            session_factory=session_factory,
            pool_timeout=pool_timeout,
            max_connection_age=max_connection_age,
            keepalive_expiry=keepalive_expiry,
            retry_stale=retry_stale,
            env_snapshot=env_snapshot,
        )
        self._env = self._new_env()
        self._core = _Core(initial_maxsize(self._options))
        self._state = self._new_state()
        # Shared mode: only one thread builds the one session.
        self._build_lock = threading.Lock()
        # Close what is left if the pool itself is collected; the callback holds the core only.
        finalizer = weakref.finalize(self, self._core.close_all)
        finalizer.atexit = False  # type: ignore[misc]  # typeshed omits the writable attribute
        _register(self)

    @property
    def shared(self) -> bool:
        """True in global-shared mode (one Session for all threads)."""
        return self._options.shared

    def session(self) -> requests.Session:
        """Return the calling thread's Session, made on first use (shared mode: the one Session).

        Safe from any thread; the same Session on every call from one thread until the pool
        closes it, then a fresh one.

        :raises PoolClosedError: after ``close()``.
        :raises TypeError: if ``session_factory`` returns something other than a Session.
        """
        try:
            return self._state.session  # the hot path: one thread-local attribute read
        except AttributeError:
            return self._open_session()

    def _new_env(self) -> EnvSnapshot | None:
        return EnvSnapshot() if self._options.env_snapshot else None

    def _new_state(self) -> _State:
        return _State() if self._options.shared else _thread_state()

    def _open_session(self) -> requests.Session:
        if not self._options.shared:
            return self._build(self._state)
        with self._build_lock:  # one thread makes the one session; the others wait for it
            state = self._state
            try:
                return state.session
            except AttributeError:
                return self._build(state)

    def _build(self, state: _State) -> requests.Session:
        core = self._core
        if core.retired:
            raise PoolClosedError(_CLOSED)
        unmanaged = state.unmanaged
        maker = requests.Session  # looked up before the build: a patch ending meanwhile is seen
        if unmanaged is not None:
            if unmanaged[1] is maker:  # the same patch is still in force
                session: requests.Session = unmanaged[0]
                return session
            state.unmanaged = None  # that patch ended: drop its mock, build anew
        lifeline = Lifeline()
        maxsize = core.counters.pool_maxsize
        session = build_session(self._options, core.counters, lifeline, maxsize, self._env)
        if not is_pool_session(session):
            # requests.Session is patched (a test's mock): hand out what it made, unmanaged,
            # for as long as that patch is in force (see _State).
            state.unmanaged = (session, maker)
            return session
        record = _Record(session, lifeline)
        in_force = core.register(record)
        if in_force > maxsize:  # an executor grew the pool while we built
            grow_session(session, in_force)
        state.session = session
        if not self._options.shared:
            # If close_all() swapped the state meanwhile, this closer goes with the old one
            # and closes the session as soon as this thread lets go of it.
            state.closer = _ThreadExitCloser(core, record)
        logger.debug("made session %#x (pool_maxsize %d)", id(session), in_force)
        return session

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send a request through the calling thread's Session (``Session.request``)."""
        return self.session().request(method, url, **kwargs)

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """Send a GET through the calling thread's Session."""
        return self.session().get(url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> requests.Response:
        """Send an OPTIONS through the calling thread's Session."""
        return self.session().options(url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> requests.Response:
        """Send a HEAD through the calling thread's Session (no redirects, as requests does)."""
        return self.session().head(url, **kwargs)

    def post(
        self, url: str, data: Any = None, json: Any = None, **kwargs: Any
    ) -> requests.Response:
        """Send a POST through the calling thread's Session."""
        return self.session().post(url, data=data, json=json, **kwargs)

    def put(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        """Send a PUT through the calling thread's Session."""
        return self.session().put(url, data=data, **kwargs)

    def patch(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        """Send a PATCH through the calling thread's Session."""
        return self.session().patch(url, data=data, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> requests.Response:
        """Send a DELETE through the calling thread's Session."""
        return self.session().delete(url, **kwargs)

    def executor(self, max_workers: int | None = None, **kwargs: Any) -> ThreadPoolExecutor:
        """Return a new ThreadPoolExecutor whose workers use this pool.

        Shared mode: the pool grows so its pool_maxsize covers every worker. Per-thread mode:
        each worker's Session is closed as the worker ends, so by the time ``shutdown()``
        (``wait=True``, as the ``with`` block does) returns. The executor is the caller's to shut
        down.

        Example::

            with pool.executor(max_workers=32) as ex:
                codes = list(ex.map(lambda u: pool.get(u).status_code, urls))

        :param max_workers: as for ThreadPoolExecutor; None means its default.
        :param kwargs: passed to ThreadPoolExecutor (thread_name_prefix, initializer, ...).
        :raises PoolClosedError: after ``close()``.
        """
        self._check_open()
        if max_workers is not None:
            positive_int("max_workers", max_workers)
        return self.attach(ThreadPoolExecutor(max_workers=max_workers, **kwargs))

    def attach(self, executor: ThreadPoolExecutor) -> ThreadPoolExecutor:
        """Size the pool for an executor you already have (its worker count); return it.

        The executor stays yours: the pool never shuts it down.

        :raises TypeError: if ``executor`` is not a ThreadPoolExecutor.
        :raises PoolClosedError: after ``close()``.
        """
        if not isinstance(executor, ThreadPoolExecutor):
            raise TypeError(
                f"attach() takes a concurrent.futures.ThreadPoolExecutor, got {executor!r}"
            )
        self._check_open()
        if self._options.shared and hard_cap(self._options.adapter) is None:
            # _max_workers is the worker count ThreadPoolExecutor settled on, its default
            # included (3.9 to 3.13).
            self._core.grow(executor._max_workers)
        return executor

    def _check_open(self) -> None:
        if self._core.retired:
            raise PoolClosedError(_CLOSED)

    def close_all(self) -> None:
        """Close every session the pool has made so far; the pool stays usable.

        Idempotent and safe from any thread; a no-op after ``close()``. A thread's next
        ``session()`` gets a fresh one; a thread still using a closed session keeps no socket
        once its response is done. The environment snapshot is taken anew.
        """
        self._close_sessions(retire=False)

    def _close_sessions(self, *, retire: bool) -> None:
        # Under the build lock, so no shared session is half-built across the swap; the sessions
        # are taken (and marked closed) before the swap, so the old state's thread-exit closers
        # find nothing to do and errors reach the caller; they are closed outside any lock.
        with self._build_lock:
            if self._core.retired:
                return
            records = self._core.take_all(retire=retire)
            self._env = self._new_env()
            self._state = _ClosedState() if retire else self._new_state()
        _close_records(records, self._core.counters)

    def close(self) -> None:
        """Close every session and retire the pool: later use raises PoolClosedError.

        Idempotent and safe from any thread; ``stats()`` keeps working.
        """
        self._close_sessions(retire=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stats(self) -> PoolStats:
        """Return a snapshot of the pool's counters (see PoolStats). Safe from any thread."""
        return self._core.counters.snapshot()

    def _after_fork_in_child(self) -> None:
        # A lost thread may hold the build lock (a shared session's first build, close_all()):
        # replace it unread. Dropping the old state runs this thread's closer, which takes no
        # lock in a child (see _Core.close_record).
        self._build_lock = threading.Lock()
        if not self._core.retired:
            self._state = self._new_state()
        self._core.after_fork_in_child()

    def __repr__(self) -> str:
        s = self.stats()
        mode = "shared" if self._options.shared else "per-thread"
        state = "closed" if self._core.retired else "open"
        return (
            f"<ThreadLocalSessionPool {mode} {state} sessions_open={s.sessions_open} "
            f"pool_maxsize={s.pool_maxsize}>"
        )


# The registry of live pools, for close_all(), atexit and fork.
_pools: weakref.WeakSet[ThreadLocalSessionPool] = weakref.WeakSet()
_pools_lock = threading.Lock()
_default: ThreadLocalSessionPool | None = None
_default_lock = threading.Lock()


def _register(pool: ThreadLocalSessionPool) -> None:
    with _pools_lock:
        _pools.add(pool)


def _live_pools() -> list[ThreadLocalSessionPool]:
    with _pools_lock:
        return list(_pools)


def default_pool() -> ThreadLocalSessionPool:
    """Return the process-wide per-thread pool that bare ``@with_session`` uses.

    Made on first use with the default options; the same pool on every call, from any thread.

    Example::

        default_pool().get("http://127.0.0.1:8000/")
    """
    global _default  # one lazily made process-wide pool
    pool = _default
    if pool is None:
        with _default_lock:
            if _default is None:
                _default = ThreadLocalSessionPool()
            pool = _default
    return pool


def close_all() -> None:
    """Close every session of every live pool in the process, the default pool included.

    Safe to call more than once and from any thread; pools stay usable afterwards.

    Example::

        try:
            run_workers()
        finally:
            threadsession.close_all()
    """
    error: BaseException | None = None
    for pool in _live_pools():
        try:
            pool.close_all()
        except Exception as exc:  # noqa: BLE001, PERF203  # close the other pools, then re-raise
            error = error or exc
    if error is not None:
        raise error


def _after_fork_in_child() -> None:
    """Retire every session of the parent in a forked child, taking no lock the parent had.

    Touched: the two module locks (replaced, never acquired), the WeakSet of pools (iterated
    under the GIL), each pool's own at-fork method, and abandon_all_in_child, which first leaves
    every host pool we built, whatever session owns it, with fresh locks and no socket copy.
    """
    global _pools_lock, _default_lock  # a thread lost in the fork may hold them
    _pools_lock = threading.Lock()
    _default_lock = threading.Lock()
    abandon_all_in_child()
    for pool in list(_pools):
        pool._after_fork_in_child()


atexit.register(close_all)
os.register_at_fork(after_in_child=_after_fork_in_child)
