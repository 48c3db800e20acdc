"""pod-kill and pod-failure through the real API server, per selection mode, with records and Events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from conftest import make_deployment, ready_pods, wait_ready
from coordinator.api.models import REQUESTED_BY_ANNOTATION
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos, pod_kill_spec


def runs_version(custom: client.CustomObjectsApi, ns: str) -> str:
    """The TestRun collection's resourceVersion now: a watch from it sees every later change."""
    return str(custom.list_namespaced_custom_object(GROUP, VERSION, ns, "testruns")["metadata"]["resourceVersion"])


def watch_runs(
    stream: watch.Watch, custom: client.CustomObjectsApi, ns: str, since: str, timeout: int
) -> Iterator[dict[str, Any]]:
    """Every TestRun event in ``ns`` after resourceVersion ``since``, until ``stream.stop()`` or ``timeout``."""
    events: Iterator[dict[str, Any]] = stream.stream(
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        ns,
        "testruns",
        resource_version=since,
        timeout_seconds=timeout,
    )
    return events


def run_while_watching(
    chaos: Chaos, scenario: str, record: Callable[[], None], timeout: float = 60
) -> tuple[str, bool]:
    """Start ``record`` (a watch loop that stops itself) in a thread, run ``scenario`` once, wait for the watch.

    Returns the TestRun's name and whether the watch ended within ``timeout``."""
    watcher = threading.Thread(target=record, daemon=True)
    watcher.start()
    run = chaos.run(scenario)
    watcher.join(timeout=timeout)
    return run, not watcher.is_alive()


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [("one", None, 1), ("all", None, 3), ("fixed", 2, 2), ("fixed-percent", 34, 2), ("random-max-percent", 100, None)],
)
def test_pod_kill_hits_exactly_the_chosen_pods(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, mode: str, value: int | None, expected: int | None
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web")
    before = wait_ready(core, ns, "web", 3)
    chaos.scenario("kill", pod_kill_spec({"app": "web"}, mode=mode, value=value))
    run = chaos.run("kill", seed=7)
    status = chaos.wait_phase(run, "Passed")

    step = status["steps"][0]
    chosen = {t["uid"] for t in step["targets"]}
    assert chosen <= set(before), "only pods that existed and matched were chosen"
    if expected is not None:
        assert step["targetCount"] == expected == len(chosen)
    else:
        assert 1 <= step["targetCount"] <= 3
    assert step["outcome"] == "Reverted"
    assert step["injectedAt"]
    assert step["revertedAt"]
    assert status["targets"] == step["targetCount"]
    assert status["durationSeconds"] > 0
    assert [i["state"] for i in status["injections"]] == ["Irreversible"] * len(chosen)
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Completed"]["status"] == "True"
    assert conditions["TargetsSelected"]["status"] == "True"
    assert conditions["FaultsInjected"]["status"] == "True"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])

    after = wait_ready(core, ns, "web", 3)
    assert chosen.isdisjoint(after), "every chosen pod was killed and replaced"
    assert set(before) - chosen <= set(after), "pods not chosen were left alone"
    wait_for(
        lambda: {"Started", "Injected", "Completed"} <= set(chaos.events(run)),
        timeout=10,
        description="Started/Injected/Completed events on the TestRun",
    )
    assert "Reverted" not in chaos.events(run), "a pod kill has nothing to revert: no Reverted event says it did"


def test_a_0s_pod_kill_writes_its_status_twice_and_ends_synced(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, api_client: client.ApiClient
) -> None:
    """Every status the TestRun goes through, as a watch sees it: the plan (Running, the ledger Recorded), then
    the end (Passed, the kill's outcome, already in the history store). No Injected write in between, no mark by
    the history timer after."""
    ns = chaos.namespace
    make_deployment(apps, ns, "web")
    wait_ready(core, ns, "web", 3)
    chaos.scenario("kill-now", pod_kill_spec({"app": "web"}, duration="0s"))
    statuses: list[dict[str, Any]] = []
    stream = watch.Watch()
    custom = client.CustomObjectsApi(api_client)
    # Watched from this resourceVersion on: every change after it, whenever the watch connects.
    since = runs_version(custom, ns)

    def record() -> None:
        for event in watch_runs(stream, custom, ns, since, timeout=60):
            status = event["object"].get("status") or {}
            if status and (not statuses or statuses[-1] != status):
                statuses.append(status)
            if (status.get("history") or {}).get("synced"):
                stream.stop()

    run, ended = run_while_watching(chaos, "kill-now", record)
    assert ended, f"TestRun {run} never reached a synced status: {statuses}"

    phases = [(s.get("phase"), s["steps"][0]["outcome"]) for s in statuses]
    assert phases == [("Running", "Pending"), ("Passed", "Reverted")], phases
    assert [i["state"] for i in statuses[0]["injections"]] == ["Recorded"]
    end = statuses[-1]
    assert end["steps"][0]["injectedAt"]
    assert [i["state"] for i in end["injections"]] == ["Irreversible"]
    assert end["history"]["synced"] is True


def test_a_finished_run_is_left_with_its_status_only(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, api_client: client.ApiClient
) -> None:
    """What the TestRun's object goes through, as a watch sees it: kopf's finalizer on, the plan, the end, the
    finalizer off (nothing left to guard). kopf stores no copy of the spec on it (handlers/diffbase.py)."""
    ns = chaos.namespace
    make_deployment(apps, ns, "web")
    wait_ready(core, ns, "web", 3)
    chaos.scenario("kill-now", pod_kill_spec({"app": "web"}, duration="0s"))
    custom = client.CustomObjectsApi(api_client)
    since = runs_version(custom, ns)
    states: list[tuple[bool, str | None]] = []
    ours: set[str] = set()
    stream = watch.Watch()

    def record() -> None:
        for event in watch_runs(stream, custom, ns, since, timeout=60):
            metadata = event["object"]["metadata"]
            # The requester is recorded at admission (docs/security.md), not by the run: it stays.
            ours.update(
                key
                for key in metadata.get("annotations") or {}
                if (GROUP in key or "kopf" in key) and key != REQUESTED_BY_ANNOTATION
            )
            state = (bool(metadata.get("finalizers")), (event["object"].get("status") or {}).get("phase"))
            if not states or states[-1] != state:
                states.append(state)
            if state == (False, "Passed"):
                stream.stop()

    run, ended = run_while_watching(chaos, "kill-now", record)
    assert ended, f"TestRun {run} never let its finalizer go: {states}"
    assert states == [(False, None), (True, None), (True, "Running"), (True, "Passed"), (False, "Passed")], states
    assert not ours, f"operator annotations on the TestRun: {sorted(ours)}"


def test_pod_failure_swaps_images_and_restores_them(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "api", replicas=2)
    wait_ready(core, ns, "api", 2)
    chaos.scenario(
        "fail",
        {
            "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "api"}}},
            "mode": "all",
            "steps": [{"name": "break", "duration": "3s", "faults": [{"type": "pod-failure"}]}],
        },
    )
    run = chaos.run("fail")
    status = chaos.wait_step(run, 0, "Injected")
    names = [t["name"] for t in status["steps"][0]["targets"]]
    for name in names:
        pod = core.read_namespaced_pod(name, ns)
        assert pod.spec.containers[0].image == "coordinator.invalid/pod-failure:unstartable"
        key = next(k for k in pod.metadata.annotations if k.startswith("chaos.coordinator.dev/injection-"))
        record = json.loads(pod.metadata.annotations[key])
        assert json.loads(record["original"]) == {"images": {"app": "nginx:1.27"}}, "the record holds the original"
        assert record["run"] == f"{ns}/{run}"
    chaos.wait_phase(run, "Passed")
    for name in names:
        pod = core.read_namespaced_pod(name, ns)
        assert pod.spec.containers[0].image == "nginx:1.27"
        assert not any(k.startswith("chaos.coordinator.dev/") for k in (pod.metadata.annotations or {}))
        assert "chaos.coordinator.dev/injected" not in (pod.metadata.labels or {})
    wait_for(
        lambda: {"ChaosInjected", "ChaosReverted"} <= set(chaos.events(names[0])),
        timeout=10,
        description="ChaosInjected/ChaosReverted events on the pod",
    )
    wait_for(lambda: "Reverted" in chaos.events(run), timeout=10, description="a Reverted event on the TestRun")
    # Every Event about the run, on the pods and on the TestRun, carries its correlation ID: the run's UID.
    uid = chaos.get_run(run)["metadata"]["uid"]
    for name in (names[0], run):
        correlations = chaos.event_correlations(name)
        assert correlations, name
        assert all(ids == {uid} for ids in correlations.values()), (name, correlations)


def test_scenario_status_counts_every_run_once(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    """Runs finishing together are each counted on the scenario (compare-and-swap writes, no lost update)."""
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("kill", pod_kill_spec({"app": "web"}))
    dry = [chaos.run("kill", dryRun=True) for _ in range(5)]
    for run in dry:
        chaos.wait_phase(run, "Passed")
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 0}})
    wait_for(lambda: not ready_pods(core, ns, "web"), timeout=60, description="web scaled to zero")
    failed = chaos.run("kill")
    chaos.wait_phase(failed, "Failed")

    def counted() -> dict[str, object] | None:
        scenario = chaos.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", "kill")
        status = scenario.get("status") or {}
        return status if status.get("totalRuns") == 6 else None

    status = wait_for(counted, timeout=20, description="six runs counted on the scenario")
    assert status["passedRuns"] == 5
    assert status["passRate"] == "83%"
    assert status["lastRun"]["name"] == failed
    assert status["lastRun"]["phase"] == "Failed"
    assert status["cancelledRuns"] == 0


def test_cancelled_runs_are_counted_apart_from_the_pass_rate(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("slow", pod_kill_spec({"app": "web"}, duration="60s"))
    run = chaos.run("slow")
    chaos.wait_step(run, 0, "Injected")
    chaos.custom.patch_namespaced_custom_object(GROUP, VERSION, ns, "testruns", run, {"spec": {"abort": True}})
    status = chaos.wait_phase(run, "Cancelled")
    assert status.get("resilienceScore") is None, "an aborted run did not run its course: no score"

    def counted() -> dict[str, object] | None:
        scenario = chaos.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", "slow")
        summary = scenario.get("status") or {}
        return summary if summary.get("totalRuns") == 1 else None

    summary = wait_for(counted, timeout=20, description="the aborted run counted")
    assert summary["cancelledRuns"] == 1
    assert summary.get("passRate") is None, "no decided run yet: no pass rate, not 0 %"


def test_runs_deleted_the_moment_they_finish_are_let_go_at_once(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, api_client: client.ApiClient
) -> None:
    """A GitOps job that deletes each TestRun as soon as it has passed. The daemon is then usually still posting
    its Completed Event and counting the run; kopf used to give up waiting for it after 10 loop cycles and held
    the finalizer for the rest of the 30 s cancellation backoff (benchmarks/README.md, finding 19)."""
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=6)
    wait_ready(core, ns, "web", 6)
    chaos.scenario("kill-now", pod_kill_spec({"app": "web"}, duration="0s"))
    custom = client.CustomObjectsApi(api_client)
    since = runs_version(custom, ns)
    deleted_at: dict[str, float] = {}
    gone_at: dict[str, float] = {}
    stream = watch.Watch()
    runs = 6

    def delete_when_passed() -> None:
        for event in watch_runs(stream, custom, ns, since, timeout=90):
            name = event["object"]["metadata"]["name"]
            if event["type"] == "DELETED":
                gone_at[name] = time.monotonic()
                if len(gone_at) == runs:
                    stream.stop()
            elif (event["object"].get("status") or {}).get("phase") == "Passed" and name not in deleted_at:
                deleted_at[name] = time.monotonic()
                custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "testruns", name)

    watcher = threading.Thread(target=delete_when_passed, daemon=True)
    watcher.start()
    for _ in range(runs):
        chaos.run("kill-now")
    watcher.join(timeout=90)
    assert not watcher.is_alive(), f"not every TestRun went: deleted {sorted(deleted_at)}, gone {sorted(gone_at)}"
    held = {name: round(gone_at[name] - deleted_at[name], 2) for name in deleted_at}
    assert max(held.values()) < 8, f"seconds from the delete request to the finalizer's release: {held}"


def test_a_pod_kill_lists_by_metadata_and_still_spares_pods_not_running(chaos: Chaos, core: client.CoreV1Api) -> None:
    """A pod kill's selection asks the API server for metadata only, with the phase filtered there: a matching
    pod that is not Running is never chosen, and the target's own fieldSelector still applies."""
    ns = chaos.namespace
    node = core.list_node().items[0].metadata.name
    for name, node_name in (("a", node), ("b", node), ("c", node), ("pending", "no-such-node")):
        core.create_namespaced_pod(
            ns,
            client.V1Pod(
                metadata=client.V1ObjectMeta(name=f"bare-{name}", labels={"app": "bare"}),
                spec=client.V1PodSpec(node_name=node_name, containers=[client.V1Container(name="c", image="x")]),
            ),
        )
    wait_for(
        lambda: all(core.read_namespaced_pod(f"bare-{n}", ns).status.phase == "Running" for n in "abc"),
        timeout=30,
        description="the pods on a kwok node Running",
    )
    spec = pod_kill_spec({"app": "bare"}, mode="all", duration="0s")
    spec["target"]["fieldSelector"] = "metadata.name!=bare-c"
    chaos.scenario("kill-all-but-c", spec)
    status = chaos.wait_phase(chaos.run("kill-all-but-c"), "Passed")
    assert sorted(t["name"] for t in status["steps"][0]["targets"]) == ["bare-a", "bare-b"]
    for spared in ("bare-c", "bare-pending"):
        assert core.read_namespaced_pod(spared, ns).metadata.deletion_timestamp is None, spared
