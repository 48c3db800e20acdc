"""The benchmark results (benchmarks/results/*.json) as one Markdown table against the goals of the project.

    .venv/bin/python benchmarks/summary.py            # print the table
    .venv/bin/python benchmarks/summary.py --write    # and put it into benchmarks/README.md between the markers

A goal is "met" or "missed" only from a figure measured in the result files; a missing file shows as "not run".
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def results_dir() -> Path:
    return Path(os.environ.get("COORDINATOR_BENCH_RESULTS") or HERE / "results")


README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(name: str) -> dict[str, Any] | None:
    path = results_dir() / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def level(doc: dict[str, Any] | None, concurrency: int, backend: str | None = None) -> dict[str, Any] | None:
    if doc is None:
        return None
    if backend is not None:
        doc = doc.get("backends", {}).get(backend)
        if doc is None:
            return None
    return next((lv["median"] for lv in doc["levels"] if lv["concurrency"] == concurrency), None)


@dataclass
class Row:
    figure: str
    goal: str
    measured: str
    met: bool | None  # None: no goal, or not measured


def _s(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f} s"


def rows() -> list[Row]:
    out: list[Row] = []
    latency, throughput = load("latency"), load("throughput")
    for c in (1, 10, 100):
        m = level(latency, c)
        if m is None:
            out.append(Row(f"injection latency, {c} in flight", "", "not run", None))
            continue
        goal = "p50 ≤ 0.3 s, p95 ≤ 1 s" if c == 100 else ""
        met = (m["latency_p50"] <= 0.3 and m["latency_p95"] <= 1.0) if c == 100 else None
        out.append(
            Row(
                f"injection latency, {c} in flight",
                goal,
                f"p50 {_s(m['latency_p50'])}, p95 {_s(m['latency_p95'])}, p99 {_s(m['latency_p99'])}",
                met,
            )
        )
    burst_doc = load("burst")
    burst = level(burst_doc, 100)
    if burst is not None:
        floor = next((lv.get("floor") for lv in (burst_doc or {}).get("levels", []) if lv["concurrency"] == 100), None)
        out.append(
            Row(
                "injection latency, 100 TestRuns created at one instant",
                "p95 ≤ 1 s",
                f"p50 {_s(burst['latency_p50'])}, p95 {_s(burst['latency_p95'])}, p99 {_s(burst['latency_p99'])}",
                burst["latency_p95"] <= 1.0,
            )
        )
        if floor is not None:
            out.append(
                Row(
                    "its floor: the API requests of 100 runs up to their injection, plain client, no operator",
                    "",
                    f"{_s(floor['floor_seconds'])} ({floor['requests_per_run']} requests/run x {floor['runs']} runs "
                    f"÷ {floor['served_per_second']:.0f} requests/s served); with the API server and etcd alone on "
                    f"every core {_s(floor['server_cpu_floor_seconds'])} ({floor['server_cpu_ms_per_request']:.1f} ms "
                    "of their CPU per request)",
                    None,
                )
            )
    for c in (100, 500):
        m = level(throughput, c)
        if m is None:
            out.append(Row(f"throughput, {c} in flight", "≥ 20 runs/s", "not run", None))
            continue
        out.append(
            Row(
                f"throughput, {c} in flight",
                "≥ 20 runs/s",
                f"{m['runs_per_second']:.1f} runs/s ({m['api_requests_per_run']:.0f} API requests/run)",
                m["runs_per_second"] >= 20,
            )
        )
    selection = load("selection")
    if selection is None:
        out.append(Row("10,000-pod selection + 10 % kill", "≤ 5 s, no throttling", "not run", None))
    else:
        m = selection["median"]
        out.append(
            Row(
                f"{selection['pods']:,}-pod selection + {selection['percent']} % kill",
                "≤ 5 s, no throttling stalls",
                f"{m['select_and_inject_seconds']:.2f} s to the last kill, {m['api_requests_total']:.0f} API "
                f"requests, {m['throttled_seconds']:.1f} s throttled",
                m["select_and_inject_seconds"] <= 5 and m["throttled_seconds"] < 0.5,
            )
        )
    footprint = load("footprint")
    if footprint is None:
        out.append(Row("operator RSS after 1,000 / 2,000 runs", "≤ 200 MB, flat", "not run", None))
    else:
        idle = footprint["idle"]
        out.append(
            Row(
                "operator idle",
                "",
                f"{idle['rss_mib']:.0f} MiB RSS, {idle['cpu_percent']:.1f} % of a core",
                None,
            )
        )
        settled = footprint["after_batches"]
        rss = [p["rss_mib"] for p in settled]
        growth = footprint["growth_last_batch_mib"]
        mib_200mb = 200e6 / 2**20
        out.append(
            Row(
                "operator RSS after " + " / ".join(f"{p['runs']:,}" for p in settled) + " runs",
                "≤ 200 MB, flat across the second 1,000",
                " / ".join(f"{r:.0f} MiB" for r in rss) + (f" (+{growth:.0f} MiB)" if growth is not None else ""),
                bool(rss) and rss[0] <= mib_200mb and (growth is None or growth <= 10),
            )
        )
    mirror = load("mirror")
    for backend in ("postgres", "sqlite"):
        m = level(mirror, 10, backend) if mirror else None
        label = f"mirror lag ({backend}, 10 in flight)"
        if m is None:
            out.append(Row(label, "", "not run", None))
        else:
            out.append(Row(label, "", f"p50 {_s(m['mirror_lag_p50'])}, p95 {_s(m['mirror_lag_p95'])}", None))
    history = load("history")
    if history is None:
        out.append(Row("report over 100k runs", "≤ 300 ms", "not run", None))
    else:
        for result in history["results"]:
            slowest = max(q["median_seconds"] for q in result["queries"].values())
            cli = result.get("cli", {}).get("coordinator report", {}).get("median_seconds")
            cli_text = f"; `coordinator report` process {cli * 1000:.0f} ms" if cli else ""
            out.append(
                Row(
                    f"report over {history['runs']:,} runs ({result['backend']})",
                    "≤ 300 ms",
                    f"slowest report {slowest * 1000:.0f} ms{cli_text}",
                    slowest <= 0.3,
                )
            )
    live = load("dashboard_live")
    if live is None:
        out.append(Row("status change → open run page", "≤ 1 s", "not run", None))
    else:
        shown = live["applied_seconds"]
        out.append(
            Row(
                f"status change → open run page ({shown['n']} changes)",
                "≤ 1 s",
                f"p50 {_s(shown['p50'])}, p95 {_s(shown['p95'])}",
                shown["p95"] <= live["goal_seconds"],
            )
        )
    dashboard = load("dashboard")
    if dashboard is None:
        out.append(Row("dashboard overview (GET /) with 100k runs stored", "≤ 300 ms", "not run", None))
    else:
        for result in dashboard["results"]:
            overview = result["overview"]
            out.append(
                Row(
                    f"dashboard overview (`GET /`) with {result['runs']:,} runs stored ({result['backend']})",
                    "≤ 300 ms",
                    f"median {overview['median_seconds'] * 1000:.0f} ms, p95 {overview['p95_seconds'] * 1000:.0f} ms "
                    f"({dashboard['active_runs']} active runs listed)",
                    overview["p95_seconds"] <= 0.3,
                )
            )
        for result in dashboard["results"]:
            if not result.get("pages"):
                continue
            label, slowest = max(result["pages"].items(), key=lambda item: item[1]["median_seconds"])
            out.append(
                Row(
                    f"dashboard history pages over {result['runs']:,} runs ({result['backend']})",
                    "",
                    f"slowest of {len(result['pages'])} pages ({label}): median "
                    f"{slowest['median_seconds'] * 1000:.0f} ms, p95 {slowest['p95_seconds'] * 1000:.0f} ms",
                    None,
                )
            )
    out += workflow_rows(load("workflow"))
    return out


def workflow_rows(doc: dict[str, Any] | None) -> list[Row]:
    """Issue 21's goals for a workflow of 100 parallel pod-kill nodes (benchmarks/workflow.py)."""
    figure = "workflow of 100 parallel pod-kill nodes"
    if doc is None:
        return [Row(figure, "every node injected within 2 s (p95)", "not run", None)]
    goals, m, rss = doc["goals"], doc["median"], doc["rss"]
    figure = f"workflow of {doc['nodes']} parallel pod-kill nodes"
    after = rss["after_mib"]
    growth = rss["growth_mib"]
    p95s = [r["injection"]["p95"] for r in doc["rounds"]]
    lags = [r["parent_after_last_child_seconds"] for r in doc["rounds"]]
    return [
        Row(
            f"{figure}: parent created → each node's pod deleted",
            f"p95 ≤ {goals['injection_p95_seconds']:g} s",
            f"p50 {_s(m['injection_p50'])}, p95 {_s(m['injection_p95'])}, p99 {_s(m['injection_p99'])} "
            f"(p95 of the {len(p95s)} workflows {min(p95s):.2f} to {max(p95s):.2f} s)",
            m["injection_p95"] <= goals["injection_p95_seconds"],
        ),
        Row(
            f"{figure}: the parent's terminal phase after its last child's",
            f"≤ {goals['parent_after_last_child_seconds']:g} s",
            f"{_s(m['parent_after_last_child_seconds'])} (workflows {min(lags):.2f} to {max(lags):.2f} s)",
            m["parent_after_last_child_seconds"] <= goals["parent_after_last_child_seconds"],
        ),
        Row(
            f"{figure}: operator RSS after workflow " + " / ".join(after),
            f"flat (≤ {goals['rss_growth_mib']:g} MiB growth over the second half)",
            " / ".join(f"{v:.0f} MiB" for v in after.values())
            + (f" ({growth:+.0f} MiB)" if growth is not None else "")
            + f"; {rss['before_mib']:.0f} MiB before",
            growth is not None and growth <= goals["rss_growth_mib"],
        ),
    ]


def markdown(table_rows: list[Row]) -> str:
    verdict: Callable[[Row], str] = lambda r: "" if r.met is None else ("met" if r.met else "**missed**")  # noqa: E731
    lines = ["| figure | goal | measured (median of rounds) | |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.figure} | {r.goal} | {r.measured} | {verdict(r)} |" for r in table_rows]
    machine = next((doc["machine"] for n in ("latency", "selection", "footprint") if (doc := load(n))), None)
    dates = sorted({doc["date"] for n in NAMES if (doc := load(n)) and "date" in doc})
    # Benchmarks may be rerun one by one (run_all.py --only): say which commit each figure comes from.
    by_commit: dict[str, list[str]] = {}
    for n in NAMES:
        if (doc := load(n)) and doc.get("machine", {}).get("commit"):
            by_commit.setdefault(doc["machine"]["commit"], []).append(n)
    commits = (
        f"commit {next(iter(by_commit))}"
        if len(by_commit) == 1
        else "; ".join(f"{', '.join(names)} at commit {commit}" for commit, names in by_commit.items())
    )
    if machine:
        lines.append("")
        lines.append(
            f"Measured {', '.join(dates)} on {machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB; "
            f"Python {machine['python']}, kopf {machine['kopf']}, Kubernetes {machine['kubernetes']}, "
            f"etcd {machine['etcd']}, kwok {machine['kwok']} ({machine['kwok_nodes']} nodes); {commits}."
        )
    return "\n".join(lines)


NAMES = (
    "latency",
    "burst",
    "throughput",
    "selection",
    "footprint",
    "mirror",
    "history",
    "dashboard",
    "dashboard_live",
    "workflow",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"update {README.name} between its markers")
    args = parser.parse_args(argv)
    text = markdown(rows())
    print(text)
    if args.write:
        readme = README.read_text()
        head, _, rest = readme.partition(START)
        _, _, tail = rest.partition(END)
        README.write_text(f"{head}{START}\n{text}\n{END}{tail}")
        print(f"\nupdated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
