"""The clients the benchmark compares, each built for W worker threads and torn down after.

Every variant sends a batch of URLs with W requests in flight at most and returns when all are
answered. Each imports only what it needs, so a variant's process carries no other client.

Dispatch is the same for every variant but requests-futures: W tasks on a ThreadPoolExecutor
(``pool.executor(W)`` for threadsession), each sending its share of the batch in a loop, as a
worker pool does. FuturesSession has no such form: it submits each request as its own task,
which is its design and its cost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

Batch = Callable[[list[str]], None]


@dataclass
class Client:
    send: Batch  # send every URL, W at a time at most, and wait for all answers
    close: Callable[[], None]


def _sender(executor: ThreadPoolExecutor, fetch: Callable[[str], Any], workers: int) -> Batch:
    def loop(urls: list[str]) -> None:
        for url in urls:
            fetch(url)

    def send(urls: list[str]) -> None:
        shares = [urls[i::workers] for i in range(workers)]
        for future in [executor.submit(loop, share) for share in shares if share]:
            future.result()

    return send


def _executor_client(
    fetch: Callable[[str], Any], workers: int, close: Callable[[], None]
) -> Client:
    executor = ThreadPoolExecutor(max_workers=workers)

    def shutdown() -> None:
        executor.shutdown(wait=True)
        close()

    return Client(_sender(executor, fetch, workers), shutdown)


def requests_get(workers: int, ca: str) -> Client:
    import requests

    return _executor_client(lambda url: requests.get(url).content, workers, lambda: None)


def session_default(workers: int, ca: str) -> Client:
    import requests

    session = requests.Session()
    return _executor_client(lambda url: session.get(url).content, workers, session.close)


def session_sized(workers: int, ca: str) -> Client:
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    for prefix in ("http://", "https://"):
        session.mount(prefix, HTTPAdapter(pool_maxsize=max(10, workers)))
    return _executor_client(lambda url: session.get(url).content, workers, session.close)


def recipe(workers: int, ca: str) -> Client:
    """The usual hand-written recipe: a threading.local Session, never closed."""
    import requests

    local = threading.local()

    def get_session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session  # type: ignore[no-any-return]

    return _executor_client(lambda url: get_session().get(url).content, workers, lambda: None)


def futures(workers: int, ca: str) -> Client:
    """requests-futures as documented: FuturesSession(max_workers=W) sizes its own adapters."""
    from requests_futures.sessions import FuturesSession

    session = FuturesSession(max_workers=workers)

    def send(urls: list[str]) -> None:
        for future in [session.get(url) for url in urls]:
            future.result().content  # noqa: B018

    return Client(send, session.close)


def futures_executor(workers: int, ca: str) -> Client:
    """requests-futures with a passed-in executor: its adapters keep requests' default 10."""
    from requests_futures.sessions import FuturesSession

    executor = ThreadPoolExecutor(max_workers=workers)
    session = FuturesSession(executor=executor)

    def send(urls: list[str]) -> None:
        for future in [session.get(url) for url in urls]:
            future.result().content  # noqa: B018

    def close() -> None:
        session.close()
        executor.shutdown(wait=True)

    return Client(send, close)


def httpx_client(workers: int, ca: str) -> Client:
    """One shared httpx.Client with its default limits."""
    import ssl

    import httpx

    client = httpx.Client(verify=ssl.create_default_context(cafile=ca))
    return _executor_client(lambda url: client.get(url).content, workers, client.close)


def urllib3_pool(workers: int, ca: str) -> Client:
    """urllib3.PoolManager sized to W: the floor under requests."""
    import urllib3

    manager = urllib3.PoolManager(maxsize=max(10, workers), ca_certs=ca)
    return _executor_client(lambda url: manager.request("GET", url).data, workers, manager.clear)


def threadsession_per_thread(workers: int, ca: str) -> Client:
    from threadsession import ThreadLocalSessionPool

    pool = ThreadLocalSessionPool()
    executor = pool.executor(max_workers=workers)

    def close() -> None:
        executor.shutdown(wait=True)
        pool.close()

    return Client(_sender(executor, lambda url: pool.get(url).content, workers), close)


def threadsession_shared(workers: int, ca: str) -> Client:
    from threadsession import ThreadLocalSessionPool

    pool = ThreadLocalSessionPool(shared=True)
    executor = pool.executor(max_workers=workers)

    def close() -> None:
        executor.shutdown(wait=True)
        pool.close()

    return Client(_sender(executor, lambda url: pool.get(url).content, workers), close)


#: name -> (maker, label); the order is the table's.
VARIANTS: dict[str, tuple[Callable[[int, str], Client], str]] = {
    "requests.get": (requests_get, "requests.get per call"),
    "session": (session_default, "one Session, default pool"),
    "session-sized": (session_sized, "one Session, pool_maxsize=W"),
    "recipe": (recipe, "threading.local recipe"),
    "futures": (futures, "FuturesSession(max_workers=W)"),
    "futures-executor": (futures_executor, "FuturesSession(executor=...)"),
    "httpx": (httpx_client, "one httpx.Client"),
    "urllib3": (urllib3_pool, "urllib3.PoolManager(maxsize=W)"),
    "ts-per-thread": (threadsession_per_thread, "threadsession per-thread"),
    "ts-shared": (threadsession_shared, "threadsession shared"),
}
