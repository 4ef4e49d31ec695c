"""Tasks that Dask workers import by name (the test module itself would drag pytest in)."""

from __future__ import annotations

import os
import threading

import requests

from threadsession import with_session


@with_session  # default_pool(): the pool SessionPoolPlugin's close_all() and worker_stats() reach
def fetch(url: str, *, session: requests.Session | None = None) -> tuple[int, int, int]:
    """GET url with the calling worker thread's session; return (pid, thread, session id)."""
    assert session is not None
    session.get(url).raise_for_status()
    return os.getpid(), threading.get_ident(), id(session)
