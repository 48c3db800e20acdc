"""Benchmark: `coordinator report`'s aggregate queries over a large run history, on SQLite and PostgreSQL.

Bulk-inserts ``--runs`` synthetic finished runs (each with one chaos event and two results, spread over
``--scenarios`` scenarios in 10 namespaces and 120 days) through ``HistoryStore.upsert_records`` - the same write
path the operator uses - then times each report the CLI can ask for (median of ``--repeat`` runs, after one warm-up)
and prints a table; the numbers go to ``benchmarks/results/history.json``.

PostgreSQL: ``--postgres-url`` or, by default, a throw-away PostgreSQL 15 cluster started like the tests do
(coordinator.testing.servers; fsync left on). Not part of the test suite: run it by hand,

    .venv/bin/python benchmarks/history_report.py            # 100k runs, both backends
    .venv/bin/python benchmarks/history_report.py --runs 10000 --backend sqlite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import machine
from sqlalchemy import text

from coordinator.history.records import EventRecord, ResultRecord, RunRecord, ScenarioRecord
from coordinator.history.report import ReportFilters, render_table
from coordinator.history.store import HistoryStore
from coordinator.testing.servers import PostgresServer

REPO = Path(__file__).resolve().parents[1]


def default_output() -> Path:
    return Path(os.environ.get("COORDINATOR_BENCH_RESULTS") or REPO / "benchmarks" / "results") / "history.json"


NOW = datetime(2026, 6, 1, tzinfo=UTC)
PHASES = ["Passed"] * 8 + ["Failed", "TimedOut"]


def synthetic_runs(count: int, scenarios: int, seed: int = 7, now: datetime = NOW) -> Iterator[RunRecord]:
    """``count`` finished runs over the 120 days before ``now``, deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    for i in range(count):
        s = i % scenarios
        namespace = f"team-{s % 10}"
        completed = now - timedelta(seconds=rng.uniform(0, 120 * 86400))
        phase = rng.choice(PHASES)
        recovery = round(rng.lognormvariate(0.5, 0.6), 3) if rng.random() < 0.9 else None
        injected = completed - timedelta(seconds=20)
        target = f"web-{rng.randrange(50)}"
        yield RunRecord(
            uid=str(uuid.UUID(int=rng.getrandbits(128))),
            namespace=namespace,
            name=f"run-{i}",
            scenario=ScenarioRecord(namespace, f"scenario-{s}", "service_restart", None, 1),
            phase=phase,
            completed_at=completed,
            reason="Completed" if phase == "Passed" else "AssertionFailed",
            message="1 step(s) completed" if phase == "Passed" else "assertion fast failed: 12.5s > 10",
            started_at=completed - timedelta(seconds=30),
            duration_seconds=30.0,
            recovery_seconds=recovery,
            resilience_score=rng.randrange(60, 101),
            targets=1,
            status={"phase": phase, "scenario": f"{namespace}/scenario-{s}"},
            events=(
                EventRecord(
                    injection_id=f"0/0/pod/{namespace}/{target}",
                    step=0,
                    step_name="kill",
                    fault="pod-kill",
                    target_kind="Pod",
                    target_namespace=namespace,
                    target_name=target,
                    state="Irreversible",
                    injected_at=injected,
                    recovered_at=injected + timedelta(seconds=recovery) if recovery is not None else None,
                ),
            ),
            results=(
                ResultRecord("assertion", "fast", "recovery_time", phase == "Passed", "<= 10", f"{recovery}s"),
                ResultRecord("probe", "web-ready", "k8s", True, "Passed", "Passed: 100% of 4 sample(s) passed"),
            ),
        )


QUERIES: dict[str, Callable[[int], tuple[ReportFilters, bool]]] = {
    "all runs": lambda s: (ReportFilters(), False),
    "--since 7d": lambda s: (ReportFilters(since=NOW - timedelta(days=7)), False),
    "--since 30d": lambda s: (ReportFilters(since=NOW - timedelta(days=30)), False),
    "--namespace team-3": lambda s: (ReportFilters(namespace="team-3"), False),
    "--scenario team-3/scenario-3": lambda s: (ReportFilters(scenario="team-3/scenario-3"), False),
    "--format junit --since 7d": lambda s: (ReportFilters(since=NOW - timedelta(days=7)), True),
}


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, list[float]]:
    await call()  # warm-up: connection pool, statement caches
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), samples


async def bench_backend(name: str, url: str, runs: int, scenarios: int, repeat: int) -> dict[str, Any]:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    store = HistoryStore(url, instance)
    try:
        await store.upgrade()
        started = time.perf_counter()
        written = await store.upsert_records(synthetic_runs(runs, scenarios))
        insert_seconds = time.perf_counter() - started
        # Planner statistics (and on PostgreSQL the visibility map index-only scans rely on), as autovacuum or
        # SQLite's `PRAGMA optimize` would provide on a live database.
        async with store.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE" if name == "postgresql" else "ANALYZE"))
        result: dict[str, Any] = {
            "backend": name,
            "runs": written,
            "bulk_insert_seconds": round(insert_seconds, 2),
            "runs_per_second": round(written / insert_seconds),
            "queries": {},
        }
        result["cli"] = cli_latency(url, instance, repeat)
        for label, make in QUERIES.items():
            filters, include_runs = make(scenarios)

            async def report(filters: ReportFilters = filters, include_runs: bool = include_runs) -> str:
                return render_table(await store.report(filters, include_runs=include_runs))

            median, samples = await timed(report, repeat)
            result["queries"][label] = {
                "median_seconds": round(median, 4),
                "samples": [round(s, 4) for s in samples],
            }
        return result
    finally:
        await store.close()


CLI_REPORTS: dict[str, list[str]] = {"coordinator report": [], "coordinator report --since 7d": ["--since", "7d"]}


def cli_latency(url: str, instance: str, repeat: int) -> dict[str, Any]:
    """Wall time of the ``coordinator report`` command itself (interpreter start-up and imports included)."""
    env = {**os.environ, "COORDINATOR_DATABASE_URL": url, "COORDINATOR_INSTANCE_NAME": instance}
    env.pop("COORDINATOR_REDIS_URL", None)  # a fresh process: the report's aggregates are computed, not cached
    out: dict[str, Any] = {}
    for label, extra in CLI_REPORTS.items():
        command = [sys.executable, "-m", "coordinator.cli.main", "report", *extra]
        subprocess.run(command, env=env, check=True, capture_output=True)  # warm-up: the OS page cache
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(command, env=env, check=True, capture_output=True)
            samples.append(time.perf_counter() - started)
        out[label] = {"median_seconds": round(statistics.median(samples), 4), "samples": [round(x, 4) for x in samples]}
    return out


def print_table(results: list[dict[str, Any]]) -> None:
    labels = list(QUERIES)
    width = max(len(label) for label in [*labels, *(f"{c} (process)" for c in CLI_REPORTS)]) + 2
    print(f"\n{'report (median of repeats)':<{width}}" + "".join(f"{r['backend']:>14}" for r in results))
    for label in labels:
        cells = "".join(f"{r['queries'][label]['median_seconds'] * 1000:>12.1f}ms" for r in results)
        print(f"{label:<{width}}{cells}")
    for label in CLI_REPORTS:
        cells = "".join(f"{r['cli'][label]['median_seconds'] * 1000:>12.1f}ms" for r in results)
        print(f"{label + ' (process)':<{width}}{cells}")
    inserts = "".join(f"{r['bulk_insert_seconds']:>13.1f}s" for r in results)
    print(f"{'bulk insert of all runs':<{width}}{inserts}")
    rates = "".join(f"{r['runs_per_second']:>10} run/s" for r in results)
    print(f"{'insert rate':<{width}}{rates}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--scenarios", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", help="an existing PostgreSQL (postgresql+asyncpg://...); default: start one")
    parser.add_argument("--output", type=Path, default=None, help="default: benchmarks/results/history.json")
    args = parser.parse_args(argv)
    args.output = args.output or default_output()

    results = []
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="history-bench-")))
        if args.backend in ("sqlite", "both"):
            url = f"sqlite+aiosqlite:///{workdir / 'history.db'}"
            print(f"sqlite: inserting {args.runs} runs ...", flush=True)
            results.append(asyncio.run(bench_backend("sqlite", url, args.runs, args.scenarios, args.repeat)))
        if args.backend in ("postgresql", "both"):
            url = args.postgres_url or stack.enter_context(PostgresServer(durable=True)).url()
            print(f"postgresql: inserting {args.runs} runs ...", flush=True)
            results.append(asyncio.run(bench_backend("postgresql", url, args.runs, args.scenarios, args.repeat)))
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "history_report",
                "date": datetime.now(UTC).strftime("%Y-%m-%d"),
                "machine": machine(),  # cores, versions and the commit, like the other benchmarks
                "runs": args.runs,
                "scenarios": args.scenarios,
                "repeat": args.repeat,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
