"""The WSGI app of the gunicorn ``-k gevent`` test: each request calls upstream through a pool.

gunicorn's gevent worker runs ``monkey.patch_all()`` before it imports this module (no
``--preload``), as gevent asks. ``/stats`` answers the pool's stats as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import threadsession

UPSTREAM = os.environ["THREADSESSION_UPSTREAM"]
POOL = threadsession.ThreadLocalSessionPool(shared=os.environ["THREADSESSION_MODE"] == "shared")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/stats":
        body = json.dumps(dataclasses.asdict(POOL.stats())).encode()
    else:
        body = POOL.get(f"{UPSTREAM}/?delay=200").content
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
