"""Instructions per request, counted by callgrind: a figure that does not move with machine load.

``python -m benchmarks.icount`` starts the benchmark server in its own process, then runs each
client in a child interpreter under ``valgrind --tool=callgrind`` twice, sending a few and many
small keep-alive GETs from one thread; the difference of the two totals divided by the difference
of the request counts is the cost of one warm request, with start-up, imports and connecting
cancelled out. Needs valgrind (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .server import ServerProcess

# One thread, one keep-alive connection, GET /?size=2 N times; the client is made and warmed up
# (connected, one request) before the counted loop, so N_MANY - N_FEW requests are all it adds.
_CLIENTS = {
    "urllib3": """
import urllib3
http = urllib3.PoolManager()
send = lambda: http.request("GET", URL).data
""",
    "httpx": """
import httpx
client = httpx.Client()
send = lambda: client.get(URL).content
""",
    "requests": """
import requests
session = requests.Session()
send = lambda: session.get(URL).content
""",
    "requests, trust_env=False": """
import requests
session = requests.Session()
session.trust_env = False
send = lambda: session.get(URL).content
""",
    "threadsession": """
import threadsession
pool = threadsession.ThreadLocalSessionPool()
send = lambda: pool.get(URL).content
""",
}
_LOOP = """
import sys
URL = sys.argv[1]
{setup}
send()
for _ in range(int(sys.argv[2])):
    send()
"""
_FEW, _MANY = 20, 220


def _instructions(code: str, url: str, count: int, work: Path) -> int:
    out = work / f"callgrind.{os.getpid()}.{count}.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    subprocess.run(
        [*command, sys.executable, "-c", code, url, str(count)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(match.group(1))


def per_request(code: str, url: str, work: Path) -> float:
    """Instructions one warm request costs: the slope between a short and a long run."""
    few = _instructions(code, url, _FEW, work)
    many = _instructions(code, url, _MANY, work)
    return (many - few) / (_MANY - _FEW)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients",
        nargs="+",
        choices=list(_CLIENTS),
        default=list(_CLIENTS),
        help="which clients to count (default: all)",
    )
    parser.add_argument(
        "--check",
        type=float,
        metavar="RATIO",
        help="exit 1 if threadsession costs more than RATIO times httpx's instructions (CI)",
    )
    args = parser.parse_args(argv)
    if args.check is not None and not {"httpx", "threadsession"} <= set(args.clients):
        parser.error("--check needs both httpx and threadsession among --clients")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(Path(tmp)) as server:
        url = f"{server.http_url}/?size=2"
        counts = {}
        for name in args.clients:
            counts[name] = per_request(_LOOP.format(setup=_CLIENTS[name]), url, Path(tmp))
            print(f"  counted {name}: {counts[name] / 1000:,.0f} k", file=sys.stderr, flush=True)
    base = counts.get("urllib3")
    httpx = counts.get("httpx")
    print(f"instructions per keep-alive GET (callgrind, one thread, {_MANY - _FEW} requests)")
    print(f"{'client':<28}{'k instr':>10}{'x urllib3':>11}{'x httpx':>9}")
    for name, value in counts.items():
        vs_base = f"{value / base:.2f}" if base else "-"
        vs_httpx = f"{value / httpx:.2f}" if httpx else "-"
        print(f"{name:<28}{value / 1000:>10,.0f}{vs_base:>11}{vs_httpx:>9}")
    if args.check is not None and httpx:
        ratio = counts["threadsession"] / httpx
        verdict = "met" if ratio <= args.check else "MISSED"
        target = f"threadsession at most {args.check:.2f}x httpx's instructions"
        print(f"[{verdict}] {target}: {ratio:.2f}x")
        return 0 if ratio <= args.check else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
