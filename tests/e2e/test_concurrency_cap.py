"""COORDINATOR_MAX_CONCURRENT_RUNS: excess runs wait in Pending (reason Queued) and start when a slot frees.

The cap needs an operator of its own: this test starts one with the cap set, watching only a namespace whose
prefix the session operator does not serve.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from kubernetes import client

from conftest import make_deployment, own_operator, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos, pod_kill_spec


@pytest.fixture
def capped(
    kubeconfig: Path, crds_installed: list[str], api_client: client.ApiClient, core: client.CoreV1Api
) -> Iterator[Chaos]:
    """An opted-in namespace served by an operator with COORDINATOR_MAX_CONCURRENT_RUNS=1."""
    with own_operator(kubeconfig, api_client, core, "capped", {"COORDINATOR_MAX_CONCURRENT_RUNS": "1"}) as chaos:
        yield chaos


def _time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_runs_beyond_the_cap_are_queued_then_started(
    capped: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    ns = capped.namespace
    make_deployment(apps, ns, "web")
    wait_ready(core, ns, "web", 3)
    capped.scenario("kill", pod_kill_spec({"app": "web"}, duration="3s"))
    first, second = capped.run("kill", name="first"), capped.run("kill", name="second")

    seen: dict[str, set[str]] = {first: set(), second: set()}
    both_running = []

    def observe() -> bool:
        phases = {}
        for name in seen:
            status = capped.status(name)
            phases[name] = status.get("phase")
            seen[name].add(f"{status.get('phase')}/{status.get('reason')}")
        if all(phase == "Running" for phase in phases.values()):
            both_running.append(phases)
        return all(phase == "Passed" for phase in phases.values())

    wait_for(observe, timeout=120, interval=0.1, description="both runs Passed, one after the other")
    assert not both_running, "never both Running under a cap of one"
    queued = [name for name, states in seen.items() if "Pending/Queued" in states]
    assert queued, f"a run waited in Pending with reason Queued: {seen}"
    assert "Queued" in capped.events(queued[0])
    earlier, later = sorted((capped.status(name) for name in seen), key=lambda status: _time(status["startedAt"]))
    assert _time(later["startedAt"]) >= _time(earlier["completedAt"]), "the queued run started after the other ended"
