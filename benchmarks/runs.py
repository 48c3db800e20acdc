"""Benchmark: pod-kill TestRuns through the real operator, in a closed loop at a fixed number of runs in flight.

Each "slot" owns one pod (label ``bench-slot=<n>``, bound to a kwok node) and keeps exactly one TestRun in flight:
create the TestRun (scenario ``kill-slot``, parameter ``slot``) -> the operator deletes the slot's pod -> the
benchmark puts a new pod in the slot -> the run ends and is mirrored into the history -> the TestRun is deleted
(as history limits would) -> next run. Everything is observed through watches, timed on this process's clock:

* **injection latency**: TestRun create request sent -> the target pod's deletion seen by the pod watch, at N
  runs in flight: each run holds its step N / 10 seconds and the slots start spread over that time, so runs
  arrive steadily at about 10 per second (the ``burst`` benchmark instead creates N TestRuns at one instant);
* **throughput**: runs completed (terminal phase written, then ``status.history.synced``) per second, in the
  steady part of the run (between the 10th and the 90th percentile of completion times);
* **mirror lag**: ``status.history.syncedAt - status.completedAt`` (both written by the operator);
* **footprint**: the operator's RSS and CPU seconds idle, then after every ``--footprint-runs`` runs.

    .venv/bin/python benchmarks/runs.py latency      # 1, 10, 100 runs in flight, 200+ runs each
    .venv/bin/python benchmarks/runs.py burst        # 100 TestRuns created at one instant
    .venv/bin/python benchmarks/runs.py throughput   # 100 and 500 runs in flight
    .venv/bin/python benchmarks/runs.py footprint    # idle, then 2 x 1000 runs
    .venv/bin/python benchmarks/runs.py mirror       # mirror lag on PostgreSQL and on the embedded SQLite
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from floor import floor_median, floor_round
from harness import (
    OPERATOR_SETTINGS,
    ApiUse,
    BenchCluster,
    KubeClient,
    Profiler,
    Usage,
    apiserver_requests,
    connect,
    counter_delta,
    cpu_by_component,
    cpu_delta,
    create_pods,
    delete_namespace,
    eventually,
    fresh_namespace,
    iso_to_epoch,
    median,
    operator,
    pod_manifest,
    resource_path,
    round_namespace,
    stores,
    summary,
    table,
    usage,
    watch_events,
    write_result,
)

# Every round gets a namespace of its own: re-creating a just-deleted namespace makes the API server look it up
# live (not from its cache) for every write in it during the next 30 s, a cost no real cluster pays.
NAMESPACE_PREFIX = "bench-runs"
TERMINAL = {"Passed", "Failed", "Error", "Cancelled", "TimedOut"}
# The latency benchmark's load: runs arrive at about this rate at every level, each holding its step for
# N / rate seconds so that N are in flight (1 -> 0.1 s, 10 -> 1 s, 100 -> 10 s).
ARRIVALS_PER_SECOND = 10
SCENARIO = {
    "apiVersion": "chaos.coordinator.dev/v1alpha1",
    "kind": "ChaosScenario",
    "metadata": {"name": "kill-slot"},
    "spec": {
        "description": "Kill the pod of one benchmark slot at once.",
        "type": "service_restart",
        "parameters": [
            {"name": "slot", "type": "string", "description": "The slot whose pod is killed."},
            {"name": "hold", "type": "duration", "default": "0s", "description": "How long the step lasts."},
        ],
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"bench-slot": "{{ params.slot }}"}}},
        "mode": "one",
        "steps": [
            {
                "name": "kill",
                "duration": "{{ params.hold }}",
                "faults": [{"type": "pod-kill", "podKill": {"gracePeriodSeconds": 0}}],
            }
        ],
    },
}


@dataclass
class Sample:
    slot: int
    name: str
    created: float  # time.monotonic() just before the create request
    finalized: float | None = None  # the run watch first showed the operator's finalizer
    planned: float | None = None  # ... first showed the step's plan (status.injections) or a phase
    killed: float | None = None
    finished: float | None = None
    synced: float | None = None
    phase: str | None = None
    mirror_lag: float | None = None
    pod_uid: str | None = None
    killed_event: asyncio.Event = field(default_factory=asyncio.Event)
    done_event: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Slot:
    uid: str | None = None  # the slot's Running pod
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    current: Sample | None = None


class ClosedLoop:
    """``concurrency`` slots, ``total`` runs; ``progress`` is called after each completed run."""

    def __init__(
        self,
        client: KubeClient,
        concurrency: int,
        total: int,
        tag: str,
        namespace: str,
        progress: Callable[[int], None] | None = None,
        run_timeout: float = 300.0,
        hold: str = "0s",
        stagger: float = 0.0,
    ) -> None:
        self.client = client
        self.concurrency = concurrency
        self.remaining = total
        self.tag = tag
        self.namespace = namespace
        self.hold = hold
        self.stagger = stagger
        self.progress = progress
        self.run_timeout = run_timeout
        self.slots = {i: Slot() for i in range(concurrency)}
        self.samples: dict[str, Sample] = {}
        self.completed = 0
        self.timeouts = 0
        self._background: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def watch_pods(self) -> None:
        async for event in watch_events(self.client, resource_path("Pod", self.namespace), label_selector="bench-slot"):
            obj = event["object"]
            meta = obj["metadata"]
            slot = self.slots.get(int(meta["labels"]["bench-slot"]))
            if slot is None:
                continue
            if event["type"] == "DELETED" or meta.get("deletionTimestamp"):
                if slot.uid == meta["uid"]:
                    slot.uid = None
                    slot.ready.clear()
                run = slot.current
                if run is not None and run.killed is None and run.pod_uid == meta["uid"]:
                    run.killed = time.monotonic()
                    run.killed_event.set()
            elif (obj.get("status") or {}).get("phase") == "Running" and slot.uid is None:
                slot.uid = meta["uid"]
                slot.ready.set()

    async def watch_runs(self) -> None:
        path = resource_path("TestRun", self.namespace)
        async for event in watch_events(self.client, path, label_selector=f"bench-tag={self.tag}"):
            obj = event["object"]
            sample = self.samples.get(obj["metadata"]["name"])
            if sample is None or event["type"] == "DELETED":
                continue
            status = obj.get("status") or {}
            now = time.monotonic()
            if sample.finalized is None and obj["metadata"].get("finalizers"):
                sample.finalized = now
            if sample.planned is None and (status.get("injections") or status.get("phase")):
                sample.planned = now
            if status.get("phase") in TERMINAL and sample.finished is None:
                sample.finished = now
                sample.phase = status["phase"]
            history = status.get("history") or {}
            if history.get("synced") and sample.synced is None:
                sample.synced = now
                completed, synced = iso_to_epoch(status.get("completedAt")), iso_to_epoch(history.get("syncedAt"))
                if completed is not None and synced is not None:
                    sample.mirror_lag = synced - completed
                sample.done_event.set()

    async def replace_pod(self, slot: int) -> None:
        await create_pods(self.client, self.namespace, [pod_manifest(f"slot-{slot}-", {"bench-slot": str(slot)}, slot)])

    async def worker(self, index: int) -> None:
        slot = self.slots[index]
        sequence = 0
        if self.stagger:
            # Slots start spread over one run's length, so runs arrive steadily (concurrency / hold per second)
            # instead of all together: the steady state of N runs in flight, not N created at one instant.
            await asyncio.sleep(random.uniform(0, self.stagger))  # noqa: S311 - load shape, not security
        while self.remaining > 0:
            self.remaining -= 1
            sequence += 1
            await asyncio.wait_for(slot.ready.wait(), timeout=120)
            name = f"{self.tag}-{index}-{sequence}"
            sample = Sample(slot=index, name=name, created=time.monotonic(), pod_uid=slot.uid)
            slot.current = sample
            self.samples[name] = sample
            await self.client.create(
                resource_path("TestRun", self.namespace),
                {
                    "apiVersion": "chaos.coordinator.dev/v1alpha1",
                    "kind": "TestRun",
                    "metadata": {"name": name, "labels": {"bench-tag": self.tag}},
                    "spec": {
                        "scenarioRef": {"name": "kill-slot"},
                        "parameters": {"slot": str(index), "hold": self.hold},
                    },
                },
            )
            try:
                killed = asyncio.create_task(sample.killed_event.wait())
                done = asyncio.create_task(sample.done_event.wait())
                await asyncio.wait({killed, done}, timeout=self.run_timeout, return_when=asyncio.FIRST_COMPLETED)
                if sample.killed is not None:
                    self._spawn(self.replace_pod(index))
                await asyncio.wait_for(done, timeout=self.run_timeout)
                killed.cancel()
            except TimeoutError:
                self.timeouts += 1
                print(f"  run {name} did not complete in {self.run_timeout}s", flush=True)
            slot.current = None
            self.completed += 1
            if self.progress is not None:
                self.progress(self.completed)
            self._spawn(self._delete_run(name))

    async def _delete_run(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.client.delete(resource_path("TestRun", self.namespace, name))

    async def drained(self) -> None:
        """Wait until the operator has let every deleted TestRun go (its finalizer), before it is stopped."""

        async def none_left() -> bool:
            return not await self.client.list(
                resource_path("TestRun", self.namespace), label_selector=f"bench-tag={self.tag}"
            )

        await eventually(none_left, within=300, what=f"the TestRuns of {self.tag} deleted")

    async def prepare(self) -> None:
        await create_pods(
            self.client, self.namespace, [pod_manifest(f"slot-{i}-", {"bench-slot": str(i)}, i) for i in self.slots]
        )

    async def run(self) -> float:
        """Run every run; returns the wall time in seconds."""
        watchers = [asyncio.create_task(self.watch_pods()), asyncio.create_task(self.watch_runs())]
        try:
            await asyncio.sleep(0.5)  # both watches open before the first event they must see
            await asyncio.wait_for(asyncio.gather(*(slot.ready.wait() for slot in self.slots.values())), timeout=300)
            started = time.monotonic()
            await asyncio.gather(*(self.worker(i) for i in self.slots))
            wall = time.monotonic() - started
            await asyncio.gather(*self._background, return_exceptions=True)
            return wall
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)

    # --- figures ----------------------------------------------------------------------------------------------

    def latencies(self) -> list[float]:
        return [s.killed - s.created for s in self.samples.values() if s.killed is not None]

    def stages(self) -> dict[str, dict[str, float | int]]:
        """Where a run's injection latency went, as the benchmark's watches saw it: created -> the finalizer on
        (kopf's first patch) -> the plan (or a phase) in status -> the target pod deleted."""
        done = [s for s in self.samples.values() if s.killed is not None and s.finalized and s.planned]
        return {
            "to_finalizer": summary([s.finalized - s.created for s in done if s.finalized]),
            "finalizer_to_plan": summary([s.planned - s.finalized for s in done if s.planned and s.finalized]),
            "plan_to_kill": summary([s.killed - s.planned for s in done if s.killed and s.planned]),
        }

    def steady_throughput(self) -> float:
        """Completed (synced) runs per second between the 10th and 90th percentile of completion times."""
        ends = sorted(s.synced for s in self.samples.values() if s.synced is not None)
        if len(ends) < 10:
            return float("nan")
        low, high = int(len(ends) * 0.1), int(len(ends) * 0.9)
        return (high - low) / (ends[high] - ends[low]) if ends[high] > ends[low] else float("nan")

    def phases(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.samples.values():
            out[s.phase or "none"] = out.get(s.phase or "none", 0) + 1
        return out


async def _scenario(client: KubeClient, namespace: str) -> None:
    """The benchmark's scenario, created once the operator serves its admission webhooks: an earlier round's
    operator left their configurations registered, and they fail closed while no operator answers them."""
    await client.create(resource_path("ChaosScenario", namespace), SCENARIO)


async def one_level(
    cluster: BenchCluster,
    backend_env: dict[str, str],
    concurrency: int,
    total: int,
    tag: str,
    profile: bool = False,
    hold: str = "0s",
    stagger: bool = False,
) -> dict[str, Any]:
    """A fresh namespace and operator; ``total`` runs at ``concurrency`` in flight."""
    client = await connect(cluster)
    namespace = round_namespace(f"{NAMESPACE_PREFIX}-{tag}")
    try:
        await fresh_namespace(client, namespace)
        with operator(cluster, [namespace], backend_env, name=f"runs-{tag}") as proc:
            await _scenario(client, namespace)
            spread = parse_seconds(hold) + 0.5 if stagger else 0.0
            loop = ClosedLoop(client, concurrency, total, tag, namespace, hold=hold, stagger=spread)
            await loop.prepare()
            before = ApiUse.scrape(proc.metrics_url)
            assert proc.proc is not None
            cpu_before = cpu_by_component(proc.proc.pid)
            server_before = await apiserver_requests(cluster.kubeconfig)
            profiler = Profiler(proc.proc.pid, tag) if profile else None
            wall = await loop.run()
            hot = profiler.stop() if profiler else None
            server = counter_delta(server_before, await apiserver_requests(cluster.kubeconfig), per=total)
            cpu = cpu_delta(cpu_before, cpu_by_component(proc.proc.pid))
            api = ApiUse.scrape(proc.metrics_url).since(before)
            await loop.drained()
            assert proc.proc is not None
            used = usage(proc.proc.pid)
        lat = loop.latencies()
        lags = [s.mirror_lag for s in loop.samples.values() if s.mirror_lag is not None]
        return {
            "concurrency": concurrency,
            "runs": total,
            "hold": hold,
            "staggered": stagger,
            "wall_seconds": round(wall, 2),
            "injection_latency": summary(lat),
            "injection_stages": loop.stages(),
            "throughput_runs_per_second": round(loop.steady_throughput(), 2),
            "overall_runs_per_second": round(total / wall, 2),
            "mirror_lag": summary(lags),
            "phases": loop.phases(),
            "timeouts": loop.timeouts,
            "api_requests_per_run": round(api.total / total, 1),
            "throttled_seconds": api.throttled_seconds,
            "operator_rss_mib": used.rss_mib,
            "operator_cpu_seconds": used.cpu_seconds,
            "cpu_seconds_by_component": cpu,
            "cpu_ms_per_run_by_component": {k: round(1000 * v / total, 1) for k, v in cpu.items()},
            "apiserver_requests_per_run": server,
            **({"profile": hot} if hot else {}),
        }
    finally:
        await delete_namespace(client, namespace)
        await client.close()


async def seed_history(env: dict[str, str], runs: int) -> dict[str, Any]:
    """Fill the operator's history store with ``runs`` synthetic finished runs before it starts."""
    from history_report import synthetic_runs

    from coordinator.history.store import HistoryStore

    url = env.get("COORDINATOR_DATABASE_URL") or f"sqlite+aiosqlite:///{env['COORDINATOR_HISTORY_PATH']}"
    store = HistoryStore(url)  # the operator's default instance name, so the same tables
    try:
        await store.upgrade()
        started = time.monotonic()
        print(f"  seeding the history with {runs} runs ...", flush=True)
        written = await store.upsert_records(synthetic_runs(runs, 50))
        return {"runs": written, "seconds": round(time.monotonic() - started, 1)}
    finally:
        await store.close()


def parse_seconds(duration: str) -> float:
    from coordinator.api.durations import parse_duration

    return parse_duration(duration)


def settings_of(args: argparse.Namespace) -> dict[str, str]:
    """The operator settings a result was measured with (beyond the operator's defaults)."""
    return {**OPERATOR_SETTINGS, **args.operator_env}


def _levels(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


async def bench_levels(
    args: argparse.Namespace, name: str, levels: list[int], runs_for: Callable[[int], int]
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    with BenchCluster(keep=args.keep_cluster) as cluster, stores(args.backend) as stored:
        env = {**stored, **args.operator_env}
        seeded = await seed_history(stored, args.seed_runs) if args.seed_runs else None
        if seeded is not None:
            env["COORDINATOR_HISTORY_RETENTION_DAYS"] = "0"  # the synthetic runs are months old: keep them
        for concurrency in levels:
            rounds = []
            floors: list[dict[str, Any]] = []
            profiled = None
            # With --profile, one round more, sampled by py-spy and left out of the medians: the sampler takes its
            # share of the same 2 cores (throughput at 100 in flight: 16-18 runs/s without it, 12 with it).
            for rep in range(args.repeat + (1 if args.profile else 0)):
                sampled = rep == args.repeat
                total = runs_for(concurrency)
                which = "profiled round" if sampled else f"round {rep + 1}/{args.repeat}"
                print(f"{name}: {concurrency} in flight, {total} runs, {which} ...", flush=True)
                result = await one_level(
                    cluster,
                    env,
                    concurrency,
                    total,
                    tag=f"{name[:3]}{args.backend[0]}{concurrency}{'p' if sampled else f'r{rep}'}",
                    profile=sampled,
                    hold=args.hold or f"{concurrency / ARRIVALS_PER_SECOND:g}s",
                    stagger=args.what == "latency",
                )
                print(
                    f"  p50 {result['injection_latency']['p50']:.3f}s p95 {result['injection_latency']['p95']:.3f}s "
                    f"{result['throughput_runs_per_second']} runs/s, phases {result['phases']}",
                    flush=True,
                )
                stages = result["injection_stages"]
                print(
                    "  stages p50/p95: "
                    + ", ".join(f"{k} {v.get('p50', 0):.3f}/{v.get('p95', 0):.3f}s" for k, v in stages.items()),
                    flush=True,
                )
                if sampled:
                    profiled = result
                    continue
                rounds.append(result)
                if args.what == "burst":
                    # The floor in the same minutes as the round: the machine's load drifts by a third in an hour.
                    floor = await floor_round(cluster, SCENARIO, concurrency, f"{name[:3]}{concurrency}r{rep}")
                    print(
                        f"  floor: {floor['requests_per_run']} requests/run x {concurrency} at "
                        f"{floor['served_per_second']} requests/s = {floor['floor_seconds']:.3f}s "
                        f"(plain client p95 {floor['plain_client_latency']['p95']:.3f}s; API server alone on every "
                        f"core: {floor['server_cpu_floor_seconds']:.3f}s)",
                        flush=True,
                    )
                    floors.append(floor)
            results.append(
                {
                    "concurrency": concurrency,
                    "median": {
                        "latency_p50": median([r["injection_latency"]["p50"] for r in rounds]),
                        "latency_p95": median([r["injection_latency"]["p95"] for r in rounds]),
                        "latency_p99": median([r["injection_latency"]["p99"] for r in rounds]),
                        "runs_per_second": median([r["throughput_runs_per_second"] for r in rounds]),
                        "mirror_lag_p50": median([r["mirror_lag"]["p50"] for r in rounds]),
                        "mirror_lag_p95": median([r["mirror_lag"]["p95"] for r in rounds]),
                        "api_requests_per_run": median([r["api_requests_per_run"] for r in rounds]),
                        "throttled_seconds": median([r["throttled_seconds"] for r in rounds]),
                    },
                    "rounds": rounds,
                    **({"floor": floor_median(floors)} if floors else {}),
                    **({"profiled_round": profiled} if profiled else {}),
                }
            )
    return {
        "backend": args.backend,
        "repeat": args.repeat,
        "hold": args.hold,
        "stored_runs_before": seeded,
        "settings": settings_of(args),
        "levels": results,
    }


def print_levels(title: str, payload: dict[str, Any]) -> None:
    rows = [
        [
            level["concurrency"],
            level["rounds"][0]["runs"],
            level["median"]["latency_p50"],
            level["median"]["latency_p95"],
            level["median"]["latency_p99"],
            level["median"]["runs_per_second"],
            level["median"]["mirror_lag_p50"],
            level["median"]["api_requests_per_run"],
        ]
        for level in payload["levels"]
    ]
    print(f"\n{title} ({payload['backend']}, median of {payload['repeat']} round(s))")
    print(
        table(
            ["in flight", "runs", "latency p50 s", "p95 s", "p99 s", "runs/s", "mirror lag p50 s", "API req/run"],
            rows,
        )
    )


async def bench_footprint(args: argparse.Namespace) -> dict[str, Any]:
    """Idle usage over ``--idle`` seconds, then usage after each batch of ``--footprint-runs`` runs."""
    with BenchCluster(keep=args.keep_cluster) as cluster, stores(args.backend) as stored:
        env = {**stored, **args.operator_env}
        client = await connect(cluster)
        try:
            namespace = round_namespace(f"{NAMESPACE_PREFIX}-footprint")
            await fresh_namespace(client, namespace)
            with operator(cluster, [namespace], env, name="footprint") as proc:
                await _scenario(client, namespace)
                assert proc.proc is not None
                pid = proc.proc.pid
                await asyncio.sleep(5)  # start-up work done
                start = usage(pid)
                await asyncio.sleep(args.idle)
                idle = usage(pid)
                points: list[dict[str, Any]] = [{"runs": 0, "rss_mib": idle.rss_mib, "cpu_seconds": idle.cpu_seconds}]
                done = 0
                for batch in range(args.batches):
                    samples: list[tuple[int, Usage]] = []

                    def progress(n: int, base: int = done, into: list[tuple[int, Usage]] = samples) -> None:
                        if n % 100 == 0:
                            into.append((base + n, usage(pid)))

                    print(f"footprint: batch {batch + 1}/{args.batches} ({args.footprint_runs} runs) ...", flush=True)
                    loop = ClosedLoop(
                        client, args.footprint_concurrency, args.footprint_runs, f"fp{batch}", namespace, progress
                    )
                    await loop.prepare()
                    await loop.run()
                    await loop.drained()
                    done += args.footprint_runs
                    await asyncio.sleep(5)  # in-flight deletions and mirror writes settle
                    now = usage(pid)
                    points += [{"runs": n, "rss_mib": u.rss_mib, "cpu_seconds": u.cpu_seconds} for n, u in samples]
                    points.append(
                        {"runs": done, "rss_mib": now.rss_mib, "cpu_seconds": now.cpu_seconds, "settled": True}
                    )
                    print(f"  RSS {now.rss_mib} MiB, CPU {now.cpu_seconds} s, phases {loop.phases()}", flush=True)
                    # Pods of this batch's slots are left; the next batch makes its own.
                    await _delete_slot_pods(client, namespace)
        finally:
            await client.close()
    settled = [p for p in points if p.get("settled")]
    return {
        "backend": args.backend,
        "settings": settings_of(args),
        "concurrency": args.footprint_concurrency,
        "idle": {
            "seconds": args.idle,
            "rss_mib": idle.rss_mib,
            "cpu_seconds": round(idle.cpu_seconds - start.cpu_seconds, 2),
            "cpu_percent": round(100 * (idle.cpu_seconds - start.cpu_seconds) / args.idle, 2),
        },
        "after_batches": settled,
        "growth_last_batch_mib": round(settled[-1]["rss_mib"] - settled[-2]["rss_mib"], 1)
        if len(settled) > 1
        else None,
        "curve": points,
    }


async def _delete_slot_pods(client: KubeClient, namespace: str) -> None:
    await client.request(
        "DELETE", resource_path("Pod", namespace), params={"labelSelector": "bench-slot", "gracePeriodSeconds": 0}
    )

    async def none_left() -> bool:
        return not await client.list(resource_path("Pod", namespace), label_selector="bench-slot")

    await eventually(none_left, within=120, what="the slot pods deleted")


# The benchmarks that run levels of runs in flight: default levels, runs per level (N in flight), table title.
LEVELS: dict[str, tuple[str, Callable[[int], int], str]] = {
    "latency": ("1,10,100", lambda c: max(200, 3 * c), "Injection latency: TestRun created -> target pod deleted"),
    "burst": ("100", lambda c: c, "Burst: N TestRuns created at one instant -> target pod deleted"),
    "throughput": (
        "100,500",
        lambda c: max(500, 3 * c),
        "Throughput: pod-kill runs completed (status written, history mirrored)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["latency", "burst", "throughput", "footprint", "mirror"])
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per level; the table shows their median")
    parser.add_argument("--levels", default="", help="runs in flight, comma-separated (default per benchmark)")
    parser.add_argument("--runs", type=int, default=0, help="runs per round (default per benchmark)")
    parser.add_argument("--idle", type=float, default=30.0, help="footprint: idle seconds measured")
    parser.add_argument("--batches", type=int, default=2, help="footprint: batches of --footprint-runs")
    parser.add_argument("--footprint-runs", type=int, default=1000)
    parser.add_argument("--footprint-concurrency", type=int, default=100)
    parser.add_argument("--keep-cluster", action="store_true", help="leave the benchmark cluster running")
    parser.add_argument(
        "--seed-runs", type=int, default=None, help="runs stored in the history first (mirror: 100000, else 0)"
    )
    parser.add_argument("--hold", default=None, help="each run's step duration (default: N/10 s for latency, else 0s)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="one round more per level, sampled with py-spy, not in the medians (the JSON gets the top)",
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="COORDINATOR_X=VALUE", help="an operator setting (repeatable)"
    )
    args = parser.parse_args(argv)
    args.operator_env = dict(item.split("=", 1) for item in args.set)
    if args.what != "latency":
        args.hold = args.hold or "0s"  # latency: N / ARRIVALS_PER_SECOND seconds per level unless given
    if args.seed_runs is None:
        args.seed_runs = 100_000 if args.what == "mirror" else 0

    if args.what in LEVELS:
        default_levels, runs_for, title = LEVELS[args.what]
        payload = asyncio.run(
            bench_levels(args, args.what, _levels(args.levels or default_levels), lambda c: args.runs or runs_for(c))
        )
        print_levels(title, payload)
        print(f"\nwrote {write_result(args.what, payload)}")
    elif args.what == "mirror":
        out = {}
        for backend in ("postgres", "sqlite"):
            args.backend = backend
            out[backend] = asyncio.run(
                bench_levels(args, f"mirror-{backend}", _levels(args.levels or "10"), lambda c: args.runs or 200)
            )
            print_levels(f"Mirror lag on {backend}", out[backend])
        print(f"\nwrote {write_result('mirror', {'backends': out})}")
    else:
        payload = asyncio.run(bench_footprint(args))
        rows = [
            ["idle", payload["idle"]["rss_mib"], payload["idle"]["cpu_seconds"], f"{payload['idle']['cpu_percent']}%"]
        ]
        rows += [[f"after {p['runs']} runs", p["rss_mib"], p["cpu_seconds"], ""] for p in payload["after_batches"]]
        print(f"\nOperator footprint ({payload['backend']}, {payload['concurrency']} in flight)")
        print(table(["when", "RSS MiB", "CPU s (total)", "idle CPU"], rows))
        print(f"\nwrote {write_result('footprint', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
