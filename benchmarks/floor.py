"""The physical floor of the burst: the API requests a pod-kill run makes before its first injection, sent by a
plain client with no operator, for N runs at one instant.

A run's path from its creation to its first injection is a chain of API requests (``PRE_INJECTION``; each waits
for the one before it). With no operator in the way (no kopf, no queues, no Python work between the requests)
what is left is the API server's own serving rate on this machine for that mix:

    floor = the requests of N runs / (requests the API server served per second)

(N x len(PRE_INJECTION), less the scenario and namespace GETs that runs asking at the same time share.)

which is when the last of N runs created together could have its first injection, whatever the operator did.
``runs.py burst`` measures it after every round of its own (the same cluster, a fresh namespace, the same 100
slot pods), so the operator's figures and the floor come from the same minutes of a shared machine.

    .venv/bin/python benchmarks/floor.py --keep-cluster   # on its own: rounds of 100 plain-client runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from harness import (
    BenchCluster,
    KubeClient,
    connect,
    cpu_by_component,
    cpu_delta,
    create_pods,
    delete_namespace,
    fresh_namespace,
    median,
    pod_manifest,
    resource_path,
    round_namespace,
    summary,
)

from coordinator.adapters.kube import JSON_PATCH
from coordinator.adapters.sharedreads import shared_get
from coordinator.api.models import FINALIZER
from coordinator.engine.events import post_event

# What one pod-kill run costs the API server from its creation to its first injection, in order: the user's
# create, kopf's finalizer patch, then the run's daemon (the stored TestRun, the scenario, the Started Event, the
# target namespace's protection label, the selection LIST, the plan written to status, the pod deletion). The
# scenario and namespace GETs are shared by the runs asking for them at the same time, as the operator shares
# them (adapters/sharedreads.py): a burst sends fewer of them than one per run, and the round counts what it sent.
PRE_INJECTION = (
    "POST testruns",
    "PATCH testruns (finalizer)",
    "GET testruns",
    "GET chaosscenarios",
    "POST events",
    "GET namespaces",
    "LIST pods",
    "PATCH testruns/status",
    "DELETE pods",
)


def _plan_status(namespace: str, scenario: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """A status of the size and shape of a run's plan write (the step's ledger, snapshot, conditions)."""
    meta = pod["metadata"]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "status": {
            "phase": "Running",
            "reason": "Started",
            "message": f"running scenario {namespace}/kill-slot",
            "scenario": f"{namespace}/kill-slot",
            "startedAt": now,
            "currentStep": 0,
            "targets": 1,
            "step": "1/1 kill",
            "scenarioSnapshot": json.dumps(scenario["spec"]),
            "steps": [{"name": "kill", "outcome": "Pending", "targetCount": 1, "message": "1 change(s) planned"}],
            "injections": [
                {
                    "id": f"0.0/pod-kill/Pod/{namespace}/{meta['name']}",
                    "step": 0,
                    "faultIndex": 0,
                    "fault": "pod-kill",
                    "state": "Recorded",
                    "target": {"kind": "Pod", "namespace": namespace, "name": meta["name"], "uid": meta["uid"]},
                }
            ],
            "conditions": [
                {"type": t, "status": "True", "reason": "Started", "message": "", "lastTransitionTime": now}
                for t in ("Running", "TargetsSelected", "FaultsReverted")
            ],
        }
    }


async def one_run(client: KubeClient, namespace: str, scenario: dict[str, Any], slot: int) -> float:
    """The requests of ``PRE_INJECTION`` for one run, one after the other; seconds from the first sent to the
    last answered."""
    started = time.monotonic()
    runs = resource_path("TestRun", namespace)
    run = await client.create(
        runs,
        {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "TestRun",
            "metadata": {"name": f"floor-{slot}", "labels": {"bench-floor": "true"}},
            "spec": {"scenarioRef": {"name": "kill-slot"}, "parameters": {"slot": str(slot)}},
        },
    )
    path = resource_path("TestRun", namespace, run["metadata"]["name"])
    await client.patch(
        path,
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": run["metadata"]["resourceVersion"]},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ],
        content_type=JSON_PATCH,
    )
    run = await client.get(path)
    await shared_get(client, resource_path("ChaosScenario", namespace, "kill-slot"))
    await post_event(client, run, "Started", f"running scenario {namespace}/kill-slot")
    await shared_get(client, resource_path("Namespace", name=namespace))
    listed = await client.list_summaries(
        resource_path("Pod", namespace),
        label_selector=f"bench-slot={slot}",
        field_selector="status.phase=Running",
        metadata_only=True,
    )
    pod = listed[0].object()
    await client.patch(path + "/status", _plan_status(namespace, scenario, pod))
    await client.delete(
        resource_path("Pod", namespace, pod["metadata"]["name"]),
        {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": pod["metadata"]["uid"]},
        },
    )
    return time.monotonic() - started


async def floor_round(cluster: BenchCluster, scenario: dict[str, Any], runs: int, tag: str) -> dict[str, Any]:
    """``runs`` plain-client runs started at one instant in a fresh namespace, each with a Running slot pod."""
    client = await connect(cluster)
    namespace = round_namespace(f"bench-floor-{tag}")
    try:
        await fresh_namespace(client, namespace)
        await client.create(resource_path("ChaosScenario", namespace), scenario)
        await create_pods(
            client, namespace, [pod_manifest(f"slot-{i}-", {"bench-slot": str(i)}, i) for i in range(runs)]
        )
        await _all_running(client, namespace, runs)
        cpu_before = cpu_by_component()
        sent_before = client.requests
        started = time.monotonic()
        seconds = await asyncio.gather(*(one_run(client, namespace, scenario, i) for i in range(runs)))
        wall = time.monotonic() - started
        cpu = cpu_delta(cpu_before, cpu_by_component())
        requests = client.requests - sent_before
        rate = requests / wall
        server_ms = 1000 * (cpu.get("kube-apiserver", 0.0) + cpu.get("etcd", 0.0)) / requests
        return {
            "runs": runs,
            "requests_per_run": round(requests / runs, 2),
            "requests_per_run_unshared": len(PRE_INJECTION),
            "requests": requests,
            "wall_seconds": round(wall, 3),
            "served_per_second": round(rate, 1),
            "floor_seconds": round(requests / rate, 3),
            "plain_client_latency": summary(list(seconds)),
            # The API server's (and etcd's) own CPU per request of the mix: what the floor would be if they had
            # every core of the machine to themselves, and nothing else ran.
            "server_cpu_ms_per_request": round(server_ms, 2),
            "server_cpu_floor_seconds": round(requests * server_ms / 1000 / (os.cpu_count() or 1), 3),
            "cpu_seconds_by_component": cpu,
        }
    finally:
        # The TestRuns keep a finalizer no operator will remove: take it off, or the namespace never goes.
        for obj in await client.list(resource_path("TestRun", namespace)):
            await client.patch(
                resource_path("TestRun", namespace, obj["metadata"]["name"]), {"metadata": {"finalizers": None}}
            )
        await delete_namespace(client, namespace)
        await client.close()


async def _all_running(client: KubeClient, namespace: str, count: int, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while True:
        pods = await client.list(resource_path("Pod", namespace), field_selector="status.phase=Running")
        if len(pods) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} slot pods Running in {namespace}: {len(pods)} after {within:.0f}s")
        await asyncio.sleep(0.2)


def floor_median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds' medians, and what the floor is made of."""
    return {
        "requests_per_run": median([r["requests_per_run"] for r in rounds]),
        "requests": list(PRE_INJECTION),
        "runs": rounds[0]["runs"],
        "served_per_second": median([r["served_per_second"] for r in rounds]),
        "floor_seconds": median([r["floor_seconds"] for r in rounds]),
        "plain_client_p95": median([r["plain_client_latency"]["p95"] for r in rounds]),
        "server_cpu_ms_per_request": median([r["server_cpu_ms_per_request"] for r in rounds]),
        "server_cpu_floor_seconds": median([r["server_cpu_floor_seconds"] for r in rounds]),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> int:
    from runs import SCENARIO

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-cluster", action="store_true")
    args = parser.parse_args(argv)

    async def rounds() -> list[dict[str, Any]]:
        out = []
        with BenchCluster(keep=args.keep_cluster) as cluster:
            for rep in range(args.repeat):
                result = await floor_round(cluster, SCENARIO, args.runs, f"r{rep}-{time.time_ns() % 10**6}")
                print(
                    f"floor round {rep + 1}/{args.repeat}: {result['served_per_second']} requests/s, "
                    f"floor {result['floor_seconds']} s, plain client p95 {result['plain_client_latency']['p95']} s",
                    flush=True,
                )
                out.append(result)
        return out

    result = floor_median(asyncio.run(rounds()))
    print(json.dumps({k: v for k, v in result.items() if k != "rounds"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
