"""Scheduled ChaosScenarios against the real API server: on time, CronJob's concurrency policies, history limits,
suspend, and no duplicate run across an operator crash."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client

from conftest import make_deployment, wait_ready
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, TERMINAL, VERSION, Chaos, pod_kill_spec

SCENARIO_LABEL = "chaos.coordinator.dev/scenario"


def scheduled(
    schedule: str, duration: str = "1s", labels: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    return {**pod_kill_spec(labels or {"app": "web"}, duration=duration), "schedule": schedule, **fields}


def runs_of(chaos: Chaos, scenario: str) -> dict[str, dict[str, Any]]:
    items = chaos.custom.list_namespaced_custom_object(
        GROUP, VERSION, chaos.namespace, "testruns", label_selector=f"{SCENARIO_LABEL}={scenario}"
    )["items"]
    return {item["metadata"]["name"]: item for item in items}


def scheduled_at(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def created_at(run: dict[str, Any]) -> float:
    return datetime.fromisoformat(run["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()


def iso_seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def patch_scenario(chaos: Chaos, name: str, spec: dict[str, Any]) -> None:
    chaos.custom.patch_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "chaosscenarios", name, {"spec": spec})


def scenario_status(chaos: Chaos, name: str) -> dict[str, Any]:
    obj = chaos.custom.get_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "chaosscenarios", name)
    return dict(obj.get("status") or {})


def stays(predicate: Callable[[], bool], seconds: float, description: str) -> None:
    """Assert that ``predicate`` holds throughout ``seconds`` (an absence, which no event can signal)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), description
        time.sleep(0.2)


@pytest.fixture
def web(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> Chaos:
    make_deployment(apps, chaos.namespace, "web")
    wait_ready(core, chaos.namespace, "web", 3)
    return chaos


def test_every_schedule_creates_owned_runs_on_time(web: Chaos) -> None:
    created = web.scenario("every", scheduled("@every 3s", runTemplate={"timeout": "1m"}))
    runs = wait_for(
        lambda: found if len(found := runs_of(web, "every")) >= 3 else None,
        timeout=30,
        description="three scheduled runs",
    )
    first_three = sorted(runs, key=scheduled_at)[:3]
    times = [scheduled_at(name) for name in first_three]
    assert all(t % 3 == 0 for t in times), "@every ticks are multiples of the interval"
    assert [b - a for a, b in itertools.pairwise(times)] == [3, 3], "one run per tick, none skipped"
    for name in first_three:
        run = runs[name]
        assert name == f"every-{scheduled_at(name)}"
        lateness = created_at(run) - scheduled_at(name)
        assert -1 < lateness <= 2, f"{name} created {lateness}s after its time"  # creationTimestamp has 1 s steps
        [owner] = run["metadata"]["ownerReferences"]
        assert owner["uid"] == created["metadata"]["uid"]
        assert owner["controller"] is True
        assert run["metadata"]["labels"][SCENARIO_LABEL] == "every"
        assert run["spec"]["timeout"] == "1m", "the run template is applied"
    for name in first_three:
        web.wait_phase(name, "Passed", timeout=30)
    status = scenario_status(web, "every")
    assert iso_seconds(status["nextScheduleTime"]) > iso_seconds(status["lastScheduleTime"])
    assert iso_seconds(status["lastScheduleTime"]) % 3 == 0
    assert "Scheduled" in web.events("every")


def test_forbid_never_overlaps_runs(web: Chaos) -> None:
    web.scenario("forbid", scheduled("@every 2s", duration="4s", concurrencyPolicy="Forbid"))
    runs = wait_for(
        lambda: found if len(found := runs_of(web, "forbid")) >= 3 else None,
        timeout=45,
        description="three Forbid runs",
    )
    names = sorted(runs, key=scheduled_at)[:3]
    for earlier, later in itertools.pairwise(names):
        done = web.wait_phase(earlier, "Passed", timeout=30)
        started = web.wait_phase(later, {"Running", *TERMINAL}, timeout=30)
        assert iso_seconds(started["startedAt"]) >= iso_seconds(done["completedAt"]), f"{later} overlapped {earlier}"
        assert scheduled_at(later) - scheduled_at(earlier) >= 4, "times that came while a run was active were skipped"


def test_replace_aborts_the_active_run(web: Chaos) -> None:
    web.scenario("replace", scheduled("@every 3s", duration="30s", concurrencyPolicy="Replace"))
    runs = wait_for(
        lambda: found if len(found := runs_of(web, "replace")) >= 2 else None,
        timeout=30,
        description="a second Replace run",
    )
    first, second = sorted(runs, key=scheduled_at)[:2]
    ended = web.wait_phase(first, "Cancelled", timeout=30)
    assert ended["reason"] == "Aborted"
    assert web.get_run(first)["spec"]["abort"] is True
    replaced_by_third = web.get_run(second)["spec"].get("abort", False)
    assert not replaced_by_third or len(runs_of(web, "replace")) > 2, "only a newer run replaces the second"
    assert "Replaced" in web.events("replace")


def test_allow_lets_runs_overlap(web: Chaos) -> None:
    web.scenario("allow", scheduled("@every 2s", duration="5s", concurrencyPolicy="Allow"))

    def overlapping() -> list[str]:
        running = [n for n, r in runs_of(web, "allow").items() if (r.get("status") or {}).get("phase") == "Running"]
        return running if len(running) >= 2 else []

    assert len(wait_for(overlapping, timeout=30, description="two runs of one scenario Running at once")) >= 2


def test_history_limits_prune_the_oldest_finished_runs(web: Chaos) -> None:
    web.scenario("keep-two", scheduled("@every 2s", successfulRunsHistoryLimit=2))
    web.scenario("keep-one-failure", scheduled("@every 2s", labels={"app": "nothing"}, failedRunsHistoryLimit=1))
    seen: dict[str, set[str]] = {"keep-two": set(), "keep-one-failure": set()}

    def pruned() -> bool:
        current = {scenario: runs_of(web, scenario) for scenario in seen}
        for scenario, runs in current.items():
            seen[scenario] |= set(runs)
        passed = [n for n, r in current["keep-two"].items() if (r.get("status") or {}).get("phase") == "Passed"]
        failed = [n for n, r in current["keep-one-failure"].items() if (r.get("status") or {}).get("phase") == "Failed"]
        return (
            len(seen["keep-two"]) >= 5 and len(seen["keep-one-failure"]) >= 4 and len(passed) == 2 and len(failed) == 1
        )

    wait_for(pruned, timeout=60, description="five runs created, two Passed and one Failed kept")
    finished = sorted(
        (n for n, r in runs_of(web, "keep-two").items() if (r.get("status") or {}).get("phase") == "Passed"),
        key=scheduled_at,
    )
    oldest_kept = scheduled_at(finished[0])
    gone = seen["keep-two"] - set(runs_of(web, "keep-two"))
    assert gone, "older runs were deleted"
    assert all(scheduled_at(name) < oldest_kept for name in gone), "the oldest runs go first"


def test_suspend_stops_scheduling_and_resuming_runs_no_burst(web: Chaos) -> None:
    web.scenario("pausable", scheduled("@every 2s"))
    wait_for(lambda: runs_of(web, "pausable"), timeout=20, description="a first run")
    patch_scenario(web, "pausable", {"suspend": True})
    wait_for(
        lambda: "nextScheduleTime" not in scenario_status(web, "pausable"),
        timeout=10,
        description="the suspension observed (no next schedule time)",
    )
    before = set(runs_of(web, "pausable"))
    stays(lambda: set(runs_of(web, "pausable")) == before, 6, "no run is created while suspended")

    resumed = time.time()
    patch_scenario(web, "pausable", {"suspend": False})
    new = wait_for(lambda: set(runs_of(web, "pausable")) - before, timeout=10, description="a run after resuming")
    [catch_up] = sorted(new, key=scheduled_at)[:1]
    assert scheduled_at(catch_up) >= resumed - 2, "the run is for the most recent time, not a missed old one"
    missed = [n for n in runs_of(web, "pausable") if n not in before and scheduled_at(n) < resumed - 2]
    assert missed == [], "the times missed while suspended are not run"


def test_an_operator_crash_creates_no_duplicate_run(web: Chaos, running_operator: OperatorProcess) -> None:
    web.scenario("crashy", scheduled("@every 2s"))
    wait_for(lambda: len(runs_of(web, "crashy")) >= 2, timeout=20, description="two runs before the crash")
    running_operator.kill()
    running_operator.start()
    restarted = time.time()

    def two_after_restart() -> dict[str, dict[str, Any]] | None:
        found = runs_of(web, "crashy")
        return found if len([n for n in found if scheduled_at(n) > restarted]) >= 2 else None

    runs = wait_for(two_after_restart, timeout=30, description="two runs after the restart")
    times = sorted(scheduled_at(name) for name in runs)
    assert all(t % 2 == 0 for t in times)
    resumed = [t for t in times if t > restarted]
    assert all(b - a == 2 for a, b in itertools.pairwise(resumed)), "after the restart, one run per tick again"
    # A run created late is a catch-up for a time the operator missed while it was down: at most one, no burst.
    late = [name for name, run in runs.items() if created_at(run) - scheduled_at(name) > 2]
    assert len(late) <= 1, f"one catch-up run at most, got {late}"
    for name in sorted(runs, key=scheduled_at)[-2:]:
        web.wait_phase(name, "Passed", timeout=30)


WORKFLOW_LABEL = "chaos.coordinator.dev/workflow"


def test_a_scheduled_workflow_creates_workflow_runs_it_owns(web: Chaos) -> None:
    """A ChaosWorkflow's schedule works as a scenario's: the runs name the workflow (spec.workflowRef), carry its
    label and are owned by it. (Executing them is the workflow engine's, tests/e2e/test_workflows.py.)"""
    web.scenario("kill-one", pod_kill_spec({"app": "web"}))
    created = web.custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        web.namespace,
        "chaosworkflows",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ChaosWorkflow",
            "metadata": {"name": "nightly-gameday"},
            "spec": {
                "schedule": "@every 3s",
                "runTemplate": {"timeout": "1m"},
                "nodes": [{"name": "kill", "scenarioRef": {"name": "kill-one"}}],
            },
        },
    )

    def workflow_runs() -> list[dict[str, Any]]:
        return list(
            web.custom.list_namespaced_custom_object(
                GROUP, VERSION, web.namespace, "testruns", label_selector=f"{WORKFLOW_LABEL}=nightly-gameday"
            )["items"]
        )

    run = wait_for(lambda: next(iter(workflow_runs()), None), timeout=20, description="a scheduled workflow run")
    web.custom.patch_namespaced_custom_object(
        GROUP, VERSION, web.namespace, "chaosworkflows", "nightly-gameday", {"spec": {"suspend": True}}
    )
    name = run["metadata"]["name"]
    assert name == f"nightly-gameday-{scheduled_at(name)}"
    assert scheduled_at(name) % 3 == 0
    assert run["spec"]["workflowRef"] == {"name": "nightly-gameday"}
    assert "scenarioRef" not in run["spec"]
    assert run["spec"]["timeout"] == "1m", "the run template is applied"
    assert SCENARIO_LABEL not in run["metadata"]["labels"]
    [owner] = run["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("ChaosWorkflow", created["metadata"]["uid"], True)
    status = wait_for(
        lambda: (
            found
            if (
                found := web.custom.get_namespaced_custom_object(
                    GROUP, VERSION, web.namespace, "chaosworkflows", "nightly-gameday"
                ).get("status")
                or {}
            ).get("lastScheduleTime")
            else None
        ),
        timeout=10,
        description="the workflow's schedule status",
    )
    assert iso_seconds(status["lastScheduleTime"]) >= scheduled_at(name)
    assert "Scheduled" in web.events("nightly-gameday")
