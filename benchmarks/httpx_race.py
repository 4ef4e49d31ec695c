"""Why an httpx row can end in ``ReadError: [Errno 9] Bad file descriptor``: httpcore, not us.

``python -m benchmarks.httpx_race [--keepalive N] [--tls] [--bursts 150]`` shares one
``httpx.Client`` between 64 threads sending bursts of 64 requests (each held 5 ms) to the
benchmark's server, counts the errors, and counts every ``HTTP11Connection.close()`` by the
state the connection was in. Each EBADF (or "Server disconnected") comes with a close of an
ACTIVE connection: httpcore's pool closed a connection it had assigned to another thread's
request (encode/httpcore#1110). With ``--keepalive 64`` (no surplus keep-alive to close) none
does. The race is rare: a run may show none.
"""

from __future__ import annotations

import argparse
import collections
import ssl
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.server import ServerProcess

WORKERS = 64


def main() -> None:
    import httpx
    from httpcore._sync import http11  # the connection class whose close() we count

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keepalive", type=int, default=20, help="max_keepalive_connections")
    parser.add_argument("--tls", action="store_true", help="over HTTPS")
    parser.add_argument("--bursts", type=int, default=150)
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds, in all")
    args = parser.parse_args()

    closes: collections.Counter[str] = collections.Counter()
    original = http11.HTTP11Connection.close

    def counted_close(self: Any) -> None:
        closes[self._state.name] += 1
        original(self)

    http11.HTTP11Connection.close = counted_close  # type: ignore[method-assign]
    errors: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as scratch, ServerProcess(Path(scratch)) as server:
        client = httpx.Client(
            verify=ssl.create_default_context(cafile=server.ca),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=args.keepalive),
        )
        url = (server.https_url if args.tls else server.http_url) + "/?delay=5"

        def one(_: int) -> None:
            try:
                client.get(url).read()
            except httpx.HTTPError as exc:
                errors[f"{type(exc).__name__}: {exc}"] += 1

        deadline = time.monotonic() + args.time_limit
        with ThreadPoolExecutor(WORKERS) as executor:
            for _ in range(args.bursts):
                list(executor.map(one, range(WORKERS)))
                if time.monotonic() > deadline:
                    break
        client.close()
    print(f"httpx {httpx.__version__}, max_keepalive_connections={args.keepalive}, "
          f"{'HTTPS' if args.tls else 'HTTP'}: errors {dict(errors)}; "
          f"close() by connection state {dict(closes)}")  # fmt: skip


if __name__ == "__main__":
    main()
