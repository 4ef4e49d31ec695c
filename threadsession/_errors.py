"""The exceptions threadsession raises of its own."""

from __future__ import annotations

__all__ = ["PoolClosedError"]


class PoolClosedError(RuntimeError):
    """Raised when a pool retired by :meth:`ThreadLocalSessionPool.close` is used again.

    Safe to catch from any thread. ``close_all()`` never raises it: only ``close()`` retires a
    pool. Make a new :class:`~threadsession.ThreadLocalSessionPool` instead.

    Example::

        pool.close()
        with pytest.raises(PoolClosedError):
            pool.session()
    """
