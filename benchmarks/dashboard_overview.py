"""Benchmark: the dashboard's overview (``GET /``) with 100,000 runs stored, on SQLite and PostgreSQL.

Writes ``--runs`` synthetic finished runs into a history store the way history_report.py does (the operator's
write path, spread over the 120 days before now, so the last 24 h hold about 1/120 of them), creates
``--active`` TestRuns on the benchmark cluster (no operator runs, so they stay active), serves the dashboard
application (coordinator.dashboard.app, the admin kubeconfig as the viewer's) on loopback and times ``GET /``
over HTTP: median and p95 of ``--repeat`` requests after a warm-up. The page lists the active runs (one LIST with
the viewer's client) and reads the 24 h figures and the slowest scenarios from the store
(coordinator/dashboard/queries.py). The numbers go to ``benchmarks/results/dashboard.json``.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from harness import (
    BenchCluster,
    add_cluster_arguments,
    delete_namespace,
    fresh_namespace,
    percentile,
    use_cluster_arguments,
    write_result,
)
from history_report import synthetic_runs
from sqlalchemy import text

from coordinator.adapters.kube import KubeClient, resource_path
from coordinator.dashboard.access import KubeconfigAccess
from coordinator.dashboard.app import application
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


async def time_overview(url: str, instance: str, kubeconfig: Path, repeat: int) -> dict[str, Any]:
    access = await KubeconfigAccess.connect(str(kubeconfig))
    app = application(access, HistoryStore(url, instance))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    samples: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def get() -> str:
                async with session.get(f"http://127.0.0.1:{port}/") as response:
                    assert response.status == 200, response.status
                    return await response.text()

            page = await get()  # warm-up: the schema check, connection pools, templates
            if 'id="day-runs"' not in page or 'data-scenario="' not in page:
                raise AssertionError("the overview lacks its history figures")
            for _ in range(repeat):
                started = time.perf_counter()
                await get()
                samples.append(time.perf_counter() - started)
    finally:
        await runner.cleanup()
    return {
        "median_seconds": round(statistics.median(samples), 4),
        "p95_seconds": round(percentile(samples, 0.95), 4),
        "samples": [round(s, 4) for s in samples],
    }


async def bench_backend(name: str, url: str, args: argparse.Namespace, kubeconfig: Path) -> dict[str, Any]:
    instance = f"bench-{uuid.uuid4().hex[:6]}"
    print(f"{name}: writing {args.runs} runs ...", flush=True)
    insert_seconds = await seed_history(url, instance, args.runs, args.scenarios)
    print(f"{name}: timing GET / ({args.repeat} requests) ...", flush=True)
    timing = await time_overview(url, instance, kubeconfig, args.repeat)
    return {"backend": name, "runs": args.runs, "bulk_insert_seconds": round(insert_seconds, 2), "overview": timing}


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
        results = asyncio.run(with_cluster(args, cluster, urls))

    print(f"\n{'GET / (overview)':<24}{'median':>10}{'p95':>10}")
    for result in results:
        o = result["overview"]
        print(f"{result['backend']:<24}{o['median_seconds'] * 1000:>8.1f}ms{o['p95_seconds'] * 1000:>8.1f}ms")
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
