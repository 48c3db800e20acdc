"""Target locks that never lie: three scale runs on one Deployment while the lock store (a real Redis) goes down
and comes back empty. The Deployment ends at its original replicas, and no two runs ever changed it at once.

This module runs its own operator (its own Redis, instance name and namespace prefix), so the Redis outage
touches nothing else.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from conftest import SESSION_PREFIX, make_deployment, own_operator_namespace, wait_ready
from coordinator.testing.process import OperatorProcess
from coordinator.testing.servers import RedisServer
from coordinator.testing.waiting import wait_for
from support.chaos import TERMINAL, Chaos

REPO = Path(__file__).resolve().parents[2]
NAMESPACE_PREFIX = f"{SESSION_PREFIX}l"  # not matched by the session operator's "<prefix>-*"


@pytest.fixture(scope="module")
def lock_store() -> Iterator[RedisServer]:
    """A Redis of this module's own, stopped and started again by the test."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def locked_operator(kubeconfig: Path, crds_installed: list[str], lock_store: RedisServer) -> Iterator[OperatorProcess]:
    log_dir = REPO / ".test-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-locks"
    operator = OperatorProcess(
        kubeconfig,
        log_dir,
        namespaces=[f"{NAMESPACE_PREFIX}-*"],
        env={
            "COORDINATOR_REDIS_URL": lock_store.url,
            "COORDINATOR_INSTANCE_NAME": f"locks-{uuid.uuid4().hex[:6]}",
            "COORDINATOR_HISTORY_PATH": str(log_dir / "history.db"),
        },
        name="locks-operator",
    )
    operator.start()
    yield operator
    if lock_store.proc is None or lock_store.proc.poll() is not None:
        lock_store.start()
    operator.stop()


@pytest.fixture
def lock_namespace(core: client.CoreV1Api, locked_operator: OperatorProcess) -> Iterator[str]:
    with own_operator_namespace(core, f"{NAMESPACE_PREFIX}-overlap-{uuid.uuid4().hex[:6]}") as name:
        yield name


def _scale(replicas: int, duration: str) -> dict[str, Any]:
    return {
        "target": {"kind": "Deployment", "names": ["web"]},
        "mode": "all",
        "steps": [
            {"name": "scale", "duration": duration, "faults": [{"type": "scale", "scale": {"replicas": replicas}}]}
        ],
    }


def _stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _windows(status: dict[str, Any]) -> list[tuple[float, float]]:
    """When the run's changes were on the target: applied to reverted."""
    return [
        (_stamp(i["appliedAt"]), _stamp(i["revertedAt"]))
        for i in status.get("injections") or []
        if i.get("appliedAt") and i.get("revertedAt")
    ]


def test_three_scale_runs_through_a_lock_store_outage_leave_the_original_replicas(
    lock_namespace: str,
    lock_store: RedisServer,
    locked_operator: OperatorProcess,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
) -> None:
    ns = lock_namespace
    chaos = Chaos(api_client, ns)
    make_deployment(apps, ns, "web", replicas=3)
    wait_ready(core, ns, "web", 3)
    chaos.scenario("to-one", _scale(1, "90s"))
    chaos.scenario("to-two", _scale(2, "4s"))
    chaos.scenario("to-zero", _scale(0, "4s"))
    log_start = len(locked_operator.log_path.read_text(errors="replace"))

    first = chaos.run("to-one", name="first")
    chaos.wait_step(first, 0, "Injected", timeout=60)
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1

    lock_store.stop()
    try:
        second = chaos.run("to-two", name="second")
        third = chaos.run("to-zero", name="third")
        # Fail closed: while the lock store is away nobody takes the target, and the runs say why they wait.
        waiting = wait_for(
            lambda: all(chaos.status(n).get("reason") == "WaitingForTarget" for n in (second, third)),
            timeout=30,
            description="the second and third runs waiting, saying so in their status",
        )
        assert waiting
        assert "lock store is unreachable" in chaos.status(second)["message"]
        assert apps.read_namespaced_deployment("web", ns).spec.replicas == 1, "nobody else touched web"
        time.sleep(3)
    finally:
        lock_store.start()  # back on the same port, empty: every lock it held is gone

    statuses = {name: chaos.wait_phase(name, TERMINAL, timeout=150) for name in (first, second, third)}

    # The first run's lock lapsed during the outage: it stopped injecting and reverted.
    assert (statuses[first]["phase"], statuses[first]["reason"]) == ("Error", "TargetLockLost")
    assert statuses[second]["phase"] == statuses[third]["phase"] == "Passed"
    # Every run recorded the true original, and the Deployment is back at it.
    originals = {name: [i.get("original") for i in s["injections"]] for name, s in statuses.items()}
    assert originals == {name: ['{"replicas": 3}'] for name in statuses}, originals
    assert apps.read_namespaced_deployment("web", ns).spec.replicas == 3
    # No two runs had their change on web at the same time.
    windows = sorted(w for s in statuses.values() for w in _windows(s))
    assert len(windows) == 3
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start >= end, f"two runs held web at once: {windows}"
    # Waiting for a lock is no ERROR: nothing a person must act on.
    log = locked_operator.log_path.read_text(errors="replace")[log_start:]
    errors = [line for line in log.splitlines() if '"level": "error"' in line]
    assert not errors, "\n".join(errors[:10])
