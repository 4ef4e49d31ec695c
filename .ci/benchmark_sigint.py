"""Ctrl-C during ``python -m benchmarks --quick``: one line, exit 130, no process left behind.

Starts the benchmark in its own process group with SIGINT at its default (as a terminal does;
a shell's background job would ignore it), waits for the first client round, records every
descendant process, sends SIGINT to the group as Ctrl-C does, and checks the outcome. Linux
only (reads /proc).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def descendants(pid: int) -> set[int]:
    """Every process below pid, from /proc."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether pid is still a running (not zombie) process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def main() -> None:
    """Run, interrupt and check; an AssertionError says what went wrong."""

    def terminal_like() -> None:
        os.setpgrp()
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with tempfile.TemporaryDirectory() as out:
        bench = subprocess.Popen(
            [sys.executable, "-m", "benchmarks", "--quick", "--out", out],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=terminal_like,  # this process has no other thread yet: safe
        )
        assert bench.stderr is not None
        assert bench.stdout is not None
        err_lines: list[str] = []
        started = threading.Event()

        def read_stderr() -> None:
            assert bench.stderr is not None
            for line in bench.stderr:
                err_lines.append(line)
                if "round 1/" in line:
                    started.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        assert started.wait(180), f"no client round within 180 s: {err_lines[-5:]}"
        children = descendants(bench.pid)
        os.killpg(bench.pid, signal.SIGINT)
        out_text = bench.stdout.read()
        bench.wait(60)
        reader.join(10)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in children if alive(p)]
    last = out_text.strip().splitlines()[-1]
    stray = [line for line in err_lines if not line.startswith("[")]
    print(f"exit {bench.returncode}; {len(children)} child processes before Ctrl-C, {len(left)} "
          f"left; last line: {last!r}; other stderr lines: {len(stray)}")  # fmt: skip
    assert bench.returncode == 130, bench.returncode
    assert last.startswith("interrupted:"), out_text[-500:]
    assert not stray, "".join(stray)[-2000:]
    assert children, "the benchmark had no child process to check"
    assert not left, (children, left)


if __name__ == "__main__":
    main()
