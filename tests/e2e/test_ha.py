"""Two replicas on one Lease: only the leader executes; kill -9 it mid-run and the standby finishes the run, with
every change applied exactly once and reverted."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from conftest import make_deployment, wait_ready
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.namespaces import OPT_IN, ForeignNamespaces

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE_DURATION = 6  # seconds; the standby takes over this long after the leader's last renewal


@pytest.fixture
def log_dir(request: pytest.FixtureRequest) -> Path:
    return REPO_ROOT / ".test-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{request.node.name}"


@pytest.fixture
def ha_namespaces(api_client: client.ApiClient, crds_installed: list[str]) -> Iterator[ForeignNamespaces]:
    with ForeignNamespaces(api_client, "ha") as namespaces:
        yield namespaces


def _replica(
    kubeconfig: Path, log_dir: Path, name: str, system: str, target: str, instance: str, ready_text: str
) -> OperatorProcess:
    env = {
        "COORDINATOR_INSTANCE_NAME": instance,
        "COORDINATOR_NAMESPACE": system,
        "COORDINATOR_IDENTITY": name,
        "COORDINATOR_LEADER_ELECTION": "true",
        "COORDINATOR_LEADER_ELECTION_LEASE_DURATION": str(LEASE_DURATION),
        "COORDINATOR_LEADER_ELECTION_RENEW_DEADLINE": "4",
        "COORDINATOR_LEADER_ELECTION_RETRY_PERIOD": "1",
        "COORDINATOR_HISTORY_PATH": str(log_dir / f"{name}-history.db"),
    }
    return OperatorProcess(kubeconfig, log_dir, env=env, namespaces=[target], name=name, ready_text=ready_text)


def _leader_gauge(proc: OperatorProcess) -> float:
    with urllib.request.urlopen(f"{proc.metrics_url}/metrics", timeout=5) as resp:  # noqa: S310 - loopback
        for line in resp.read().decode().splitlines():
            if line.startswith("coordinator_leader{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no coordinator_leader series")


def _log_records(proc: OperatorProcess, starts: int | None = None) -> list[dict[str, Any]]:
    path = proc.log_path if starts is None else proc.log_dir / f"{proc.name}-{starts}.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_standby_takes_over_a_run_when_the_leader_is_killed(
    kubeconfig: Path,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    ha_namespaces: ForeignNamespaces,
    log_dir: Path,
) -> None:
    system = ha_namespaces.make("system")
    target = ha_namespaces.make(labels=OPT_IN)
    instance = ha_namespaces.base
    leader = _replica(kubeconfig, log_dir, "replica-a", system, target, instance, "operator ready")
    standby = _replica(kubeconfig, log_dir, "replica-b", system, target, instance, "standing by")
    leader.start()
    standby.start()
    try:
        coordination = client.CoordinationV1Api(api_client)
        lease = coordination.read_namespaced_lease(f"{instance}-leader", system)
        assert lease.spec.holder_identity == "replica-a"
        assert _leader_gauge(leader) == 1
        assert _leader_gauge(standby) == 0

        make_deployment(apps, target, "web", replicas=3)
        wait_ready(core, target, "web", 3)
        chaos = Chaos(api_client, target)
        chaos.scenario(
            "scale-down",
            {
                "target": {"kind": "Deployment", "names": ["web"]},
                "mode": "all",
                "steps": [{"name": "s", "duration": "10s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
            },
        )
        run = chaos.run("scale-down")
        injected = chaos.wait_step(run, 0, "Injected", timeout=30)
        assert apps.read_namespaced_deployment("web", target).spec.replicas == 1

        leader.kill()
        killed_at = time.monotonic()
        wait_for(
            lambda: "leadership acquired" in standby.log_path.read_text(),
            timeout=LEASE_DURATION + 10,
            description="the standby to take the lease over",
        )
        took_over = time.monotonic() - killed_at
        assert took_over < LEASE_DURATION + 5, took_over
        status = chaos.wait_phase(run, "Passed", timeout=40)
        assert time.monotonic() - killed_at < 30, "failover and the rest of the run within 30 s"

        # Exactly one change, applied once (by the old leader) and reverted once (by the new one).
        (entry,) = status["injections"]
        assert entry["state"] == "Reverted"
        assert entry["appliedAt"] == injected["injections"][0]["appliedAt"], "never re-applied after the failover"
        ids = [i["id"] for i in status["injections"]]
        assert len(ids) == len(set(ids))
        assert apps.read_namespaced_deployment("web", target).spec.replicas == 3
        assert chaos.events("web").count("ChaosInjected") == 1
        assert chaos.events("web").count("ChaosReverted") == 1
        assert status["steps"][0]["outcome"] == "Reverted"

        lease = coordination.read_namespaced_lease(f"{instance}-leader", system)
        assert lease.spec.holder_identity == "replica-b"
        assert lease.spec.lease_transitions >= 1
        assert _leader_gauge(standby) == 1

        # Who did what: the killed leader injected; the new leader only reverted and finished.
        b_events = [r["event"] for r in _log_records(standby) if r.get("run") == run]
        assert "fault injected" not in b_events
        assert "fault reverted" in b_events
        assert "run finished" in b_events
        a_events = [r["event"] for r in _log_records(leader) if r.get("run") == run]
        assert "fault injected" in a_events
        assert "run finished" not in a_events
    finally:
        leader.stop()
        standby.stop()


def test_a_clean_shutdown_hands_the_lease_over_at_once(
    kubeconfig: Path, api_client: client.ApiClient, ha_namespaces: ForeignNamespaces, log_dir: Path
) -> None:
    system = ha_namespaces.make("system")
    target = ha_namespaces.make(labels=OPT_IN)
    instance = ha_namespaces.base
    leader = _replica(kubeconfig, log_dir, "replica-a", system, target, instance, "operator ready")
    standby = _replica(kubeconfig, log_dir, "replica-b", system, target, instance, "standing by")
    leader.start()
    standby.start()
    try:
        leader.stop()
        stopped_at = time.monotonic()
        assert leader.proc is not None
        assert leader.proc.returncode == 0
        wait_for(
            lambda: "leadership acquired" in standby.log_path.read_text(),
            timeout=LEASE_DURATION,
            description="the standby to take the lease",
        )
        # Had the lease merely expired, the standby would wait at least LEASE_DURATION - RETRY_PERIOD (5 s) from
        # the leader's last renewal; a released lease is taken at the standby's next attempt (1-1.2 s).
        assert time.monotonic() - stopped_at < 3.5, "released, not expired"
        wait_for(
            lambda: "operator ready" in standby.log_path.read_text(), timeout=30, description="the standby to lead"
        )
        released = [r for r in _log_records(leader) if r["event"].startswith("leadership released")]
        assert released
    finally:
        leader.stop()
        standby.stop()
