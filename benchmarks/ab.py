"""A/B: the operator of an older commit against this tree's, side by side on the same benchmark cluster.

Rounds alternate (A B, then B A, ...), so drift in the machine's load lands on both sides alike. Each side is a
whole ``runs.py <benchmark> --repeat 1`` with the operator process importing that side's code: A's tree is a
detached git worktree of the commit, put first on the operator's PYTHONPATH (``--set``); the benchmark client,
the cluster and the CRDs are this tree's. The table gives each side's median over its rounds and B/A.

    .venv/bin/python benchmarks/ab.py 8edaaef --only latency,throughput --rounds 2
    .venv/bin/python benchmarks/ab.py 8edaaef --only throughput --rounds 3 --levels 100   # runs.py options pass on

Writes ``benchmarks/results/ab-<benchmark>.json`` (every round of both sides) and prints the comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / ".bench-logs" / "ab"
# Per benchmark, the figures compared, from each level's "median" block (lower is better unless noted).
FIGURES = {
    "latency": ("latency_p50", "latency_p95", "latency_p99", "api_requests_per_run"),
    "burst": ("latency_p50", "latency_p95", "latency_p99"),
    "throughput": ("runs_per_second", "api_requests_per_run"),
}
HIGHER_IS_BETTER = {"runs_per_second"}


def worktree(ref: str) -> tuple[Path, str]:
    """A detached worktree of ``ref`` (made once per commit) and the full commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = WORK / f"tree-{commit[:12]}"
    if not (path / "operator" / "coordinator").is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True)
    return path, commit


def run_side(benchmark: str, operator_path: Path | None, extra: list[str]) -> dict[str, Any]:
    """One ``runs.py`` round; returns its result document."""
    command = [sys.executable, str(REPO / "benchmarks" / "runs.py"), benchmark, "--repeat", "1", "--keep-cluster"]
    if operator_path is not None:
        command += ["--set", f"PYTHONPATH={operator_path}"]
    subprocess.run(command + extra, check=True, cwd=REPO)
    document: dict[str, Any] = json.loads((RESULTS / f"{benchmark}.json").read_text())
    return document


def figures(document: Mapping[str, Any], benchmark: str) -> dict[str, float]:
    """``<level>/<figure>`` -> value, from one round's document."""
    out: dict[str, float] = {}
    for level in document["levels"]:
        for name in FIGURES[benchmark]:
            value = level["median"].get(name)
            if value is not None:
                out[f"{level['concurrency']} in flight / {name}"] = float(value)
    return out


def compare(a: list[dict[str, float]], b: list[dict[str, float]]) -> list[dict[str, Any]]:
    rows = []
    for key in a[0]:
        a_median = median(r[key] for r in a)
        b_median = median(r[key] for r in b)
        ratio = b_median / a_median if a_median else None
        rows.append({"figure": key, "a": a_median, "b": b_median, "b_over_a": ratio})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the A side: a commit (the B side is this tree)")
    parser.add_argument("--only", default="latency,throughput", help="benchmarks, comma-separated")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side")
    # Anything else goes on to runs.py (e.g. --levels 100).
    args, extra = parser.parse_known_args(argv)
    args.extra = [a for a in extra if a != "--"]
    tree, commit = worktree(args.ref)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()
    status = ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"]
    dirty = bool(subprocess.run(status, check=True, capture_output=True, text=True).stdout.strip())
    for benchmark in [b for b in args.only.split(",") if b]:
        if benchmark not in FIGURES:
            parser.error(f"unknown benchmark {benchmark!r}: one of {', '.join(FIGURES)}")
        kept = RESULTS / f"{benchmark}.json"
        saved = kept.read_text() if kept.exists() else None  # the table's own figures are left as they were
        sides: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
        try:
            for round_ in range(args.rounds):
                order = ("a", "b") if round_ % 2 == 0 else ("b", "a")
                for side in order:
                    print(f"\n=== {benchmark}: round {round_ + 1}, side {side.upper()} ===", flush=True)
                    sides[side].append(run_side(benchmark, tree / "operator" if side == "a" else None, args.extra))
        finally:
            if saved is not None:
                kept.write_text(saved)
        rows = compare([figures(d, benchmark) for d in sides["a"]], [figures(d, benchmark) for d in sides["b"]])
        document = {
            "benchmark": f"ab-{benchmark}",
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "a": {"commit": commit},
            "b": {"commit": head, "dirty": dirty},
            "rounds_per_side": args.rounds,
            "comparison": rows,
            "rounds": sides,
        }
        out = RESULTS / f"ab-{benchmark}.json"
        out.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\n{benchmark}: A = {commit[:10]}, B = {head[:10]} (this tree); medians of {args.rounds} round(s)")
        print(f"{'figure':<45} {'A':>10} {'B':>10} {'B/A':>7}")
        for row in rows:
            ratio = f"{row['b_over_a']:.2f}" if row["b_over_a"] is not None else "-"
            better = "higher is better" if row["figure"].rsplit("/ ", 1)[-1] in HIGHER_IS_BETTER else ""
            print(f"{row['figure']:<45} {row['a']:>10.4g} {row['b']:>10.4g} {ratio:>7} {better}")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
