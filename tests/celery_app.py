"""A Celery app with the README's recipe, on a broker and result store that need no server.

Messages go through kombu's filesystem transport and results through Celery's file-system
backend, both under ``$THREADSESSION_CELERY_DIR``, which the test sets before anything imports
this module (the worker it starts reads the same variable).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import requests
from celery import Celery
from celery.signals import worker_process_shutdown

import threadsession
from threadsession import with_session

ROOT = Path(os.environ["THREADSESSION_CELERY_DIR"])
for folder in ("broker", "control", "results", "exits"):
    (ROOT / folder).mkdir(parents=True, exist_ok=True)

app = Celery("celery_app", broker="filesystem://", backend=f"file://{ROOT / 'results'}")
app.conf.update(
    broker_transport_options={
        "data_folder_in": str(ROOT / "broker"),
        "data_folder_out": str(ROOT / "broker"),
        "control_folder": str(ROOT / "control"),  # by default "control" in the current directory
        "polling_interval": 0.05,
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_acks_late=False,
)


# The recipe. A prefork child runs its tasks in its main thread, so that thread's session serves
# every task the child runs; the child ends with os._exit(), which skips atexit. Close the
# child's sessions as it exits (sessions the child inherited at fork are dropped by threadsession
# itself, in the child, without touching the parent's connections).
@worker_process_shutdown.connect
def close_sessions(pid: int, exitcode: int, **kwargs: object) -> None:
    before = threadsession.default_pool().stats()
    threadsession.close_all()
    after = threadsession.default_pool().stats()
    # For the test: what the child had open, and that nothing stays open.
    report = {"pid": pid, "open_before": before.sessions_open, "open_after": after.sessions_open}
    (ROOT / "exits" / f"{pid}.json").write_text(json.dumps(report))


@with_session
def get(url: str, *, session: requests.Session | None = None) -> requests.Session:
    assert session is not None
    session.get(url).raise_for_status()
    return session


@app.task
def fetch(url: str) -> list[int]:
    """GET url twice through the calling thread's session; return (pid, thread, session id)."""
    session = get(url)
    assert get(url) is session
    return [os.getpid(), threading.get_ident(), id(session)]
