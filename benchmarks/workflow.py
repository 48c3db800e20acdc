"""Benchmark: a workflow of 100 parallel pod-kill nodes (issue 21), run 20 times one after the other.

One ChaosWorkflow ``fan-out`` of N nodes (default 100) with no dependencies between them: node ``n<k>`` runs the
scenario ``kill-slot`` with ``slot: "<k>"``, whose label selector ``bench-slot={{ params.slot }}`` gives each node
a pod of its own. Each workflow: N fresh pods (one per slot, bound to kwok nodes), then one TestRun with
``workflowRef: fan-out``; the operator creates the N child TestRuns (``<parent>-n<k>``), each kills its pod and
ends, then the parent ends. Everything is observed through one pod watch and one run watch, timed on this
process's clock from the parent's create request:

* **injection**: node k's pod deleted, as the pod watch sees it (p50/p95/p99 over the N nodes of a workflow);
  goal: p95 within 2 s of the parent's creation;
* **parent after its last child**: the parent's terminal phase minus the last child's, both as the run watch sees
  them; goal: within 1 s;
* **footprint**: the operator's RSS (from /proc) before the first workflow and after each one, once its runs are
  deleted (as history limits would delete them) and the operator has settled; goal: flat across 20 workflows
  (here: at most 10 MiB more after workflow 20 than after workflow 10, the footprint benchmark's measure).

The table shows the median of the workflows' figures. Each workflow also records where its nodes' time went (the
parent created -> the child seen -> its finalizer -> its plan -> the pod deleted), the operator's API requests,
the API server's request counters and each component's CPU.

    .venv/bin/python benchmarks/workflow.py                    # 100 nodes, 20 workflows, on the benchmark cluster
    .venv/bin/python benchmarks/workflow.py --workflows 3 --profile   # and one more, sampled by py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
from harness import (
    OPERATOR_SETTINGS,
    ApiUse,
    BenchCluster,
    Profiler,
    apiserver_requests,
    connect,
    counter_delta,
    cpu_by_component,
    cpu_delta,
    create_pods,
    eventually,
    fresh_namespace,
    median,
    operator,
    pod_manifest,
    stores,
    summary,
    table,
    usage,
    watch_events,
    write_result,
)

from coordinator.adapters.kube import KubeClient, resource_path
from coordinator.api.models import WORKFLOW_NODE_LABEL
from coordinator.testing.process import OperatorProcess

NAMESPACE = "bench-workflow"
TERMINAL = {"Passed", "Failed", "Error", "Cancelled", "TimedOut"}
INJECTION_GOAL_P95 = 2.0  # seconds from the parent's create request to a node's pod deleted
PARENT_GOAL = 1.0  # seconds from the last child's terminal phase to the parent's
FLAT_MIB = 10.0  # RSS growth between workflow 10 and 20 that still counts as flat
WORKFLOW = "fan-out"
SCENARIO = {
    "apiVersion": "chaos.coordinator.dev/v1alpha1",
    "kind": "ChaosScenario",
    "metadata": {"name": "kill-slot"},
    "spec": {
        "description": "Kill the pod of one benchmark slot at once.",
        "type": "service_restart",
        "parameters": [{"name": "slot", "type": "string", "description": "The slot whose pod is killed."}],
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"bench-slot": "{{ params.slot }}"}}},
        "mode": "one",
        "steps": [
            {"name": "kill", "duration": "0s", "faults": [{"type": "pod-kill", "podKill": {"gracePeriodSeconds": 0}}]}
        ],
    },
}


def workflow_manifest(nodes: int) -> dict[str, Any]:
    """``nodes`` parallel nodes, each killing the pod of its own slot."""
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "ChaosWorkflow",
        "metadata": {"name": WORKFLOW},
        "spec": {
            "description": f"{nodes} pod kills at once, one pod each.",
            "failurePolicy": "Continue",
            "nodes": [
                {"name": f"n{slot}", "scenarioRef": {"name": "kill-slot"}, "parameters": {"slot": str(slot)}}
                for slot in range(nodes)
            ],
        },
    }


@dataclass
class Node:
    """One node of one workflow run, as the watches saw it (time.monotonic())."""

    pod_uid: str | None = None  # its slot's pod, Running
    child_seen: float | None = None  # the run watch first showed the child TestRun
    finalized: float | None = None  # ... first showed its finalizer
    planned: float | None = None  # ... first showed its plan (status.injections) or a phase
    killed: float | None = None  # the pod watch saw its pod deleted
    ended: float | None = None  # the run watch saw its terminal phase
    phase: str | None = None


@dataclass
class Round:
    index: int
    nodes: dict[int, Node]
    created: float = 0.0  # just before the parent's create request
    parent_running: float | None = None
    parent_ended: float | None = None
    parent_phase: str | None = None
    pods_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def tag(self) -> str:
        return f"wf{self.index}"

    @property
    def parent(self) -> str:
        return f"wf-{self.index}"

    def done(self) -> bool:
        return self.parent_ended is not None and all(n.killed is not None or n.ended for n in self.nodes.values())


class Watches:
    """One pod watch and one run watch over the namespace, for the whole benchmark; events of the current round's
    pods (label ``bench-round``) and runs (label ``bench-tag``, which the children inherit) are recorded."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.current: Round | None = None

    async def pods(self) -> None:
        async for event in watch_events(self.client, resource_path("Pod", NAMESPACE), label_selector="bench-slot"):
            now = time.monotonic()
            pod = event["object"]
            meta = pod["metadata"]
            round_ = self.current
            if round_ is None or (meta.get("labels") or {}).get("bench-round") != round_.tag:
                continue
            node = round_.nodes[int(meta["labels"]["bench-slot"])]
            if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
                if node.pod_uid == meta["uid"] and node.killed is None:
                    node.killed = now
            elif (pod.get("status") or {}).get("phase") == "Running" and node.pod_uid is None:
                node.pod_uid = meta["uid"]
                if all(n.pod_uid for n in round_.nodes.values()):
                    round_.pods_ready.set()

    async def runs(self) -> None:
        async for event in watch_events(self.client, resource_path("TestRun", NAMESPACE), label_selector="bench-tag"):
            now = time.monotonic()
            run = event["object"]
            meta = run["metadata"]
            labels = meta.get("labels") or {}
            round_ = self.current
            if round_ is None or labels.get("bench-tag") != round_.tag or event["type"] == "DELETED":
                continue
            status = run.get("status") or {}
            phase = status.get("phase")
            if meta["name"] == round_.parent:
                if round_.parent_running is None and phase == "Running":
                    round_.parent_running = now
                if round_.parent_ended is None and phase in TERMINAL:
                    round_.parent_ended, round_.parent_phase = now, phase
                continue
            node = round_.nodes.get(int(labels.get(WORKFLOW_NODE_LABEL, "n-1")[1:]))
            if node is None:
                continue
            if node.child_seen is None:
                node.child_seen = now
            if node.finalized is None and meta.get("finalizers"):
                node.finalized = now
            if node.planned is None and (status.get("injections") or phase):
                node.planned = now
            if node.ended is None and phase in TERMINAL:
                node.ended, node.phase = now, phase


def _since(values: list[tuple[float | None, float | None]]) -> dict[str, float | int]:
    """The p50/p95/p99 of ``end - start`` over the pairs where both were seen."""
    return summary([end - start for start, end in values if start is not None and end is not None])


def log_problems(log: Path, offset: int) -> tuple[int, list[str]]:
    """The operator log's warnings and errors after byte ``offset`` (a webhook timeout, a retried run): their
    messages, and the offset of the log's end."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read()
    messages = []
    for line in text.decode(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("level") in ("warning", "error"):
                messages.append(str(entry.get("event"))[:300])
    return offset + len(text), messages


async def one_workflow(
    client: KubeClient, watches: Watches, cluster: BenchCluster, index: int, nodes: int, proc: OperatorProcess
) -> dict[str, Any]:
    """N fresh pods, one workflow run to its end, its runs deleted; the round's figures."""
    assert proc.proc is not None
    pid, metrics_url = proc.proc.pid, proc.metrics_url
    round_ = Round(index=index, nodes={slot: Node() for slot in range(nodes)})
    watches.current = round_
    await create_pods(
        client,
        NAMESPACE,
        [
            pod_manifest(f"slot-{slot}-", {"bench-slot": str(slot), "bench-round": round_.tag}, slot)
            for slot in range(nodes)
        ],
    )
    await asyncio.wait_for(round_.pods_ready.wait(), timeout=300)

    api_before = ApiUse.scrape(metrics_url)
    cpu_before = cpu_by_component(pid)
    server_before = await apiserver_requests(cluster.kubeconfig)
    load = os.getloadavg()[0]
    round_.created = time.monotonic()
    await client.create(
        resource_path("TestRun", NAMESPACE),
        {
            "apiVersion": "chaos.coordinator.dev/v1alpha1",
            "kind": "TestRun",
            "metadata": {"name": round_.parent, "labels": {"bench-tag": round_.tag}},
            "spec": {"workflowRef": {"name": WORKFLOW}},
        },
    )

    async def finished() -> bool:
        return round_.done()

    log_offset = proc.log_path.stat().st_size
    await eventually(finished, within=600, what=f"workflow run {round_.parent} ended", interval=0.05)
    _, problems = log_problems(proc.log_path, log_offset)
    api = ApiUse.scrape(metrics_url).since(api_before)
    cpu = cpu_delta(cpu_before, cpu_by_component(pid))
    server = counter_delta(server_before, await apiserver_requests(cluster.kubeconfig))

    created = round_.created
    states = list(round_.nodes.values())
    injections = [n.killed - created for n in states if n.killed is not None]
    children_ended = [n.ended for n in states if n.ended is not None]
    last_child = max(children_ended) if children_ended else None
    assert round_.parent_ended is not None
    phases: dict[str, int] = {}
    for n in states:
        phases[n.phase or "none"] = phases.get(n.phase or "none", 0) + 1
    result = {
        "workflow": index + 1,
        "nodes": nodes,
        "parent_phase": round_.parent_phase,
        "node_phases": phases,
        "pods_killed": len(injections),
        "injection": summary(injections),
        "first_injection_seconds": round(min(injections), 3) if injections else None,
        "last_injection_seconds": round(max(injections), 3) if injections else None,
        "parent_after_last_child_seconds": round(round_.parent_ended - last_child, 3) if last_child else None,
        "parent_ended_seconds": round(round_.parent_ended - created, 3),
        "stages": {
            "parent_running": round(round_.parent_running - created, 3) if round_.parent_running else None,
            "to_child_seen": _since([(created, n.child_seen) for n in states]),
            "child_to_finalizer": _since([(n.child_seen, n.finalized) for n in states]),
            "finalizer_to_plan": _since([(n.finalized, n.planned) for n in states]),
            "plan_to_kill": _since([(n.planned, n.killed) for n in states]),
            "kill_to_child_ended": _since([(n.killed, n.ended) for n in states]),
        },
        "operator_api_requests": api.requests,
        "operator_api_requests_total": api.total,
        "throttled_seconds": api.throttled_seconds,
        "apiserver_requests": server,
        # Warnings and errors the operator logged during the workflow: a webhook call that timed out makes the
        # parent's create fail and the run retry, which the figures above then include.
        "operator_log_problems": len(problems),
        "operator_log_problem_samples": problems[:5],
        "cpu_seconds_by_component": cpu,
        # The machine is shared: its 1-minute load average when the parent was created, to read a slow round by.
        "load_average_at_create": round(load, 2),
    }
    watches.current = None
    await _delete_runs(client, round_.tag)
    return result


async def _delete_runs(client: KubeClient, tag: str) -> None:
    """Delete the parent (its children go with it: they are owned by it) and wait until every run has gone, with
    any pod of the round that was left (a failed node's)."""
    with contextlib.suppress(Exception):
        await client.request(
            "DELETE", resource_path("TestRun", NAMESPACE), params={"labelSelector": f"bench-tag={tag}"}
        )
    with contextlib.suppress(Exception):
        await client.request(
            "DELETE",
            resource_path("Pod", NAMESPACE),
            params={"labelSelector": f"bench-round={tag}", "gracePeriodSeconds": 0},
        )

    async def none_left() -> bool:
        runs = await client.list(resource_path("TestRun", NAMESPACE), label_selector=f"bench-tag={tag}")
        pods = await client.list(resource_path("Pod", NAMESPACE), label_selector=f"bench-round={tag}")
        return not runs and not pods

    await eventually(none_left, within=300, what=f"the runs and pods of {tag} deleted", interval=0.5)


def checkpoints(workflows: int) -> list[int]:
    """The workflows after which the RSS is reported: the first, the middle one and the last (1, 10, 20)."""
    return sorted({1, max(1, workflows // 2), workflows})


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    env_extra = dict(item.split("=", 1) for item in args.set)
    with BenchCluster(keep=args.keep_cluster) as cluster, stores(args.backend) as stored:
        client = await connect(cluster)
        try:
            await fresh_namespace(client, NAMESPACE)
            watches = Watches(client)
            watchers = [asyncio.create_task(watches.pods()), asyncio.create_task(watches.runs())]
            try:
                with operator(cluster, [NAMESPACE], {**stored, **env_extra}, "workflow") as proc:
                    assert proc.proc is not None
                    pid = proc.proc.pid
                    # Created through the operator's admission webhooks, which a stopped operator's configuration
                    # would still name for this namespace.
                    await client.create(resource_path("ChaosScenario", NAMESPACE), SCENARIO)
                    await client.create(resource_path("ChaosWorkflow", NAMESPACE), workflow_manifest(args.nodes))
                    await asyncio.sleep(5)  # start-up work done
                    await asyncio.sleep(args.idle)
                    before = usage(pid)
                    print(f"operator before the first workflow: RSS {before.rss_mib} MiB", flush=True)
                    rounds: list[dict[str, Any]] = []
                    rss: list[dict[str, Any]] = [{"workflows": 0, "rss_mib": before.rss_mib}]
                    profiled = None
                    for index in range(args.workflows + (1 if args.profile else 0)):
                        sampled = index == args.workflows
                        profiler = Profiler(pid, "workflow") if sampled else None
                        result = await one_workflow(client, watches, cluster, index, args.nodes, proc)
                        if profiler is not None:
                            result["profile"] = profiler.stop()
                        await asyncio.sleep(args.settle)  # in-flight deletions and mirror writes settle
                        now = usage(pid)
                        result["rss_mib_after"] = now.rss_mib
                        print(
                            f"workflow {index + 1}{' (profiled)' if sampled else ''}: injection p50 "
                            f"{result['injection']['p50']:.3f} s p95 {result['injection']['p95']:.3f} s "
                            f"(last {result['last_injection_seconds']} s), parent after last child "
                            f"{result['parent_after_last_child_seconds']} s, parent {result['parent_phase']}, "
                            f"nodes {result['node_phases']}, operator warnings {result['operator_log_problems']}, RSS {now.rss_mib} MiB, load "
                            f"{result['load_average_at_create']}",
                            flush=True,
                        )
                        if sampled:
                            profiled = result
                            continue
                        rounds.append(result)
                        rss.append({"workflows": index + 1, "rss_mib": now.rss_mib, "cpu_seconds": now.cpu_seconds})
            finally:
                for task in watchers:
                    task.cancel()
                await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            await client.close()

    after = {point["workflows"]: point["rss_mib"] for point in rss}
    marks = checkpoints(args.workflows)
    growth = round(after[marks[-1]] - after[marks[-2]], 1) if len(marks) > 1 else None
    medians = {
        "injection_p50": median([r["injection"]["p50"] for r in rounds]),
        "injection_p95": median([r["injection"]["p95"] for r in rounds]),
        "injection_p99": median([r["injection"]["p99"] for r in rounds]),
        "last_injection_seconds": median([r["last_injection_seconds"] for r in rounds]),
        "parent_after_last_child_seconds": median([r["parent_after_last_child_seconds"] for r in rounds]),
        "parent_ended_seconds": median([r["parent_ended_seconds"] for r in rounds]),
        "operator_api_requests_total": median([r["operator_api_requests_total"] for r in rounds]),
    }
    print()
    print(
        table(
            ["figure", "goal", f"median of {len(rounds)} workflows"],
            [
                ["injection p50 s", "", medians["injection_p50"]],
                ["injection p95 s", f"<= {INJECTION_GOAL_P95}", medians["injection_p95"]],
                ["injection p99 s", "", medians["injection_p99"]],
                ["parent after last child s", f"<= {PARENT_GOAL}", medians["parent_after_last_child_seconds"]],
                *[[f"RSS MiB after workflow {m}", "", after[m]] for m in marks],
                [f"RSS growth {marks[-2] if len(marks) > 1 else ''} -> {marks[-1]} MiB", f"<= {FLAT_MIB}", growth],
            ],
        )
    )
    return {
        "backend": args.backend,
        "settings": {**OPERATOR_SETTINGS, **env_extra},
        "nodes": args.nodes,
        "workflows": args.workflows,
        "median": medians,
        "rss": {
            "before_mib": before.rss_mib,
            "after_mib": {str(m): after[m] for m in marks},
            "growth_mib": growth,
            "growth_between": marks[-2:] if len(marks) > 1 else None,
            "curve": rss,
        },
        "goals": {
            "injection_p95_seconds": INJECTION_GOAL_P95,
            "parent_after_last_child_seconds": PARENT_GOAL,
            "rss_growth_mib": FLAT_MIB,
        },
        "rounds": rounds,
        **({"profiled_round": profiled} if profiled else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100, help="parallel pod-kill nodes of the workflow")
    parser.add_argument("--workflows", type=int, default=20, help="workflows run one after the other")
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds idle before the first workflow")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after a workflow's runs are deleted")
    parser.add_argument("--profile", action="store_true", help="one workflow more, sampled by py-spy, not counted")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the benchmark cluster running")
    parser.add_argument(
        "--set", action="append", default=[], metavar="COORDINATOR_X=VALUE", help="an operator setting (repeatable)"
    )
    harness.add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    harness.use_cluster_arguments(args)
    payload = asyncio.run(bench(args))
    print(f"\nwrote {write_result('workflow', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
