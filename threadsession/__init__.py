"""threadsession: one requests.Session per thread, closed when the thread ends.

Keep-alive for requests fanned out over threads, without leaked sockets, pool-full discards or
sessions shared with a forked child. Import everything from here; submodules are private.
"""

from ._decorator import with_session
from ._errors import PoolClosedError
from ._pool import ThreadLocalSessionPool, close_all, default_pool
from ._stats import PoolStats

__version__ = "0.1.0"

__all__ = [
    "PoolClosedError",
    "PoolStats",
    "ThreadLocalSessionPool",
    "__version__",
    "close_all",
    "default_pool",
    "with_session",
]
