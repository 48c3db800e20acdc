"""Every benchmark, one after the other, on one benchmark cluster; then the summary table (``make bench``).

.venv/bin/python benchmarks/run_all.py            # everything, as benchmarks/README.md reports it
.venv/bin/python benchmarks/run_all.py --quick    # fewer runs and rounds: a smoke run of the whole chain
.venv/bin/python benchmarks/run_all.py --only throughput,footprint   # some of them; the table keeps the others
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import dashboard_live
import dashboard_overview
import history_report
import runs
import selection
import summary
import workflow
from harness import BenchCluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all of them)")
    args = parser.parse_args(argv)
    if args.quick:
        # A smoke run's figures must not replace the real ones (nor their table in the README).
        os.environ.setdefault(
            "COORDINATOR_BENCH_RESULTS", str(Path(__file__).resolve().parents[1] / ".bench-logs" / "quick")
        )
    quick_runs = ["--repeat", "1", "--runs", "100"] if args.quick else []
    steps = [
        ("history", lambda: history_report.main(["--runs", "10000"] if args.quick else [])),
        (
            "dashboard",
            lambda: dashboard_overview.main(
                ["--keep-cluster", *(["--runs", "10000", "--repeat", "5"] if args.quick else [])]
            ),
        ),
        ("latency", lambda: runs.main(["latency", "--keep-cluster", *quick_runs])),
        ("burst", lambda: runs.main(["burst", "--keep-cluster", *(["--repeat", "1"] if args.quick else [])])),
        (
            "throughput",
            lambda: runs.main(
                [
                    "throughput",
                    "--keep-cluster",
                    "--profile",
                    *(["--repeat", "1"] if args.quick else []),
                ]
            ),
        ),
        ("mirror", lambda: runs.main(["mirror", "--keep-cluster", *quick_runs])),
        (
            "footprint",
            lambda: runs.main(
                ["footprint", "--keep-cluster", *(["--footprint-runs", "300", "--idle", "10"] if args.quick else [])]
            ),
        ),
        (
            "selection",
            lambda: selection.main(
                ["--keep-cluster", "--profile", *(["--pods", "2000", "--repeat", "1"] if args.quick else [])]
            ),
        ),
        (
            "dashboard_live",
            lambda: dashboard_live.main(["--keep-cluster", *(["--changes", "20"] if args.quick else [])]),
        ),
        (
            "workflow",
            lambda: workflow.main(["--keep-cluster", *(["--workflows", "3", "--idle", "2"] if args.quick else [])]),
        ),
    ]
    only = {name for name in args.only.split(",") if name}
    unknown = only - {name for name, _ in steps}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = time.monotonic()
    with BenchCluster(keep=args.keep_cluster):
        for name, step in steps:
            if only and name not in only:
                continue
            print(f"\n=== {name} ===", flush=True)
            if step() != 0:
                print(f"benchmark {name} failed", file=sys.stderr)
                return 1
    print(f"\n=== summary ({(time.monotonic() - started) / 60:.0f} min) ===")
    return summary.main([] if args.quick else ["--write"])


if __name__ == "__main__":
    raise SystemExit(main())
