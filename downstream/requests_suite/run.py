"""Run requests' own test suite twice, plain and with pool-made sessions, and compare.

As urllib3's CI runs requests' suite downstream: the suite comes from the requests sdist of the
version installed in a venv of its own; run 1 is plain requests, run 2 the same tests with every
``Session`` made by a ``ThreadLocalSessionPool`` (plugin.py). Both runs deselect the tests of
deselected.txt and refuse any traffic beyond 127.0.0.1 (guard.py). The outcome of every test is
compared; a difference not listed in expected_differences.txt, or a listed one that no longer
differs, fails the run (exit 1).

Usage (stdlib only, any Python 3.9+)::

    python3 downstream/requests_suite/run.py [--python PY] [--install SPEC] [--requests SPEC]
        [--urllib3 SPEC] [--work DIR]

``--install`` is what provides threadsession (default: the checkout, ``.``; CI passes the wheel).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from requests_suite._shared import listed, read_id_list  # noqa: E402  (stdlib only, like this script)

# requests' own test requirements (its pyproject [test] extra and requirements-dev.txt), less
# coverage and xdist; plus pytest-timeout to keep the run bounded.
TEST_REQUIREMENTS = (
    "pytest>=7,<10",
    "pytest-httpbin==2.1.0",
    "httpbin~=0.10.0",
    "pytest-mock",
    "trustme",
    "PySocks>=1.5.6,!=1.5.7",
    "pytest-timeout>=2",
)
PER_TEST_TIMEOUT = 60  # seconds; pytest-timeout fails a hung test
RUN_TIMEOUT = 600  # seconds for one whole pytest run
# The environment requests' own CI runs its suite in: no proxy variables (its conftest clears
# them per test, not during collection) and no CA-bundle variables (a machine that sets
# REQUESTS_CA_BUNDLE would otherwise decide what test_env_cert_bundles sees).
DROPPED_ENV = (
    "http_proxy", "https_proxy", "no_proxy", "all_proxy", "ftp_proxy",
    "requests_ca_bundle", "curl_ca_bundle",
)  # fmt: skip
OUTCOMES = ("passed", "failed", "skipped", "xfailed", "xpassed", "error")


def say(text: str = "") -> None:
    """One line to stdout, flushed (CI interleaves it with pip's and pytest's output)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> int:
    """Set up, run both, compare; the exit status is CI's verdict."""
    args = _parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="requests-suite-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    venv = work / "venv"
    started = time.monotonic()
    python = _make_venv(args, venv)
    version = _output(python, "-c", "import requests; print(requests.__version__)")
    urllib3 = _output(python, "-c", "import urllib3; print(urllib3.__version__)")
    suite = _unpack_suite(python, version, work)
    say(f"requests {version}, urllib3 {urllib3}, suite in {suite}")
    _check_guard(python, work)
    plain = _run_suite(python, suite, work / "plain.json", pool=False)
    pooled = _run_suite(python, suite, work / "pool.json", pool=True)
    verdict = _compare(plain, pooled, read_id_list(HERE / "expected_differences.txt"))
    say(f"requests-suite: total {time.monotonic() - started:.0f} s, outcomes in {work}")
    return verdict


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venv")
    parser.add_argument("--install", default=str(CHECKOUT), help="threadsession to install")
    parser.add_argument("--requests", default="requests", help="requests requirement")
    parser.add_argument("--urllib3", default="", help="urllib3 requirement (default: pip's)")
    parser.add_argument("--work", help="work directory (default: a new temporary one)")
    return parser.parse_args()


def _make_venv(args: argparse.Namespace, venv: Path) -> Path:
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([args.python, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    wanted = [args.install, f"{args.requests}", *TEST_REQUIREMENTS]
    if args.urllib3:
        wanted.append(args.urllib3)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted], check=True)
    # A missing test dependency must fail here, not become a skip or a collection error.
    _output(python, "-c", "import pytest_httpbin, httpbin, pytest_mock, trustme, socks")
    return python


def _output(python: Path, *argv: str) -> str:
    done = subprocess.run([str(python), *argv], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _unpack_suite(python: Path, version: str, work: Path) -> Path:
    """Unpack the sdist of the installed requests, less its own copy of the package.

    Its tests, their data (some open requirements-dev.txt) and its pytest configuration stay;
    ``src/`` (2.32+) or ``requests/`` (older) go, so the installed requests is the one tested.
    """
    downloads = work / "sdist"
    download = [
        str(python), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
        f"requests=={version}", "-d", str(downloads),
    ]  # fmt: skip
    subprocess.run(download, check=True)
    (archive,) = downloads.glob(f"requests-{version}.tar.gz")
    suite = work / f"requests-{version}"
    shutil.rmtree(suite, ignore_errors=True)
    with tarfile.open(archive) as sdist:
        top = f"requests-{version}/"
        members = [
            member
            for member in sdist.getmembers()
            if member.name.startswith(top)
            and not member.name[len(top) :].startswith(("src/", "requests/"))
            and (member.isfile() or member.isdir())
        ]
        # "data" refuses links and paths outside work (tarfile has it since 3.9.17).
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        sdist.extractall(work, members=members, **safe)
    if not (suite / "tests" / "test_requests.py").is_file():
        raise SystemExit(f"requests {version}'s sdist has no tests/test_requests.py")
    return suite


def _suite_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in DROPPED_ENV}
    env["PYTHONPATH"] = str(HERE.parent)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def _check_guard(python: Path, work: Path) -> None:
    """Run the harness's own tests first: a broken guard or plugin stops the run here."""
    say("\n== the harness's own tests (guard and plugin)")
    command = [
        str(python), "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytester",
        "-p", "requests_suite.guard", "-q", "--rootdir", str(HERE), str(HERE / "test_harness.py"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=work, env=_suite_env(), timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the harness's own tests failed (pytest exit {done.returncode})")


def _run_suite(python: Path, suite: Path, outcomes: Path, *, pool: bool) -> dict[str, dict]:
    name = "pool sessions" if pool else "plain requests"
    plugins = ["-p", "requests_suite.guard"] + (["-p", "requests_suite.plugin"] if pool else [])
    env = _suite_env()
    command = [
        str(python), "-m", "pytest", "-p", "no:cacheprovider", *plugins,
        f"--ts-deselect={HERE / 'deselected.txt'}", f"--ts-outcomes={outcomes}",
        f"--timeout={PER_TEST_TIMEOUT}", "-q", "-rfE", "--no-header", "--tb=short",
        "--disable-warnings",
    ]  # fmt: skip
    say(f"\n== requests' suite, {name}: {' '.join(command[1:])}")
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=suite, env=env, timeout=RUN_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{name}: not finished in {RUN_TIMEOUT} s") from None
    say(f"== {name}: pytest exit {done.returncode} in {time.monotonic() - started:.0f} s")
    # 0 all passed, 1 some failed: both are outcomes to compare. Anything else (interrupted,
    # internal error, usage error, no tests) means the run itself broke.
    if done.returncode not in (0, 1) or not outcomes.is_file():
        raise SystemExit(f"{name}: pytest exited {done.returncode}, the run itself failed")
    found: dict[str, dict] = json.loads(outcomes.read_text(encoding="utf-8"))
    return found


def _counts(outcomes: dict[str, dict]) -> str:
    tally = dict.fromkeys(OUTCOMES, 0)
    for entry in outcomes.values():
        tally[entry["outcome"]] += 1
    return ", ".join(f"{tally[name]} {name}" for name in OUTCOMES)


def _compare(plain: dict[str, dict], pooled: dict[str, dict], expected: dict[str, str]) -> int:
    missing = {"outcome": "not run", "cause": ""}
    differing = {
        test: (plain.get(test, missing), pooled.get(test, missing))
        for test in sorted(set(plain) | set(pooled))
        if plain.get(test, missing)["outcome"] != pooled.get(test, missing)["outcome"]
    }
    unexpected = [test for test in differing if not listed(test, expected)]
    stale = [entry for entry in expected if not any(listed(t, {entry: ""}) for t in differing)]
    say("\n== requests' suite: plain requests vs pool sessions")
    say(f"plain requests: {_counts(plain)}")
    say(f"pool sessions:  {_counts(pooled)}")
    say(f"{len(differing)} tests differ ({len(differing) - len(unexpected)} expected):")
    for test, (was, now) in differing.items():
        tag = "expected  " if listed(test, expected) else "UNEXPECTED"
        cause = now["cause"] if now["outcome"] != "passed" else was["cause"]
        say(f"  {tag} {test}: {was['outcome']} -> {now['outcome']}: {_one_line(cause)}")
    for test in stale:
        say(f"  NO LONGER DIFFERS (remove from expected_differences.txt): {test}")
    if unexpected or stale:
        say(f"requests-suite: FAILED ({len(unexpected)} unexpected, {len(stale)} stale)")
        return 1
    say("requests-suite: pool sessions match plain requests outside the expected differences")
    return 0


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:200]


if __name__ == "__main__":
    sys.exit(main())
