"""``python -m benchmarks``: what threadsession saves against every peer, measured side by side.

Starts its own counting server (plain HTTP and HTTPS with a CA made at start-up) in a separate
process, measures the server's own capacity, then runs each client variant in its own process,
rounds interleaved, and reports medians: req/s, ratios to the hand-written recipe and to urllib3
measured in the same round, server-side connections, pool-full discards, client CPU per request,
sockets left open after close, and peak RSS. Writes a JSON file and (with matplotlib) a PNG.

``--quick`` runs in under a minute on 2 cores; the default is the full run for publication.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.server import ServerProcess
from benchmarks.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent


# Quick mode keeps what the targets need and fits in a minute on 2 cores; the full run has more
# of everything (and W=256).
QUICK_VARIANTS = [v for v in VARIANTS if v not in ("session-sized", "futures-executor")]


def _plan_cells(*, quick: bool, workers: list[int], delay_ms: int) -> list[dict[str, Any]]:
    cells = []
    for w in workers:
        # Enough requests that each worker reuses its connection a few times.
        requests = max(100, 3 * w) if quick else max(1000, 16 * w)
        cells.append({"scenario": "small", "workers": w, "tls": False, "delay_ms": 0,
                      "size": 64, "requests": requests})  # fmt: skip
    for scenario, tls in (("burst", False), ("burst-tls", True)):
        for w in workers:
            if w == 1 or (quick and w < (64 if tls else 32)):
                continue  # one worker cannot fan out; quick mode keeps the widest bursts
            # Rounds of W requests sent together, each held by the server for delay_ms.
            rounds = (5 if tls else 3) if quick else 12
            cells.append({"scenario": scenario, "workers": w, "tls": tls, "delay_ms": delay_ms,
                          "size": 64, "rounds": rounds})  # fmt: skip
    return cells


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _run(args: list[str], env: dict[str, str], timeout: float) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stderr[-2000:]}"
        )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        width = 30
        filled = width * self.done // self.total
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"{time.monotonic() - self.start:5.1f}s {label}")  # fmt: skip
        if self.tty:
            sys.stderr.write(f"\r{line:<100}")
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a run under a minute on 2 cores")
    parser.add_argument("--rounds", type=int, help="rounds per variant (3 quick, 5 full)")
    parser.add_argument("--workers", type=int, nargs="+", help="W values (1 8 32 64 [256])")
    parser.add_argument("--delay-ms", type=int, default=50, help="server hold time in bursts")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="a subset")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    workers = args.workers or ([1, 8, 32, 64] if args.quick else [1, 8, 32, 64, 256])
    variants = args.variants or (QUICK_VARIANTS if args.quick else list(VARIANTS))
    cells = _plan_cells(quick=args.quick, workers=workers, delay_ms=args.delay_ms)
    env = _child_env()
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch, ServerProcess(Path(scratch)) as server:
        env["REQUESTS_CA_BUNDLE"] = server.ca  # every client verifies against the new CA
        env.pop("CURL_CA_BUNDLE", None)
        capacity = _run(
            ["-m", "benchmarks.capacity", server.http_url, str(server.control_port), "1"], env, 60
        )[0]
        print(f"server capacity: {capacity['rps']:,.0f} req/s over 32 raw keep-alive connections "
              f"(server CPU {capacity['server_busy']:.0%} of one core)", flush=True)  # fmt: skip
        progress = _Progress(rounds * len(variants) + 1)
        plan = {"http": server.http_url, "https": server.https_url,
                "control": server.control_port, "ca": server.ca, "cells": cells}  # fmt: skip
        for round_ in range(rounds):
            # Interleave: every variant once per round, starting one further along each round.
            shift = round_ % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                out = _run(
                    ["-m", "benchmarks.client", json.dumps({**plan, "variant": variant})], env, 600
                )
                rows.extend({**row, "round": round_} for row in out)
                progress.step(f"round {round_ + 1}/{rounds} {variant}")
        micro = _run(["-m", "benchmarks.micro"], env, 120)[0]
        progress.step("micro-benchmark")
    cells_out = report.summarise(rows)
    report.print_tables(cells_out, args.delay_ms)
    rss = report.rss_by_variant(rows)
    print("\n== Peak RSS of each variant's process (median over rounds)")
    for name, mib in rss.items():
        print(f"  {VARIANTS[name][1]:32} {mib:6.1f} MiB")
    print(f"\n== pool.session() on a warm thread: {micro['pool_session_ns']:.0f} ns; a bare "
          f"threading.local read {micro['bare_local_read_ns']:.0f} ns; the recipe's function "
          f"{micro['recipe_function_ns']:.0f} ns")  # fmt: skip
    targets = report.check_targets(cells_out, micro)
    report.print_targets(targets)
    document = {
        "mode": "quick" if args.quick else "full",
        "rounds": rounds,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": time.monotonic() - started,
        "server_capacity": capacity,
        "micro": micro,
        "peak_rss_mib": rss,
        "cells": cells_out,
        "targets": targets,
        "raw": rows,
    }
    stem = "quick" if args.quick else "full"
    json_path = args.out / f"{stem}.json"
    report.write_json(json_path, document)
    chart_path = args.out / f"{stem}.png"
    charted = report.write_chart(chart_path, cells_out, args.delay_ms)
    print(f"\nwrote {json_path}" + (f" and {chart_path}" if charted else
          " (pip install matplotlib for the chart)"))  # fmt: skip
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
