"""Show keep-alive reuse: W threads x N requests open exactly W connections, all closed after.

``python -m benchmarks.reuse [--threads 64] [--requests 2000]`` against the benchmark's server in
its own process; prints server-side counts next to ``pool.stats()``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.server import ServerProcess
from threadsession import ThreadLocalSessionPool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000, help="per thread")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds, in all")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as scratch,
        ServerProcess(Path(scratch)) as server,
        ThreadLocalSessionPool() as pool,
    ):
        deadline = time.monotonic() + args.time_limit
        done = [0] * args.threads

        def work(index: int) -> None:
            for _ in range(args.requests):
                if time.monotonic() > deadline:
                    return
                pool.get(server.http_url).raise_for_status()
                done[index] += 1

        start = time.perf_counter()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(args.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
        during = server.stats()
        stats = pool.stats()
        after = server.wait_open(0)
        total = sum(done)
        print(f"{args.threads} threads x {args.requests} requests: {total} done in {elapsed:.1f} s")
        print(f"  ({total / elapsed:,.0f} req/s)")
        print(
            f"server: connections accepted {during['accepted']:.0f}, "
            f"requests {during['requests']:.0f}"
        )
        print(
            f"pool:   connections_opened {stats.connections_opened}, "
            f"connections_discarded {stats.connections_discarded}, "
            f"sessions created {stats.sessions_created} / closed {stats.sessions_closed}"
        )
        print(f"after the workers ended: server sees {after['open']:.0f} open connections")
        ok = (
            total == args.threads * args.requests
            and during["accepted"] == stats.connections_opened == args.threads
            and stats.connections_discarded == 0
            and after["open"] == 0
        )
        print("OK" if ok else "MISMATCH")
        raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
