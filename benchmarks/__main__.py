"""``python -m benchmarks``: what threadsession saves against every peer, measured side by side.

Starts its own counting server (plain HTTP and HTTPS with a CA made at start-up) in a separate
process, measures the server's own capacity, then runs each client variant in its own process,
rounds interleaved, and reports medians with their min-max over rounds: req/s, ratios to the
hand-written recipe and to urllib3 measured in the same round, server-side connections, pool-full
discards, client CPU per request, sockets left open after close, and peak RSS. A WAN-like
scenario sends HTTPS bursts through a proxy on 127.0.0.1 that delays every chunk by RTT/2 each
way (``--rtt``). It ends with a verdict, one line per target, and exits 1 if a deterministic
target (connections per host, discards, sockets left open, failed requests) was missed; ratio
targets are judged on per-round ratios, or reported "not measurable here" when the machine is
too busy for them. Writes a JSON file and (with matplotlib) a PNG. Ctrl-C stops it cleanly.

``--quick`` takes about a minute and a half on 2 cores; the default is the full run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.server import ChildProcess, ServerProcess
from benchmarks.variants import VARIANTS

ROOT = Path(__file__).resolve().parent.parent


# Quick mode keeps what the targets need and fits in a minute on 2 cores; the full run has more
# of everything (and W=256).
QUICK_VARIANTS = [v for v in VARIANTS if v not in ("session-sized", "futures-executor")]


def _plan_cells(
    *, quick: bool, workers: list[int], delay_ms: int, rtt_ms: float
) -> list[dict[str, Any]]:
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
    if rtt_ms:
        # Through the delaying proxy: the round trips, not the server, hold each request; quick
        # mode keeps the widest W only.
        wan = [max(workers)] if quick else [w for w in workers if w > 1]
        cells.extend({"scenario": "wan-tls", "workers": w, "tls": True, "delay_ms": 0,
                      "rtt_ms": rtt_ms, "size": 64, "rounds": 8 if quick else 16}
                     for w in wan)  # fmt: skip
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
        start_new_session=True,  # Ctrl-C reaches only us; run() kills the child on the way out
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


class _Machine:
    """How much CPU other processes took while we ran: /proc/stat against our own usage."""

    def __init__(self) -> None:
        self.cpus = os.cpu_count() or 1
        self.load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.start = time.monotonic()
        self.busy_start = self._busy()
        self.own_start = self._own()

    @staticmethod
    def _busy() -> float | None:
        """CPU seconds every process on the machine has used since boot (Linux)."""
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        """CPU seconds of this process and every child it has waited for (server, clients)."""
        mine = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime

    def foreign_cpu(self) -> float | None:
        """Share of the machine's CPU that other processes used since we started (0 to 1)."""
        busy = self._busy()
        if busy is None or self.busy_start is None:
            return None
        wall = time.monotonic() - self.start
        other = busy - self.busy_start - (self._own() - self.own_start)
        return max(0.0, other / (wall * self.cpus))


def _capacity(env: dict[str, str], server: ServerProcess) -> float:
    found = _run(
        ["-m", "benchmarks.capacity", server.http_url, str(server.control_port), "1"], env, 60
    )[0]
    return float(found["rps"])


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="about 90 s on 2 cores")
    parser.add_argument("--rounds", type=int, help="rounds per variant (3 quick, 5 full)")
    parser.add_argument("--workers", type=int, nargs="+", help="W values (1 8 32 64 [256])")
    parser.add_argument("--delay-ms", type=int, default=50, help="server hold time in bursts")
    parser.add_argument(
        "--rtt",
        type=float,
        default=20.0,
        metavar="MS",
        help="round-trip time of the WAN-like scenario's proxy (default 20; 0 leaves it out)",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), help="a subset")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results",
        metavar="DIR",
        help="directory for quick.json/full.json and the chart (default benchmarks/results)",
    )
    parser.add_argument(
        "--icount",
        action="store_true",
        help="instead: instructions per keep-alive GET under callgrind for threadsession, "
        "requests, httpx and urllib3 (deterministic; needs valgrind; about 2 minutes)",
    )
    args = parser.parse_args()
    if args.icount:
        from . import icount

        raise SystemExit(icount.main([]))
    if args.rtt < 0:
        parser.error(f"--rtt must be >= 0 milliseconds, got {args.rtt!r}")
    try:
        code = _main(args)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        print("\ninterrupted: every process the benchmark started has been stopped", flush=True)
        code = 130
    raise SystemExit(code)


def _main(args: argparse.Namespace) -> int:
    rounds = args.rounds or (3 if args.quick else 5)
    workers = args.workers or ([1, 8, 32, 64] if args.quick else [1, 8, 32, 64, 256])
    variants = args.variants or (QUICK_VARIANTS if args.quick else list(VARIANTS))
    cells = _plan_cells(quick=args.quick, workers=workers, delay_ms=args.delay_ms, rtt_ms=args.rtt)
    env = _child_env()
    rows: list[dict[str, Any]] = []
    micro: list[dict[str, float]] = []
    machine = _Machine()
    with tempfile.TemporaryDirectory() as scratch, ServerProcess(Path(scratch)) as server:
        targets = [str(server.http_port), str(server.https_port)]
        with ChildProcess("benchmarks.proxy", str(args.rtt), *targets) as proxy:
            env["REQUESTS_CA_BUNDLE"] = server.ca  # every client verifies against the new CA
            env.pop("CURL_CA_BUNDLE", None)
            capacity = [_capacity(env, server)]
            print(f"server capacity: {capacity[0]:,.0f} req/s over 32 raw keep-alive "
                  f"connections", flush=True)  # fmt: skip
            progress = _Progress(rounds * (len(variants) + 1) + 1)
            ports = proxy.info["ports"]
            plan = {"http": server.http_url, "https": server.https_url,
                    "wan_http": f"http://127.0.0.1:{ports[targets[0]]}",
                    "wan_https": f"https://127.0.0.1:{ports[targets[1]]}",
                    "control": server.control_port, "ca": server.ca, "cells": cells}  # fmt: skip
            for round_ in range(rounds):
                # Interleave: every variant once per round, starting one further along each round.
                shift = round_ % len(variants)
                for variant in variants[shift:] + variants[:shift]:
                    out = _run(
                        ["-m", "benchmarks.client", json.dumps({**plan, "variant": variant})],
                        env,
                        600,
                    )
                    rows.extend({**row, "round": round_} for row in out)
                    progress.step(f"round {round_ + 1}/{rounds} {variant}")
                micro.append(_run(["-m", "benchmarks.micro"], env, 120)[0])
                progress.step(f"round {round_ + 1}/{rounds} micro-benchmark")
            capacity.append(_capacity(env, server))
            progress.step("server capacity again")
    cells_out = report.summarise(rows)
    report.print_tables(cells_out, args.delay_ms)
    rss = report.rss_by_variant(rows)
    print("\n== Peak RSS of each variant's process (median over rounds)")
    for name, mib in rss.items():
        print(f"  {VARIANTS[name][1]:32} {mib:6.1f} MiB")
    best = {key: min(m[key] for m in micro) for key in micro[0]}
    print(f"\n== pool.session() on a warm thread: {best['pool_session_ns']:.0f} ns; a bare "
          f"threading.local read {best['bare_local_read_ns']:.0f} ns; the recipe's function "
          f"{best['recipe_function_ns']:.0f} ns (best round)")  # fmt: skip
    facts = {
        "cpus": machine.cpus,
        "load_at_start": machine.load_at_start,
        "foreign_cpu": machine.foreign_cpu(),
        "capacity": capacity,
    }
    busy = report.machine_busy(facts, cells_out)
    targets_out = report.check_targets(cells_out, rows, micro, busy)
    stem = "quick" if args.quick else "full"
    json_path = args.out / f"{stem}.json"
    chart_path = args.out / f"{stem}.png"
    document = {
        "mode": stem,
        "rounds": rounds,
        "python": platform.python_version(),
        "machine": {**facts, "platform": platform.platform(), "busy": busy},
        "seconds": time.monotonic() - machine.start,
        "micro": micro,
        "peak_rss_mib": rss,
        "cells": cells_out,
        "targets": targets_out,
        "raw": rows,
    }
    report.write_json(json_path, document)
    charted = report.write_chart(chart_path, cells_out, args.delay_ms)
    print(f"\nwrote {json_path}" + (f" and {chart_path}" if charted else
          " (pip install matplotlib for the chart)"))  # fmt: skip
    report.print_verdict(targets_out, facts, busy)
    print(f"total {time.monotonic() - machine.start:.0f} s")
    return 1 if any(t["status"] == "missed" and t["kind"] == "deterministic"
                    for t in targets_out) else 0  # fmt: skip


if __name__ == "__main__":
    main()
