"""One benchmark variant in its own process: ``python -m benchmarks.client PLAN_JSON``.

Runs every cell of the plan (scenario x workers) with a fresh client each, and prints one JSON
line per cell, then one with the process's peak RSS. Server counts come from the server's
uncounted control port, so they are the server's own view of the sockets.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from typing import Any

from benchmarks.server import control_stats
from benchmarks.variants import VARIANTS

POOL_FULL = "Connection pool is full"


class _PoolFullCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if POOL_FULL in record.getMessage():
            self.count += 1


def _wait_closed(port: int, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        still_open = int(control_stats(port)["open"])
        if still_open == 0 or time.monotonic() > deadline:
            return still_open
        time.sleep(0.01)


def run_cell(variant: str, cell: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    maker = VARIANTS[variant][0]
    workers = cell["workers"]
    # A cell with an RTT goes through the delaying proxy (benchmarks.proxy) to the same server.
    via = "wan_" if cell.get("rtt_ms") else ""
    base = plan[f"{via}https"] if cell["tls"] else plan[f"{via}http"]
    if "rounds" in cell:  # bursts: W requests sent together, each held delay_ms by the server
        batches = [[f"{base}/?delay={cell['delay_ms']}"] * workers] * cell["rounds"]
    else:
        batches = [[f"{base}/?size={cell['size']}"] * cell["requests"]]
    sent = sum(len(batch) for batch in batches)
    counter = _PoolFullCounter()
    logging.getLogger("urllib3.connectionpool").addHandler(counter)
    result: dict[str, Any] = {"variant": variant, **cell, "sent": sent, "error": None}
    before = control_stats(plan["control"])
    cpu, start = time.process_time(), time.perf_counter()
    client = maker(workers, plan["ca"])
    try:
        for batch in batches:
            client.send(batch)
    except Exception as exc:  # noqa: BLE001  # a failing client is a result, not a crash
        result["error"] = f"{type(exc).__name__}: {exc}"
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = control_stats(plan["control"])
    client.close()
    logging.getLogger("urllib3.connectionpool").removeHandler(counter)
    result.update(
        seconds=elapsed,
        rps=sent / elapsed,
        cpu_us=cpu / sent * 1e6,
        connections=int(after["accepted"] - before["accepted"]),
        server_busy=(after["cpu"] - before["cpu"]) / elapsed,
        discards=counter.count,
        open_after=_wait_closed(plan["control"]),
    )
    return result


def main() -> None:
    plan = json.loads(sys.argv[1])
    variant = plan["variant"]
    # Warm up (imports, first connection, code paths) outside any measured cell.
    warm = VARIANTS[variant][0](1, plan["ca"])
    warm.send([plan["http"] + "/", plan["https"] + "/"] * 3)
    warm.close()
    for cell in plan["cells"]:
        print(json.dumps(run_cell(variant, cell, plan)), flush=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"variant": variant, "peak_rss_mib": peak_kib / 1024}), flush=True)


if __name__ == "__main__":
    main()
