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
}


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (scenario, workers, variant): medians over rounds, ratios per round."""
    by_round: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        if "scenario" in row:
            by_round[(row["scenario"], row["workers"], row["round"])][row["variant"]] = row
    ratios: dict[tuple[str, int, str], dict[str, list[float]]] = defaultdict(
        lambda: {"recipe": [], "urllib3": []}
    )
    for (scenario, workers, _), variants in by_round.items():
        for name, row in variants.items():
            for base in ("recipe", "urllib3"):
                other = variants.get(base)
                if other and other["rps"] and not row["error"]:
                    ratios[(scenario, workers, name)][base].append(row["rps"] / other["rps"])
    grouped: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if "scenario" in row:
            grouped[(row["scenario"], row["workers"], row["variant"])].append(row)
    cells = []
    for (scenario, workers, name), runs in grouped.items():
        ok = [r for r in runs if not r["error"]] or runs

        def median(field: str, ok: list[dict[str, Any]] = ok) -> float:
            return float(statistics.median(r[field] for r in ok))

        cells.append(
            {
                "scenario": scenario,
                "workers": workers,
                "variant": name,
                "rounds": len(runs),
                "errors": [r["error"] for r in runs if r["error"]],
                "rps": median("rps"),
                "vs_recipe": _median_or_none(ratios[(scenario, workers, name)]["recipe"]),
                "vs_urllib3": _median_or_none(ratios[(scenario, workers, name)]["urllib3"]),
                "connections": median("connections"),
                "discards": median("discards"),
                "cpu_us": median("cpu_us"),
                "server_busy": median("server_busy"),
                "open_after": median("open_after"),
                "sent": runs[0]["sent"],
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


def print_tables(cells: list[dict[str, Any]], delay_ms: int) -> None:
    blocks: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for cell in cells:
        blocks[(cell["scenario"], cell["workers"])].append(cell)
    for (scenario, workers), block in blocks.items():
        title = SCENARIOS[scenario].format(delay=delay_ms)
        busiest = max(c["server_busy"] for c in block)
        print(f"\n== {title}, W={workers} ({block[0]['sent']} requests a run; "
              f"server CPU at most {busiest:.0%} of one core)")  # fmt: skip
        print(f"{'variant':32} {'req/s':>8} {'xrecipe':>8} {'xurllib3':>8} {'conns':>6} "
              f"{'discards':>8} {'CPU us/req':>10} {'open after':>10}")  # fmt: skip
        for c in block:
            label = VARIANTS[c["variant"]][1]
            error = f"  ERROR {c['errors'][0][:60]}" if c["errors"] else ""
            print(
                f"{label:32} {c['rps']:8,.0f} {_ratio(c['vs_recipe']):>8} "
                f"{_ratio(c['vs_urllib3']):>8} {c['connections']:6.0f} {c['discards']:8.0f} "
                f"{c['cpu_us']:10,.0f} {c['open_after']:10.0f}{error}"
            )


def find(
    cells: list[dict[str, Any]], scenario: str, workers: int, variant: str
) -> dict[str, Any] | None:
    for cell in cells:
        if (cell["scenario"], cell["workers"], cell["variant"]) == (scenario, workers, variant):
            return cell
    return None


def check_targets(cells: list[dict[str, Any]], micro: dict[str, float]) -> list[dict[str, Any]]:
    """The README's targets, each with its measured value and whether it was met."""
    targets: list[dict[str, Any]] = []

    def target(name: str, measured: str, met: bool) -> None:  # noqa: FBT001
        targets.append({"target": name, "measured": measured, "met": met})

    for cell in cells:
        if cell["variant"] == "ts-per-thread":
            target(
                f"per-thread, {cell['scenario']}, W={cell['workers']}: connections <= W per host, "
                f"0 discards",
                f"{cell['connections']:.0f} connections, {cell['discards']:.0f} discards",
                cell["connections"] <= cell["workers"] and cell["discards"] == 0,
            )
    for workers in (32, 64):
        for scenario in ("small", "burst"):
            ts = find(cells, scenario, workers, "ts-per-thread")
            futures = find(cells, scenario, workers, "futures")
            if ts is None or futures is None:
                continue
            vs_futures = ts["rps"] / futures["rps"]
            target(
                f"per-thread >= 1.00x recipe, {scenario}, W={workers}",
                _ratio(ts["vs_recipe"]).strip(),
                (ts["vs_recipe"] or 0) >= 1.0,
            )
            target(
                f"per-thread >= 1.05x requests-futures, {scenario}, W={workers}",
                f"{vs_futures:.2f}x",
                vs_futures >= 1.05,
            )
    ts = find(cells, "burst-tls", 64, "ts-per-thread")
    plain = find(cells, "burst-tls", 64, "session")
    if ts is not None and plain is not None:
        target(
            "HTTPS bursts, W=64: connections == W where one default Session opens many more",
            f"{ts['connections']:.0f} vs {plain['connections']:.0f}",
            ts["connections"] <= 64 < plain["connections"],
        )
        target(
            "HTTPS bursts, W=64: >= 1.25x one default Session's throughput",
            f"{ts['rps'] / plain['rps']:.2f}x",
            ts["rps"] / plain["rps"] >= 1.25,
        )
    ratio = micro["pool_session_ns"] / micro["bare_local_read_ns"]
    target(
        "pool.session() on a warm thread <= 1.5x a bare threading.local read",
        f"{ratio:.2f}x ({micro['pool_session_ns']:.0f} ns vs {micro['bare_local_read_ns']:.0f} ns; "
        f"{micro['pool_session_ns'] / micro['recipe_function_ns']:.2f}x the recipe's function)",
        ratio <= 1.5,
    )
    ts = find(cells, "small", 1, "ts-per-thread")
    if ts is not None:
        target(
            "per-thread >= 1.25x recipe at W=1, small body (environment snapshot)",
            _ratio(ts["vs_recipe"]).strip(),
            (ts["vs_recipe"] or 0) >= 1.25,
        )
    return targets


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("\n== Targets")
    for t in targets:
        print(f"  [{'met' if t['met'] else 'MISS'}] {t['target']}: {t['measured']}")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1))


def write_chart(path: Path, cells: list[dict[str, Any]], delay_ms: int) -> bool:
    """A PNG per run: req/s against W (top) and server-side connections at the widest W (bottom).

    Returns False if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = [s for s in SCENARIOS if any(c["scenario"] == s for c in cells)]
    figure, axes = plt.subplots(
        2, len(scenarios), figsize=(6 * len(scenarios), 9), squeeze=False,
        gridspec_kw={"height_ratios": [3, 2]},
    )  # fmt: skip
    colours = {name: f"C{i}" for i, name in enumerate(VARIANTS)}
    for column, scenario in enumerate(scenarios):
        mine = [c for c in cells if c["scenario"] == scenario]
        widths = sorted({c["workers"] for c in mine})
        top, bottom = axes[0][column], axes[1][column]
        for name, (_, label) in VARIANTS.items():
            points = sorted((c["workers"], c["rps"]) for c in mine if c["variant"] == name)
            if not points:
                continue
            ours = name.startswith("ts-")
            top.plot(
                [widths.index(w) for w, _ in points], [rps for _, rps in points],
                "-" if ours else "--", marker="o", color=colours[name],
                linewidth=2.8 if ours else 1.2, label=label,
            )  # fmt: skip
        top.set_xticks(range(len(widths)), [str(w) for w in widths])
        top.set_title(SCENARIOS[scenario].format(delay=delay_ms), fontsize=9)
        top.set_xlabel("worker threads (W)")
        top.set_ylabel("requests per second (median)")
        top.grid(alpha=0.3)
        widest = [c for c in mine if c["workers"] == widths[-1]]
        names = [c["variant"] for c in widest]
        bottom.barh(
            [VARIANTS[n][1] for n in names], [c["connections"] for c in widest],
            color=[colours[n] for n in names],
        )  # fmt: skip
        bottom.axvline(widths[-1], color="black", linewidth=0.8, linestyle=":")
        bottom.set_xlabel(f"connections the server saw at W={widths[-1]} (dotted: W)")
        bottom.tick_params(axis="y", labelsize=7)
        bottom.invert_yaxis()
        bottom.grid(alpha=0.3, axis="x")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
