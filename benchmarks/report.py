"""Medians, ratios, tables, targets, JSON and the chart, from the client processes' rows."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.variants import VARIANTS

SCENARIOS = {
    "small": "small body over HTTP",
    "burst": "fan-out bursts (server holds each request {delay} ms) over HTTP",
    "burst-tls": "fan-out bursts (server holds each request {delay} ms) over HTTPS",
    "wan-tls": "WAN-like: HTTPS bursts through a {rtt} ms round-trip proxy",
}
SHORT = {"small": "small body", "burst": "HTTP bursts", "burst-tls": "HTTPS bursts",
         "wan-tls": "WAN HTTPS bursts"}  # fmt: skip

# When ratio targets mean nothing: the thresholds the verdict applies (README "Benchmark").
MIN_ROUNDS = 3  # fewer rounds give no spread to judge
MAX_SPREAD = 0.15  # per-round ratios further apart than 15% of their median: too noisy
MAX_FOREIGN_CPU = 0.15  # other processes used more than 15% of the machine's CPU during the run
MIN_CAPACITY_FACTOR = 3.0  # the server's capacity under 3x the fastest client: it may limit them
MAX_CAPACITY_DRIFT = 0.30  # capacity at the end differs from the start by more than 30%


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (scenario, workers, variant): medians and min-max over rounds."""
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "scenario" in row:
            grouped[(row["scenario"], row["workers"], row["variant"])].append(row)
    cells = []
    for (scenario, workers, name), runs in grouped.items():
        ok = [r for r in runs if not r["error"]] or runs

        def median(field: str, ok: list[dict[str, Any]] = ok) -> float:
            return float(statistics.median(r[field] for r in ok))

        per_1000 = [1000 * r["seconds"] / r["sent"] for r in ok]
        cells.append(
            {
                "scenario": scenario,
                "workers": workers,
                "variant": name,
                "rounds": len(runs),
                "errors": [r["error"] for r in runs if r["error"]],
                "rps": median("rps"),
                "rps_min": min(r["rps"] for r in ok),
                "rps_max": max(r["rps"] for r in ok),
                "s_per_1000": statistics.median(per_1000),
                "s_per_1000_min": min(per_1000),
                "s_per_1000_max": max(per_1000),
                "vs_recipe": _median_or_none(round_ratios(rows, scenario, workers, name, "recipe")),
                "vs_urllib3": _median_or_none(
                    round_ratios(rows, scenario, workers, name, "urllib3")
                ),
                "connections": median("connections"),
                "connections_max": max(r["connections"] for r in runs),
                "discards": median("discards"),
                "discards_max": max(r["discards"] for r in runs),
                "cpu_us": median("cpu_us"),
                "server_busy": median("server_busy"),
                "open_after": median("open_after"),
                "open_after_max": max(r["open_after"] for r in runs),
                "sent": runs[0]["sent"],
                "rtt_ms": runs[0].get("rtt_ms", 0),
            }
        )
    order = list(VARIANTS)
    cells.sort(
        key=lambda c: (
            list(SCENARIOS).index(c["scenario"]),
            c["workers"],
            order.index(c["variant"]),
        )
    )
    return cells


def round_ratios(
    rows: list[dict[str, Any]], scenario: str, workers: int, variant: str, base: str
) -> list[float]:
    """variant's req/s over base's, one ratio per round in which both ran without error."""
    by_round: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if row.get("scenario") == scenario and row["workers"] == workers:
            by_round[row["round"]][row["variant"]] = row
    ratios = []
    for _, variants in sorted(by_round.items()):
        mine, other = variants.get(variant), variants.get(base)
        if mine and other and not mine["error"] and not other["error"] and other["rps"]:
            ratios.append(mine["rps"] / other["rps"])
    return ratios


def _median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def rss_by_variant(rows: list[dict[str, Any]]) -> dict[str, float]:
    found: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if "peak_rss_mib" in row:
            found[row["variant"]].append(row["peak_rss_mib"])
    return {name: statistics.median(values) for name, values in found.items()}


def _ratio(value: float | None) -> str:
    return "   -  " if value is None else f"{value:5.2f}x"


def _title(scenario: str, delay_ms: int, rtt_ms: float) -> str:
    return SCENARIOS[scenario].format(delay=delay_ms, rtt=f"{rtt_ms:g}")


def print_tables(cells: list[dict[str, Any]], delay_ms: int) -> None:
    blocks: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        blocks[(cell["scenario"], cell["workers"])].append(cell)
    for (scenario, workers), block in blocks.items():
        title = _title(scenario, delay_ms, block[0]["rtt_ms"])
        busiest = max(c["server_busy"] for c in block)
        print(f"\n== {title}, W={workers} ({block[0]['sent']} requests a run; "
              f"server CPU at most {busiest:.0%} of one core)")  # fmt: skip
        if scenario == "wan-tls":
            _print_wan(block)
            continue
        print(f"{'variant':32} {'req/s':>6} {'min-max':>11} {'xrecipe':>7} {'xurllib3':>8} "
              f"{'conns':>5} {'discards':>8} {'CPU us/req':>10} {'open after':>10}")  # fmt: skip
        for c in block:
            label = VARIANTS[c["variant"]][1]
            print(
                f"{label:32} {c['rps']:6,.0f} {_span(c['rps_min'], c['rps_max']):>11} "
                f"{_ratio(c['vs_recipe']):>7} {_ratio(c['vs_urllib3']):>8} "
                f"{c['connections']:5.0f} {c['discards']:8.0f} {c['cpu_us']:10,.0f} "
                f"{c['open_after']:10.0f}{_errors(c)}"
            )


def _span(low: float, high: float) -> str:
    return f"{low:,.0f}-{high:,.0f}"


def _errors(cell: dict[str, Any]) -> str:
    if not cell["errors"]:
        return ""
    note = f"  ERROR in {len(cell['errors'])}/{cell['rounds']} rounds: {cell['errors'][0][:60]}"
    if cell["variant"] == "httpx" and "Bad file descriptor" in cell["errors"][0]:
        note += f" ({HTTPX_EBADF})"
    return note


HTTPX_EBADF = (
    "httpcore's pool closed a connection a request was using: encode/httpcore#1110, not the harness"
)


def _print_wan(block: list[dict[str, Any]]) -> None:
    print(f"{'variant':32} {'s per 1,000 requests':>21} {'handshakes':>10} {'discards':>8} "
          f"{'req/s':>6}")  # fmt: skip
    for c in block:
        label = VARIANTS[c["variant"]][1]
        per_1000 = f"{c['s_per_1000']:5.2f} ({c['s_per_1000_min']:.2f}-{c['s_per_1000_max']:.2f})"
        print(
            f"{label:32} {per_1000:>21} {c['connections']:10.0f} {c['discards']:8.0f} "
            f"{c['rps']:6,.0f}{_errors(c)}"
        )
    print("(handshakes: TCP+TLS connections the server accepted, median over rounds; each costs "
          "two round trips before its first request)")  # fmt: skip


def find(
    cells: list[dict[str, Any]], scenario: str, workers: int, variant: str
) -> dict[str, Any] | None:
    for cell in cells:
        if (cell["scenario"], cell["workers"], cell["variant"]) == (scenario, workers, variant):
            return cell
    return None


def machine_busy(machine: dict[str, Any], cells: list[dict[str, Any]]) -> list[str]:
    """Why ratio targets cannot be judged on this machine in this run (empty: they can)."""
    reasons = []
    foreign = machine.get("foreign_cpu")
    if foreign is not None and foreign > MAX_FOREIGN_CPU:
        reasons.append(
            f"other processes used {foreign:.0%} of the machine's CPU during the run "
            f"(limit {MAX_FOREIGN_CPU:.0%})"
        )
    load = machine.get("load_at_start")
    if foreign is None and load is not None and load > machine["cpus"] / 2:
        reasons.append(f"load average {load:.1f} on {machine['cpus']} cores at the start")
    capacity = machine["capacity"]
    fastest = max((c["rps"] for c in cells if c["scenario"] == "small"), default=0.0)
    if min(capacity) < MIN_CAPACITY_FACTOR * fastest:
        reasons.append(
            f"server capacity {min(capacity):,.0f} req/s is under {MIN_CAPACITY_FACTOR:g}x the "
            f"fastest client's {fastest:,.0f}"
        )
    if abs(capacity[-1] - capacity[0]) > MAX_CAPACITY_DRIFT * max(capacity):
        reasons.append(
            f"server capacity moved from {capacity[0]:,.0f} to {capacity[-1]:,.0f} req/s "
            f"during the run"
        )
    return reasons


def check_targets(
    cells: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    micro: list[dict[str, float]],
    busy: list[str],
) -> list[dict[str, Any]]:
    """The README's targets: deterministic ones met or missed, ratio ones judged per round."""
    targets: list[dict[str, Any]] = []

    def exact(name: str, measured: str, met: bool) -> None:  # noqa: FBT001
        targets.append({"target": name, "kind": "deterministic", "measured": measured,
                        "status": "met" if met else "missed"})  # fmt: skip

    for variant in ("ts-per-thread", "ts-shared"):
        mine = [c for c in cells if c["variant"] == variant]
        if not mine:
            continue
        label = VARIANTS[variant][1]
        worst = max(mine, key=lambda c: (c["connections_max"] / c["workers"], c["workers"]))
        exact(
            f"{label}: at most W connections per host, every cell and round",
            f"at most {worst['connections_max']:.0f} for W={worst['workers']} "
            f"({SHORT[worst['scenario']]}), {len(mine)} cells",
            all(c["connections_max"] <= c["workers"] for c in mine),
        )
        exact(
            f"{label}: 0 pool-full discards",
            f"{sum(c['discards_max'] for c in mine):.0f} (worst round of each cell, summed)",
            all(c["discards_max"] == 0 for c in mine),
        )
        exact(
            f"{label}: 0 sockets left open after close",
            f"{max(c['open_after_max'] for c in mine):.0f} at most",
            all(c["open_after_max"] == 0 for c in mine),
        )
        errors = sum(len(c["errors"]) for c in mine)
        exact(f"{label}: no request failed", f"{errors} failed runs", errors == 0)

    def ratio(name: str, values: list[float], at_least: float | None = None,
              at_most: float | None = None) -> None:  # fmt: skip
        if not values:
            return
        mid = statistics.median(values)
        spread = (max(values) - min(values)) / mid if mid else float("inf")
        measured = (
            f"{mid:.2f}x median ({min(values):.2f}x-{max(values):.2f}x over {len(values)} rounds)"
        )
        reason = None
        if busy:
            reason = "machine busy"
        elif len(values) < MIN_ROUNDS:
            reason = f"{len(values)} round(s), {MIN_ROUNDS} needed"
        elif spread > MAX_SPREAD:
            reason = f"rounds {spread:.0%} apart, limit {MAX_SPREAD:.0%}"
        if reason is not None:
            status = "not measurable here"
            measured += f"; {reason}"
        else:
            ok = mid >= at_least if at_least is not None else mid <= (at_most or 0)
            status = "met" if ok else "missed"
        targets.append({"target": name, "kind": "ratio", "measured": measured, "status": status,
                        "rounds": values})  # fmt: skip

    for scenario in ("small", "burst"):
        for w in (32, 64):
            where = f"{SHORT[scenario]}, W={w}"
            ratio(f"per-thread >= 1.00x recipe, {where}",
                  round_ratios(rows, scenario, w, "ts-per-thread", "recipe"), 1.0)  # fmt: skip
            ratio(f"per-thread >= 1.05x requests-futures, {where}",
                  round_ratios(rows, scenario, w, "ts-per-thread", "futures"), 1.05)  # fmt: skip
    ratio("per-thread >= 1.25x one default Session, HTTPS bursts, W=64",
          round_ratios(rows, "burst-tls", 64, "ts-per-thread", "session"), 1.25)  # fmt: skip
    for cell in cells:
        if cell["scenario"] == "wan-tls" and cell["variant"] == "ts-per-thread":
            ratio(f"per-thread >= 1.50x one default Session, WAN HTTPS bursts "
                  f"({cell['rtt_ms']:g} ms), W={cell['workers']}",
                  round_ratios(rows, "wan-tls", cell["workers"], "ts-per-thread", "session"),
                  1.5)  # fmt: skip
    ratio("per-thread >= 1.25x recipe, small body, W=1 (environment snapshot)",
          round_ratios(rows, "small", 1, "ts-per-thread", "recipe"), 1.25)  # fmt: skip
    ratio("pool.session() on a warm thread <= 1.5x a bare threading.local read",
          [m["pool_session_ns"] / m["bare_local_read_ns"] for m in micro], at_most=1.5)  # fmt: skip
    return targets


def print_verdict(targets: list[dict[str, Any]], machine: dict[str, Any], busy: list[str]) -> None:
    capacity = machine["capacity"]
    foreign = machine.get("foreign_cpu")
    load = machine.get("load_at_start")
    print("\n== Verdict")
    print(
        f"machine: {machine['cpus']} cores"
        + (f", other processes used {foreign:.0%} of its CPU during the run" if foreign is not None
           else "")
        + (f", load average {load:.1f} at the start" if load is not None else "")
        + f"; server capacity {capacity[0]:,.0f} req/s at the start, {capacity[-1]:,.0f} at the end"
    )  # fmt: skip
    if busy:
        print("ratio targets not measurable here: " + "; ".join(busy))
    width = max(len(f"[{t['status']}]") for t in targets)
    for t in targets:
        print(f"  {'[' + t['status'] + ']':{width}} {t['target']}: {t['measured']}")
    exact = [t for t in targets if t["kind"] == "deterministic"]
    ratios = [t for t in targets if t["kind"] == "ratio"]
    missed = sum(t["status"] == "missed" for t in exact)

    def count(status: str) -> int:
        return sum(t["status"] == status for t in ratios)

    print(
        f"verdict: deterministic targets {len(exact) - missed} met, {missed} missed; ratio "
        f"targets {count('met')} met, {count('missed')} missed, "
        f"{count('not measurable here')} not measurable here"
        + ("; exit status 1" if missed else "")
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))


def _colour(name: str) -> str:
    return {"ts-per-thread": "#1f5fa8", "ts-shared": "#5aa0e0", "session": "#c0392b",
            "requests.get": "#e67e22"}.get(name, "#8c8c8c")  # fmt: skip


def _chart_title(scenario: str, delay_ms: int, rtt_ms: float, workers: int) -> str:
    return {
        "small": f"small body over HTTP, W={workers}",
        "burst": f"HTTP bursts held {delay_ms} ms, W={workers}",
        "burst-tls": f"HTTPS bursts held {delay_ms} ms, W={workers}",
        "wan-tls": f"HTTPS bursts, {rtt_ms:g} ms round trips, W={workers}",
    }[scenario]


def write_chart(path: Path, cells: list[dict[str, Any]], delay_ms: int) -> bool:
    """A PNG per run: per scenario at its widest W, connections and discards (top), req/s (bottom).

    Returns False if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return False
    columns = []
    for scenario in SCENARIOS:
        mine = [c for c in cells if c["scenario"] == scenario]
        if mine:
            widest = max(c["workers"] for c in mine)
            columns.append((scenario, widest, [c for c in mine if c["workers"] == widest]))
    if not columns:
        return False
    names = [
        n for n in VARIANTS if any(c["variant"] == n for _, _, block in columns for c in block)
    ]
    labels = [VARIANTS[n][1] for n in names]
    figure, axes = plt.subplots(
        2, len(columns), figsize=(3.6 * len(columns) + 2.2, 1.0 + 0.42 * len(names) * 2),
        squeeze=False, sharey=True,
    )  # fmt: skip
    rows = list(range(len(names)))
    for column, (scenario, workers, block) in enumerate(columns):
        by_name = {c["variant"]: c for c in block}
        top, bottom = axes[0][column], axes[1][column]
        conns = [by_name[n]["connections"] if n in by_name else 0 for n in names]
        discards = [by_name[n]["discards"] if n in by_name else 0 for n in names]
        top.barh([r + 0.2 for r in rows], conns, height=0.4, color=[_colour(n) for n in names])
        top.barh([r - 0.2 for r in rows], discards, height=0.4, color="white",
                 edgecolor="#444444", hatch="////", linewidth=0.6)  # fmt: skip
        for r, (c, d) in enumerate(zip(conns, discards)):
            top.text(c, r + 0.2, f" {c:.0f}", va="center", fontsize=7)
            if d:
                top.text(d, r - 0.2, f" {d:.0f} discarded", va="center", fontsize=7)
        top.axvline(workers, color="black", linewidth=0.9, linestyle=":")
        top.set_xlim(0, max([*conns, *discards, workers]) * 1.22)
        top.set_title(_chart_title(scenario, delay_ms, block[0]["rtt_ms"], workers), fontsize=9)
        top.set_xlabel("connections opened / discarded (median)", fontsize=8)
        rps = [by_name[n]["rps"] if n in by_name else 0 for n in names]
        low = [r - (by_name[n]["rps_min"] if n in by_name else 0) for n, r in zip(names, rps)]
        high = [(by_name[n]["rps_max"] if n in by_name else 0) - r for n, r in zip(names, rps)]
        bottom.barh(rows, rps, height=0.6, color=[_colour(n) for n in names],
                    xerr=[low, high], error_kw={"elinewidth": 1, "capsize": 3})  # fmt: skip
        bottom.set_xlim(0, max(by_name[n]["rps_max"] for n in by_name) * 1.1)
        bottom.set_xlabel("requests per second (median, min-max)", fontsize=8)
        for axis in (top, bottom):
            axis.grid(alpha=0.3, axis="x")
            axis.tick_params(labelsize=7.5)
    axes[0][0].set_yticks(
        rows, labels
    )  # shared by every panel: the first in VARIANTS at the bottom
    figure.legend(
        handles=[
            Patch(color="#8c8c8c", label="connections the server accepted (blue: threadsession)"),
            Patch(
                facecolor="white",
                edgecolor="#444444",
                hatch="////",
                label="pool-full discards (urllib3)",
            ),
            plt.Line2D([], [], color="black", linestyle=":", label="W: one connection per worker"),
        ],
        loc="upper center",
        ncol=3,
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, 1.0),
    )
    figure.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
