"""Benchmark: the dashboard's overview (``GET /``) with 100,000 runs stored, on SQLite and PostgreSQL.

Writes ``--runs`` synthetic finished runs into a history store the way history_report.py does (the operator's
write path, spread over the 120 days before now, so the last 24 h hold about 1/120 of them), creates
``--active`` TestRuns on the benchmark cluster (an operator serves the webhooks but watches no namespace of
theirs, so they stay active), serves the dashboard
application (coordinator.dashboard.app, the admin kubeconfig as the viewer's) on loopback and times ``GET /``
over HTTP: median and p95 of ``--repeat`` requests after a warm-up. The page lists the active runs (one LIST with
the viewer's client) and reads the 24 h figures and the slowest scenarios from the store
(coordinator/dashboard/queries.py). The history page is timed too: its newest page, a page halfway down (keyset
cursor), and filtered pages. The numbers go to ``benchmarks/results/dashboard.json``.

    .venv/bin/python benchmarks/dashboard_overview.py                      # 100k runs, both backends
    .venv/bin/python benchmarks/dashboard_overview.py --runs 10000 --backend sqlite \\
        --cluster-dir /tmp/c --port-offset 3200                            # another local cluster
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from harness import (
    BenchCluster,
    add_cluster_arguments,
    delete_namespace,
    fresh_namespace,
    operator,
    percentile,
    stores,
    use_cluster_arguments,
    write_result,
)
from history_report import synthetic_runs
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from coordinator.adapters.kube import KubeClient, resource_path
from coordinator.dashboard import queries
from coordinator.dashboard.access import KubeconfigAccess
from coordinator.dashboard.app import application
from coordinator.history.models import HistoryTables
from coordinator.history.store import HistoryStore
from coordinator.testing.process import free_port
from coordinator.testing.servers import PostgresServer

GOAL_SECONDS = 0.3


async def seed_history(url: str, instance: str, runs: int, scenarios: int) -> float:
    store = HistoryStore(url, instance)
    try:
        await store.upgrade()
        started = time.perf_counter()
        await store.upsert_records(synthetic_runs(runs, scenarios, now=datetime.now(UTC)))
        seconds = time.perf_counter() - started
        # Planner statistics, as autovacuum or SQLite's `PRAGMA optimize` would provide on a live database.
        async with store.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text("VACUUM ANALYZE" if store.backend == "postgresql" else "ANALYZE"))
        return seconds
    finally:
        await store.close()


async def create_active_runs(client: KubeClient, namespace: str, count: int) -> None:
    await fresh_namespace(client, namespace)
    for i in range(count):
        await client.create(
            resource_path("TestRun", namespace),
            {
                "apiVersion": "chaos.coordinator.dev/v1alpha1",
                "kind": "TestRun",
                "metadata": {"name": f"active-{i}", "namespace": namespace},
                "spec": {"scenarioRef": {"name": "scenario-1"}},
            },
        )


async def middle_cursor(url: str, instance: str, runs: int) -> str:
    """The position of the run halfway down the history (newest first): a deep page for keyset paging."""
    store = HistoryStore(url, instance)
    try:

        async def find(conn: AsyncConnection, t: HistoryTables) -> queries.Cursor:
            c = t.test_runs.c
            row = (
                await conn.execute(
                    select(c.completed_at, c.uid)
                    .order_by(c.completed_at.desc(), c.uid.desc())
                    .offset(runs // 2)
                    .limit(1)
                )
            ).one()
            return queries.Cursor(queries.utc(row.completed_at), row.uid)

        return (await store.read(find)).encode()
    finally:
        await store.close()


def pages_to_time(cursor: str) -> dict[str, tuple[str, str]]:
    """label -> (path, a marker the page must hold)."""
    return {
        "overview": ("/", 'id="day-runs"'),
        "history, newest page": ("/history", 'id="page-older"'),
        "history, a page halfway down (keyset)": (f"/history?after={cursor}", 'id="page-older"'),
        "history, namespace filter": ("/history?namespace=team-3", 'id="page-older"'),
        "history, phase filter": ("/history?phase=TimedOut", 'id="page-older"'),
        "history, scenario and 30 days": (
            f"/history?scenario=team-3/scenario-3&from={(datetime.now(UTC) - timedelta(days=30)).date()}",
            'data-uid="',
        ),
    }


async def time_pages(url: str, instance: str, kubeconfig: Path, repeat: int, cursor: str) -> dict[str, Any]:
    """Median and p95 of ``repeat`` requests for each page, after one warm-up request each."""
    access = await KubeconfigAccess.connect(str(kubeconfig))
    app = application(access, HistoryStore(url, instance))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    timings: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession() as session:

            async def get(path: str) -> str:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    if response.status != 200:
                        raise AssertionError(f"GET {path}: {response.status}")
                    return await response.text()

            for label, (path, marker) in pages_to_time(cursor).items():
                if marker not in await get(path):  # warm-up: the schema check, connection pools, templates
                    raise AssertionError(f"GET {path} lacks {marker}")
                samples = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    await get(path)
                    samples.append(time.perf_counter() - started)
                timings[label] = {
                    "path": path,
                    "median_seconds": round(statistics.median(samples), 4),
                    "p95_seconds": round(percentile(samples, 0.95), 4),
                    "samples": [round(x, 4) for x in samples],
                }
    finally:
        await runner.cleanup()
    return timings


async def bench_backend(name: str, url: str, args: argparse.Namespace, kubeconfig: Path) -> dict[str, Any]:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    print(f"{name}: writing {args.runs} runs ...", flush=True)
    insert_seconds = await seed_history(url, instance, args.runs, args.scenarios)
    print(f"{name}: timing the overview and history pages ({args.repeat} requests each) ...", flush=True)
    cursor = await middle_cursor(url, instance, args.runs)
    timings = await time_pages(url, instance, kubeconfig, args.repeat, cursor)
    return {
        "backend": name,
        "runs": args.runs,
        "bulk_insert_seconds": round(insert_seconds, 2),
        "overview": timings.pop("overview"),
        "pages": timings,
    }


async def with_cluster(args: argparse.Namespace, cluster: BenchCluster, urls: dict[str, str]) -> list[dict[str, Any]]:
    client = await KubeClient.connect(str(cluster.kubeconfig))
    namespace = f"bench-dashboard-{uuid.uuid4().hex[:4]}"
    try:
        await create_active_runs(client, namespace, args.active)
        return [await bench_backend(name, url, args, cluster.kubeconfig) for name, url in urls.items()]
    finally:
        await delete_namespace(client, namespace, wait=False)
        await client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--scenarios", type=int, default=50)
    parser.add_argument("--active", type=int, default=20, help="active TestRuns the overview lists")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", help="an existing PostgreSQL (postgresql+asyncpg://...); default: start one")
    parser.add_argument("--keep-cluster", action="store_true")
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    use_cluster_arguments(args)

    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dashboard-bench-")))
        urls: dict[str, str] = {}
        if args.backend in ("sqlite", "both"):
            urls["sqlite"] = f"sqlite+aiosqlite:///{workdir / 'history.db'}"
        if args.backend in ("postgresql", "both"):
            urls["postgresql"] = args.postgres_url or stack.enter_context(PostgresServer(durable=True)).url()
        cluster = stack.enter_context(BenchCluster(keep=args.keep_cluster))
        # An operator serves the admission webhooks that an earlier one may have registered (they fail closed),
        # watching a pattern no namespace matches: the active TestRuns stay active, as runs in flight would.
        operator_store = stack.enter_context(stores("sqlite"))
        stack.enter_context(operator(cluster, ["bench-dashboard-none-*"], operator_store, "dashboard"))
        results = asyncio.run(with_cluster(args, cluster, urls))

    print(f"\n{'page (median / p95)':<34}" + "".join(f"{r['backend']:>22}" for r in results))
    for label in ["overview", *results[0]["pages"]]:
        cells = [r["overview"] if label == "overview" else r["pages"][label] for r in results]
        print(
            f"{label:<34}"
            + "".join(f"{c['median_seconds'] * 1000:>10.1f}ms /{c['p95_seconds'] * 1000:>7.1f}ms" for c in cells)
        )
    path = write_result(
        "dashboard",
        {
            "runs": args.runs,
            "scenarios": args.scenarios,
            "active_runs": args.active,
            "cluster": args.cluster_dir or "the benchmark cluster",
            "repeat": args.repeat,
            "goal_seconds": GOAL_SECONDS,
            "results": results,
        },
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
