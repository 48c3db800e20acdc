"""Benchmark: the emergency stop. N TestRuns hold a pod-failure each; the pause label goes on; how long until the
last change is reverted?

Each round: a fresh namespace with N pods (one per run, label ``bench-slot=<n>``, bound to kwok nodes), N TestRuns
of the scenario ``fail-slot`` (parameter ``slot``; the step holds 10 minutes), all of them holding their fault. Then
the benchmark patches ``chaos.coordinator.dev/paused=true`` onto the namespace (``--scope namespace``) or onto the
operator's own namespace (``--scope cluster``) and times, on this process's clock from the PATCH request:

* **last revert**: the pod watch shows the last pod back to its own image, without our record annotations;
* **last run ended**: the run watch shows the last TestRun Cancelled (reason Paused).

The goal (issue 20) is the last revert within 5 s at 200 runs. The table shows the median over the rounds.

    .venv/bin/python benchmarks/pause.py                      # 200 runs, 3 rounds, on the benchmark cluster
    .venv/bin/python benchmarks/pause.py --cluster-dir /tmp/c --port-offset 3200   # on another local cluster
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from typing import Any

import harness
from harness import (
    OPERATOR_SETTINGS,
    BenchCluster,
    KubeClient,
    Profiler,
    connect,
    create_pods,
    delete_namespace,
    eventually,
    fresh_namespace,
    median,
    operator,
    resource_path,
    stores,
    table,
    watch_events,
    write_result,
)

from coordinator.api.models import PAUSED_LABEL, REQUESTED_BY_ANNOTATION, Requester

NAMESPACE_PREFIX = "bench-pause"
SYSTEM = f"{NAMESPACE_PREFIX}-system"  # the operator's namespace (COORDINATOR_NAMESPACE): the cluster-wide pause
IMAGE = "registry.invalid/app:1"
GOAL_SECONDS = 5.0
ADMIN = Requester(username="kubernetes-admin", groups=["system:masters", "system:authenticated"]).to_annotation()
SCENARIO = {
    "apiVersion": "chaos.coordinator.dev/v1alpha1",
    "kind": "ChaosScenario",
    "metadata": {"name": "fail-slot"},
    "spec": {
        "description": "Break the pod of one benchmark slot until the pause.",
        "parameters": [{"name": "slot", "type": "string", "description": "The slot whose pod is broken."}],
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"bench-slot": "{{ params.slot }}"}}},
        "mode": "one",
        "steps": [{"name": "break", "duration": "10m", "faults": [{"type": "pod-failure"}]}],
    },
}


def broken(pod: dict[str, Any]) -> bool:
    """Whether a pod still holds a change of ours: the pod-failure image, or a record annotation."""
    images = [c.get("image") for c in pod["spec"]["containers"]]
    records = [k for k in pod["metadata"].get("annotations") or {} if k.startswith("chaos.coordinator.dev/")]
    return bool(records) or any(image != IMAGE for image in images)


def held(run: dict[str, Any]) -> bool:
    status = run.get("status") or {}
    steps = status.get("steps") or []
    return status.get("phase") == "Running" and bool(steps) and steps[0].get("outcome") == "Injected"


async def nodes(client: KubeClient) -> list[str]:
    return sorted(n["metadata"]["name"] for n in await client.list(resource_path("Node")))


async def one_round(client: KubeClient, runs: int, scope: str, index: int, profile_pid: int | None) -> dict[str, Any]:
    namespace = f"{NAMESPACE_PREFIX}-{index}"
    await fresh_namespace(client, namespace)
    names = await nodes(client)
    pods = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"slot-{slot}", "labels": {"bench-slot": str(slot)}},
            "spec": {
                "nodeName": names[slot % len(names)],
                "containers": [{"name": "app", "image": IMAGE}],
                "terminationGracePeriodSeconds": 0,
            },
        }
        for slot in range(runs)
    ]
    await create_pods(client, namespace, pods)
    await client.create(resource_path("ChaosScenario", namespace), SCENARIO)

    pods_broken: dict[str, bool] = {}
    run_phase: dict[str, str] = {}
    runs_held: set[str] = set()
    last_revert: list[float] = []
    last_end: list[float] = []
    paused_at: list[float] = []

    async def watch_pods() -> None:
        async for event in watch_events(client, resource_path("Pod", namespace)):
            pod = event["object"]
            was = pods_broken.get(pod["metadata"]["name"], False)
            now = broken(pod) and event["type"] != "DELETED"
            pods_broken[pod["metadata"]["name"]] = now
            if paused_at and was and not now and not any(pods_broken.values()):
                last_revert.append(time.monotonic())

    async def watch_runs() -> None:
        async for event in watch_events(client, resource_path("TestRun", namespace)):
            run = event["object"]
            name = run["metadata"]["name"]
            status = run.get("status") or {}
            run_phase[name] = str(status.get("phase"))
            if held(run):
                runs_held.add(name)
            ended = len(run_phase) == runs and all(p == "Cancelled" for p in run_phase.values())
            if paused_at and ended and not last_end:
                last_end.append(time.monotonic())

    watchers = [asyncio.create_task(watch_pods()), asyncio.create_task(watch_runs())]
    try:
        started = time.monotonic()
        gate = asyncio.Semaphore(32)

        async def create_run(slot: int) -> None:
            body = {
                "apiVersion": "chaos.coordinator.dev/v1alpha1",
                "kind": "TestRun",
                "metadata": {"name": f"run-{slot}", "annotations": {REQUESTED_BY_ANNOTATION: ADMIN}},
                "spec": {"scenarioRef": {"name": "fail-slot"}, "parameters": {"slot": str(slot)}},
            }
            async with gate:
                await client.create(resource_path("TestRun", namespace), body)

        await asyncio.gather(*(create_run(slot) for slot in range(runs)))

        async def all_held() -> bool:
            ended = [n for n, p in run_phase.items() if p in ("Passed", "Failed", "Error", "Cancelled", "TimedOut")]
            if ended:
                raise RuntimeError(f"runs ended before the pause: {ended[:5]}")
            return len(runs_held) == runs and sum(pods_broken.values()) == runs

        await eventually(all_held, within=600, what=f"{runs} runs holding their fault", interval=0.1)
        ramp = time.monotonic() - started
        await asyncio.sleep(2)  # let the operator settle into its holding loop
        target = namespace if scope == "namespace" else SYSTEM
        # Only the pause itself is profiled: from the label to the last run ended.
        profiler = Profiler(profile_pid, f"pause-{index}") if profile_pid else None
        load = os.getloadavg()[0]
        paused_at.append(time.monotonic())
        await client.patch(resource_path("Namespace", name=target), {"metadata": {"labels": {PAUSED_LABEL: "true"}}})

        async def done() -> bool:
            return bool(last_revert) and bool(last_end)

        await eventually(done, within=300, what="every change reverted and every run ended", interval=0.05)
        profile = profiler.stop() if profiler is not None else None
        reasons = {
            (r.get("status") or {}).get("reason") for r in await client.list(resource_path("TestRun", namespace))
        }
        result = {
            "runs": runs,
            "scope": scope,
            "ramp_seconds": round(ramp, 1),
            "last_revert_seconds": round(last_revert[0] - paused_at[0], 3),
            "last_run_ended_seconds": round(last_end[0] - paused_at[0], 3),
            "reasons": sorted(str(r) for r in reasons),
            # The machine is shared: its 1-minute load average when the label went on, to read a slow round by.
            "load_average_at_pause": round(load, 2),
        }
        if profile is not None:
            result["profile"] = profile
        await client.patch(resource_path("Namespace", name=target), {"metadata": {"labels": {PAUSED_LABEL: None}}})
        return result
    finally:
        for task in watchers:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await delete_namespace(client, namespace)


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    with BenchCluster(keep=args.keep_cluster) as cluster:
        client = await connect(cluster)
        try:
            kwok_nodes = len(await nodes(client))
            if await client.get_or_none(resource_path("Namespace", name=SYSTEM)) is None:
                await client.create(resource_path("Namespace"), {"metadata": {"name": SYSTEM}})
            env = {**OPERATOR_SETTINGS, "COORDINATOR_NAMESPACE": SYSTEM}
            with (
                stores("sqlite") as store,
                operator(cluster, [f"{NAMESPACE_PREFIX}-*"], {**env, **store}, "pause") as op,
            ):
                rounds = []
                for index in range(args.repeat):
                    result = await one_round(client, args.runs, args.scope, index, op.pid if args.profile else None)
                    print(
                        f"round {index + 1}: last revert {result['last_revert_seconds']} s, last run ended "
                        f"{result['last_run_ended_seconds']} s (ramp-up {result['ramp_seconds']} s, load average "
                        f"{result['load_average_at_pause']})",
                        flush=True,
                    )
                    rounds.append(result)
        finally:
            await client.close()
    revert = median([r["last_revert_seconds"] for r in rounds])
    ended = median([r["last_run_ended_seconds"] for r in rounds])
    print()
    print(
        table(
            ["figure", "goal", "median of rounds"],
            [
                [f"pause -> last change reverted, {args.runs} runs ({args.scope})", f"<= {GOAL_SECONDS} s", revert],
                [f"pause -> last run Cancelled, {args.runs} runs ({args.scope})", "", ended],
            ],
        )
    )
    return {
        "settings": OPERATOR_SETTINGS,
        "runs": args.runs,
        "scope": args.scope,
        "rounds": rounds,
        "last_revert_seconds": revert,
        "last_run_ended_seconds": ended,
        "goal_met": revert <= GOAL_SECONDS,
        # The cluster's own node count, not the benchmark cluster's default.
        "machine": {**harness.machine(), "kwok_nodes": kwok_nodes},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs holding a fault when the pause comes")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows their median")
    parser.add_argument("--scope", choices=["namespace", "cluster"], default="namespace", help="what is labelled")
    parser.add_argument("--profile", action="store_true", help="py-spy the operator during each round")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the benchmark cluster running")
    harness.add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    harness.use_cluster_arguments(args)
    payload = asyncio.run(bench(args))
    print(f"\nwrote {write_result(f'pause-{args.scope}', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
