"""Benchmark: select and kill 10 % of 10,000 pods on 100 simulated nodes with one TestRun.

The benchmark creates ``--pods`` pods (label ``app=scale``, bound round-robin to the kwok nodes), waits until kwok
reports them all Running, then per round: creates a TestRun of a ``fixed-percent`` 10 % pod-kill scenario and times,
through a pod watch, TestRun create request -> the last of the chosen pods deleted. The operator's own API requests
during the round come from its ``coordinator_kube_api_requests_total`` counter (and the time they waited for the
client-side rate limiter from ``coordinator_kube_api_throttled_seconds_total``). The killed pods are recreated
before the next round.

    .venv/bin/python benchmarks/selection.py                  # 10,000 pods, 3 rounds
    .venv/bin/python benchmarks/selection.py --pods 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from harness import (
    NODES,
    ApiUse,
    BenchCluster,
    KubeClient,
    Profiler,
    connect,
    cpu_by_component,
    cpu_delta,
    create_pods,
    delete_namespace,
    fresh_namespace,
    iso_to_epoch,
    median,
    operator,
    pod_manifest,
    resource_path,
    stores,
    table,
    watch_events,
    write_result,
)

NAMESPACE = f"bench-scale-{int(time.time()) % 100000}"  # its own per invocation, deleted at the end
PERCENT = 10
TERMINAL = {"Passed", "Failed", "Error", "Cancelled", "TimedOut"}


def scenario(percent: int) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "ChaosScenario",
        "metadata": {"name": "kill-ten-percent"},
        "spec": {
            "description": "Kill a tenth of a very large fleet at once.",
            "type": "service_restart",
            "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "scale"}}},
            "mode": "fixed-percent",
            "value": percent,
            "steps": [
                {
                    "name": "kill",
                    "duration": "0s",
                    "faults": [{"type": "pod-kill", "podKill": {"gracePeriodSeconds": 0}}],
                }
            ],
        },
    }


class Fleet:
    """The pods, as the watch sees them: Running ones, and deletions since a mark."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.running: set[str] = set()
        self.deleted: list[tuple[float, str]] = []
        self.changed = asyncio.Event()
        self.runs: dict[str, dict[str, Any]] = {}

    async def watch_pods(self) -> None:
        async for event in watch_events(self.client, resource_path("Pod", NAMESPACE), label_selector="app=scale"):
            meta = event["object"]["metadata"]
            if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
                if meta["uid"] in self.running:
                    self.running.discard(meta["uid"])
                    self.deleted.append((time.monotonic(), meta["uid"]))
            elif (event["object"].get("status") or {}).get("phase") == "Running":
                self.running.add(meta["uid"])
            self.changed.set()

    async def watch_runs(self) -> None:
        async for event in watch_events(self.client, resource_path("TestRun", NAMESPACE)):
            obj = event["object"]
            if event["type"] == "DELETED":
                self.runs.pop(obj["metadata"]["name"], None)
            else:
                self.runs[obj["metadata"]["name"]] = obj
            self.changed.set()

    async def until(self, check: Any, within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{what}: not within {within:.0f}s")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 5))
            except TimeoutError:
                continue


async def fill(client: KubeClient, fleet: Fleet, pods: int) -> float:
    """Create pods until ``pods`` are Running; returns the seconds it took."""
    started = time.monotonic()
    missing = pods - len(fleet.running)
    base = len(fleet.running) + len(fleet.deleted)
    await create_pods(
        client,
        NAMESPACE,
        [pod_manifest("scale-", {"app": "scale"}, base + i) for i in range(missing)],
        parallel=64,
    )
    await fleet.until(lambda: len(fleet.running) >= pods, 900, f"{pods} pods Running")
    return time.monotonic() - started


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    with BenchCluster(keep=args.keep_cluster) as cluster, stores("postgres") as env:
        client = await connect(cluster)
        watchers: list[asyncio.Task[None]] = []
        try:
            await fresh_namespace(client, NAMESPACE)
            await client.create(resource_path("ChaosScenario", NAMESPACE), scenario(PERCENT))
            fleet = Fleet(client)
            watchers = [asyncio.create_task(fleet.watch_pods()), asyncio.create_task(fleet.watch_runs())]
            print(f"selection: creating {args.pods} pods on {NODES} kwok nodes ...", flush=True)
            seconds = await fill(client, fleet, args.pods)
            print(f"  {args.pods} pods Running after {seconds:.0f}s", flush=True)
            qps_env = {
                name: str(value)
                for name, value in (("COORDINATOR_API_QPS", args.qps), ("COORDINATOR_API_BURST", args.burst))
                if value
            }
            with operator(cluster, [NAMESPACE], {**env, **qps_env}, name="selection") as proc:
                profiled: dict[str, Any] | None = None
                # With --profile, one round more, sampled by py-spy and left out of the medians: the sampler takes
                # its share of the same 2 cores (throughput measured 16-18 runs/s without it, 12 with it).
                for rep in range(args.repeat + (1 if args.profile else 0)):
                    sampled = rep == args.repeat
                    if rep:
                        await fill(client, fleet, args.pods)
                    expected = args.pods * PERCENT // 100
                    before = ApiUse.scrape(proc.metrics_url)
                    mark = len(fleet.deleted)
                    name = f"scale-{rep}"
                    assert proc.proc is not None
                    profiler = Profiler(proc.proc.pid, f"selection-{rep}") if sampled else None
                    cpu_before = cpu_by_component(proc.proc.pid)
                    t0 = time.monotonic()
                    await client.create(
                        resource_path("TestRun", NAMESPACE),
                        {
                            "apiVersion": "chaos.coordinator.dev/v1alpha1",
                            "kind": "TestRun",
                            "metadata": {"name": name},
                            "spec": {"scenarioRef": {"name": "kill-ten-percent"}, "timeout": "10m"},
                        },
                    )
                    await fleet.until(
                        lambda mark=mark, expected=expected: len(fleet.deleted) - mark >= expected,
                        600,
                        f"{expected} pods deleted",
                    )
                    first, last = fleet.deleted[mark][0], fleet.deleted[mark + expected - 1][0]
                    # CPU up to the last kill seen (the watch sees it within milliseconds): who the time went to.
                    cpu = cpu_delta(cpu_before, cpu_by_component(proc.proc.pid))

                    def finished(run: str = name) -> bool:
                        status = fleet.runs.get(run, {}).get("status") or {}
                        return status.get("phase") in TERMINAL

                    await fleet.until(finished, 600, f"TestRun {name} finished")
                    t_end = time.monotonic()
                    hot = profiler.stop() if profiler else None
                    status = fleet.runs[name]["status"]
                    used = ApiUse.scrape(proc.metrics_url).since(before)
                    step = (status.get("steps") or [{}])[0]
                    operator_inject = (iso_to_epoch(step.get("injectedAt")) or 0) - (
                        iso_to_epoch(status.get("startedAt")) or 0
                    )
                    result = {
                        "pods": args.pods,
                        "killed": expected,
                        "first_kill_seconds": round(first - t0, 3),
                        "select_and_inject_seconds": round(last - t0, 3),
                        "run_total_seconds": round(t_end - t0, 3),
                        "operator_started_to_injected_seconds": round(operator_inject, 3),
                        "phase": status.get("phase"),
                        "message": status.get("message"),
                        "api_requests": used.requests,
                        "api_requests_total": used.total,
                        "throttled_seconds": used.throttled_seconds,
                        "cpu_seconds_to_last_kill": cpu,
                        **({"profile": hot} if hot else {}),
                    }
                    print(
                        f"  round {rep + 1}/{args.repeat}{' (profiled)' if sampled else ''}: "
                        f"{expected} of {args.pods} pods killed "
                        f"{result['select_and_inject_seconds']:.2f}s after the TestRun was created; "
                        f"{result['api_requests_total']} API requests; {status.get('phase')}",
                        flush=True,
                    )
                    if sampled:
                        profiled = result
                    else:
                        rounds.append(result)
                # The finished TestRuns go while the operator still runs: it releases their finalizers.
                await client.request("DELETE", resource_path("TestRun", NAMESPACE))
                await fleet.until(lambda: not fleet.runs, 120, "the TestRuns deleted")
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            # 10,000 pods take minutes to go; nothing runs after this benchmark on its cluster (run_all.py).
            await delete_namespace(client, NAMESPACE, wait=False)
            await client.close()
    return {
        "pods": args.pods,
        "nodes": NODES,
        "percent": PERCENT,
        "operator_api_qps": args.qps or "default",
        "operator_api_burst": args.burst or "default",
        "repeat": args.repeat,
        "median": {
            "select_and_inject_seconds": median([r["select_and_inject_seconds"] for r in rounds]),
            "first_kill_seconds": median([r["first_kill_seconds"] for r in rounds]),
            "run_total_seconds": median([r["run_total_seconds"] for r in rounds]),
            "api_requests_total": median([r["api_requests_total"] for r in rounds]),
            "throttled_seconds": median([r["throttled_seconds"] for r in rounds]),
        },
        "rounds": rounds,
        **({"profiled_round": profiled} if profiled else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--qps", type=float, default=0, help="COORDINATOR_API_QPS for the operator (default: its own)")
    parser.add_argument("--burst", type=int, default=0, help="COORDINATOR_API_BURST for the operator")
    parser.add_argument("--keep-cluster", action="store_true")
    parser.add_argument(
        "--profile", action="store_true", help="one round more, sampled with py-spy (not in the medians)"
    )
    args = parser.parse_args(argv)
    payload = asyncio.run(bench(args))
    m = payload["median"]
    print(f"\nSelection at scale: {payload['pods']} pods, {PERCENT}% killed (median of {payload['repeat']})")
    print(
        table(
            ["pods", "killed", "first kill s", "all killed s", "run done s", "API requests", "throttled s"],
            [
                [
                    payload["pods"],
                    payload["pods"] * PERCENT // 100,
                    m["first_kill_seconds"],
                    m["select_and_inject_seconds"],
                    m["run_total_seconds"],
                    m["api_requests_total"],
                    m["throttled_seconds"],
                ]
            ],
        )
    )
    print(f"\nwrote {write_result('selection', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
