"""What run.py, guard.py and plugin.py share (stdlib only: run.py runs without pytest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_id_list(path: Path) -> dict[str, str]:
    """``test id  # reason`` lines (blank lines and ``#`` lines skipped) as {id: reason}."""
    entries: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        test_id, _, reason = line.partition("  # ")
        entries[test_id.strip()] = reason.strip()
    return entries


def listed(test_id: str, entries: dict[str, str]) -> bool:
    """Whether an entry names the test or, without [parameters], every parametrisation of it."""
    return test_id in entries or test_id.split("[", 1)[0] in entries


def fail_report(report: Any, messages: list[str]) -> None:
    """Turn a test phase's report into a failure naming what the harness caught, then forget it.

    Whatever the test expected (an ``OSError``, an xfail), the harness's finding wins.
    """
    report.outcome = "failed"
    report.longrepr = "\n".join(messages)
    if hasattr(report, "wasxfail"):
        del report.wasxfail
    messages.clear()
