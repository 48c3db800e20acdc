"""Benchmark: what the admission webhooks (issue 20) cost a TestRun's creation, A/B side by side.

One operator, its webhooks registered, and a ChaosScenario (pod-kill on pods of a label, its namespace opted in).
Rounds alternate between the two sides on the same cluster and the same operator:

* **A, without webhooks**: the operator's two webhook configurations are deleted for the round;
* **B, with webhooks**: they are back (as the operator wrote them): each create is mutated (requester recorded) and
  validated (the scenario read and rendered, one SubjectAccessReview per right it needs).

Each round creates ``--creates`` TestRuns one after the other (the time of each create request: p50, p95), then
the same number ``--parallel`` at a time (the wall time: creates per second). The operator watches no namespace the
benchmark creates in, so no run executes: only admission is measured.

    .venv/bin/python benchmarks/admission.py --cluster-dir /tmp/c --port-offset 3000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import harness
from harness import (
    OPERATOR_SETTINGS,
    BenchCluster,
    KubeClient,
    connect,
    delete_namespace,
    fresh_namespace,
    median,
    operator,
    percentile,
    resource_path,
    stores,
    table,
    write_result,
)

from coordinator.domain.admission import configuration_name

NAMESPACE = "bench-admission"
KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
SCENARIO = {
    "apiVersion": "chaos.coordinator.dev/v1alpha1",
    "kind": "ChaosScenario",
    "metadata": {"name": "kill-one"},
    "spec": {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "steps": [{"name": "kill", "duration": "1s", "faults": [{"type": "pod-kill"}]}],
    },
}


def run_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "metadata": {"name": name},
        "spec": {"scenarioRef": {"name": "kill-one"}, "dryRun": True},
    }


async def webhooks_off(client: KubeClient, name: str) -> list[tuple[str, dict[str, Any]]]:
    """Delete the configurations; what they were, to put back."""
    saved = []
    for kind in KINDS:
        obj = await client.get(resource_path(kind, name=name))
        for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            obj["metadata"].pop(key, None)
        saved.append((kind, obj))
        await client.delete(resource_path(kind, name=name))
    return saved


async def webhooks_on(client: KubeClient, saved: list[tuple[str, dict[str, Any]]]) -> None:
    for kind, obj in saved:
        await client.create(resource_path(kind), obj)
    await asyncio.sleep(2)  # the API server picks configurations up from its informer


async def one_round(client: KubeClient, side: str, index: int, creates: int, parallel: int) -> dict[str, Any]:
    path = resource_path("TestRun", NAMESPACE)
    latencies = []
    for n in range(creates):
        started = time.perf_counter()
        await client.create(path, run_body(f"{side.lower()}{index}-seq-{n}"))
        latencies.append(time.perf_counter() - started)
    gate = asyncio.Semaphore(parallel)

    async def create(n: int) -> None:
        async with gate:
            await client.create(path, run_body(f"{side.lower()}{index}-par-{n}"))

    started = time.perf_counter()
    await asyncio.gather(*(create(n) for n in range(creates)))
    wall = time.perf_counter() - started
    for item in await client.list(path):
        await client.delete(resource_path("TestRun", NAMESPACE, item["metadata"]["name"]))
    return {
        "side": side,
        "p50_seconds": round(percentile(latencies, 0.5), 4),
        "p95_seconds": round(percentile(latencies, 0.95), 4),
        "parallel_creates_per_second": round(creates / wall, 1),
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with BenchCluster(keep=True) as cluster:
        client = await connect(cluster)
        try:
            await fresh_namespace(client, NAMESPACE)
            name = configuration_name(OPERATOR_SETTINGS.get("COORDINATOR_NAMESPACE", "test-coordinator"))
            # Watching a pattern no namespace matches: the webhooks cover every namespace, no run executes.
            with stores("sqlite") as store, operator(cluster, ["bench-admission-none-*"], store, "admission"):
                # After the operator: a configuration an earlier operator left fails closed until one serves it.
                await client.create(resource_path("ChaosScenario", NAMESPACE), SCENARIO)
                rounds = []
                for index in range(args.rounds):
                    for side in ("A", "B") if index % 2 == 0 else ("B", "A"):
                        saved = await webhooks_off(client, name) if side == "A" else None
                        try:
                            result = await one_round(client, side, index, args.creates, args.parallel)
                        finally:
                            if saved is not None:
                                await webhooks_on(client, saved)
                        print(f"round {index + 1} {side}: {result}", flush=True)
                        rounds.append(result)
            await delete_namespace(client, NAMESPACE, wait=False)
        finally:
            await client.close()
    figures = {}
    for key in ("p50_seconds", "p95_seconds", "parallel_creates_per_second"):
        a = median([r[key] for r in rounds if r["side"] == "A"])
        b = median([r[key] for r in rounds if r["side"] == "B"])
        figures[key] = {"A": a, "B": b, "B/A": round(b / a, 2)}
    print()
    print(table(["figure", "A (no webhooks)", "B (webhooks)", "B/A"], [[k, *v.values()] for k, v in figures.items()]))
    return {"creates": args.creates, "parallel": args.parallel, "rounds": rounds, "figures": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=100, help="TestRuns per round and side, each way")
    parser.add_argument("--parallel", type=int, default=20, help="creates in flight in the parallel part")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both sides, alternating")
    harness.add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    harness.use_cluster_arguments(args)
    payload = asyncio.run(bench(args))
    print(f"\nwrote {write_result('admission', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
