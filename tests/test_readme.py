"""Every ```python block of README.md runs as written and prints what the README says it prints.

Each block runs as a file of its own in a fresh interpreter (the suite's own Python: 3.9 and 3.13
in CI), in an empty directory, against the server the README tells readers to start
(``python -m benchmarks.server``), which this module starts on a free port and stops by its pid.
The examples read that server's URL from ``DEMO_URL`` (default http://127.0.0.1:8000, the
server's default). A block followed by an "Output:" paragraph and a ```text block must print
exactly that text (a line of ``...`` stands for any lines, and ``...`` inside a line for any
text, as with doctest's ELLIPSIS); a block without one must print nothing. Either way stderr
must be empty: no warning, no traceback, no ResourceWarning. Blocks that import Dask or Celery
are skipped when those extras are missing, unless THREADSESSION_README_ALL=1 (CI's extras
step), which makes a missing extra a failure.
"""

from __future__ import annotations

import doctest
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 180  # seconds per block: a Dask cluster starts in seconds, but the machine is shared
EXTRAS = {"distributed": "dask", "dask": "dask", "celery": "celery"}


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    code: str
    output: str | None  # None: the block must print nothing

    @property
    def needs(self) -> list[str]:
        found = re.findall(r"^\s*(?:from|import)\s+(\w+)", self.code, flags=re.MULTILINE)
        return sorted({name for name in found if name in EXTRAS})


def readme_blocks(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "```python":
            i += 1
            continue
        start = i
        end = lines.index("```", i + 1)
        code = "\n".join(lines[start + 1 : end]) + "\n"
        output = None
        j = end + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j < len(lines) and lines[j].strip() == "Output:":
            j += 1
            while not lines[j].strip():
                j += 1
            assert lines[j].strip() == "```text", f"README line {j + 1}: Output: needs ```text"
            close = lines.index("```", j + 1)
            output = "\n".join(lines[j + 1 : close]) + "\n"
            j = close + 1
        blocks.append(Block(start + 1, code, output))
        i = j
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_its_examples():
    assert len(BLOCKS) >= 6, [b.line for b in BLOCKS]
    assert sum(b.output is not None for b in BLOCKS) >= 4


def test_the_checker_compares_what_it_should():
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS
    assert checker.check_output("16 connections\n", "16 connections\n", flags)
    assert checker.check_output("... connections\n", "3 connections\n", flags)
    assert not checker.check_output("16 connections\n", "17 connections\n", flags)
    blocks = readme_blocks("```python\nprint(1)\n```\n\nOutput:\n\n```text\n1\n```\n")
    assert [(b.code, b.output) for b in blocks] == [("print(1)\n", "1\n")]


@pytest.fixture(scope="module")
def demo_url():
    """``python -m benchmarks.server --port 0``, as the README starts it; stopped by its pid."""
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", "--port", "0"],
        cwd=ROOT,  # benchmarks/ is in the checkout, not in the installed wheel
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(server.stdout.readline()))
        reader.start()
        reader.join(60)
        match = re.search(r"serving (http://127\.0\.0\.1:\d+)", first[0] if first else "")
        assert match, f"the server printed {first!r}"
        yield match.group(1)
    finally:
        server.send_signal(signal.SIGINT)  # as Ctrl-C: it prints its totals and ends
        try:
            out, err = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    assert not err, err
    assert "stopped: connections accepted" in out, out


def _ids(block: Block) -> str:
    return f"line{block.line}" + "".join(f"-{extra}" for extra in block.needs)


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("block", BLOCKS, ids=_ids)
def test_readme_example_runs_as_written(block: Block, demo_url: str, tmp_path: Path):
    for module in block.needs:
        if importlib.util.find_spec(module) is None:
            if os.environ.get("THREADSESSION_README_ALL") == "1":
                pytest.fail(f"README line {block.line} needs {module}: pip install "
                            f"'.[{EXTRAS[module]}]'")  # fmt: skip
            pytest.skip(f"needs {module} (pip install '.[{EXTRAS[module]}]')")
    script = tmp_path / f"readme_line{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "DEMO_URL": demo_url, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)  # the installed threadsession, as a reader has it
    done = subprocess.run(
        [sys.executable, "-W", "always::ResourceWarning", str(script)],
        cwd=tmp_path,  # not the checkout: its threadsession/ must not shadow the installed one
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    where = f"README.md line {block.line}"
    assert done.returncode == 0, f"{where} failed:\n{done.stderr}"
    assert not done.stderr, f"{where} wrote to stderr:\n{done.stderr}"
    expected = block.output or ""
    checker = doctest.OutputChecker()
    assert checker.check_output(expected, done.stdout, doctest.ELLIPSIS), (
        f"{where} printed:\n{done.stdout}\nbut the README says it prints:\n{expected}"
    )
