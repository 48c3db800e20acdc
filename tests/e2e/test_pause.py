"""The emergency stop on the real API server: the label chaos.coordinator.dev/paused=true, set and cleared by
``coordinator pause`` / ``coordinator resume``.

An operator of its own, with an operator namespace of its own (the cluster-wide pause is the label there), serves
two namespaces: ``paused`` with 50 pod-failure runs held for minutes, ``other`` with runs that must go on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from conftest import OPT_IN, make_deployment, own_operator, wait_ready
from coordinator.api.models import PAUSED_LABEL, REQUESTED_BY_ANNOTATION, Requester
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, TERMINAL, VERSION, Chaos

RUNS = 50
ADMIN = Requester(username="kubernetes-admin", groups=["system:masters", "system:authenticated"]).to_annotation()
# One pod per run (named by the parameter), held far longer than the test: only the pause ends these runs.
FAIL_ONE = {
    "parameters": [
        {"name": "pod", "type": "string", "description": "The pod to break."},
        {"name": "hold", "type": "duration", "default": "10m", "description": "How long the fault holds."},
    ],
    "target": {"kind": "Pod", "names": ["{{ params.pod }}"]},
    "mode": "all",
    "steps": [{"name": "break", "duration": "{{ params.hold }}", "faults": [{"type": "pod-failure"}]}],
}


@dataclass
class Setup:
    paused: Chaos  # the namespace the tests pause
    other: Chaos  # a namespace served by the same operator, never paused by name
    system: str  # the operator's own namespace (COORDINATOR_NAMESPACE): its label pauses the cluster
    kubeconfig: Path


@pytest.fixture(scope="module")
def setup(kubeconfig: Path, crds_installed: list[str], api_client: client.ApiClient) -> Iterator[Setup]:
    core = client.CoreV1Api(api_client)
    system = f"pz-system-{uuid.uuid4().hex[:5]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=system)))
    try:
        with own_operator(kubeconfig, api_client, core, "paused", {"COORDINATOR_NAMESPACE": system}) as paused:
            other = f"{paused.namespace.split('-')[0]}-other"
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other, labels=OPT_IN)))
            try:
                apps = client.AppsV1Api(api_client)
                made = Setup(paused, Chaos(api_client, other), system, kubeconfig)
                for chaos, replicas in ((made.paused, RUNS), (made.other, 2)):
                    make_deployment(apps, chaos.namespace, "web", replicas=replicas)
                    chaos.scenario("fail-one", FAIL_ONE)
                for chaos, replicas in ((made.paused, RUNS), (made.other, 2)):
                    wait_ready(core, chaos.namespace, "web", replicas)
                yield made
            finally:
                core.delete_namespace(other)
                wait_for(
                    lambda: other not in {ns.metadata.name for ns in core.list_namespace().items},
                    timeout=120,
                    description=f"namespace {other} deleted",
                )
    finally:
        core.delete_namespace(system)


def coordinator(*args: str, kubeconfig: Path, system: str | None = None) -> subprocess.CompletedProcess[str]:
    """The ``coordinator`` command line, as a user runs it (the operator's namespace from COORDINATOR_NAMESPACE)."""
    env = {**os.environ, **({"COORDINATOR_NAMESPACE": system} if system else {})}
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def start_run(chaos: Chaos, pod: str, hold: str = "10m") -> str:
    name = f"run-{uuid.uuid4().hex[:6]}"
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestRun",
        "metadata": {"name": name, "annotations": {REQUESTED_BY_ANNOTATION: ADMIN}},
        "spec": {"scenarioRef": {"name": "fail-one"}, "parameters": {"pod": pod, "hold": hold}},
    }
    chaos.custom.create_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns", body)
    return name


def statuses(chaos: Chaos) -> dict[str, dict[str, Any]]:
    runs = chaos.custom.list_namespaced_custom_object(GROUP, VERSION, chaos.namespace, "testruns")["items"]
    return {run["metadata"]["name"]: run.get("status") or {} for run in runs}


def held(status: dict[str, Any]) -> bool:
    steps = status.get("steps") or []
    return status.get("phase") == "Running" and bool(steps) and steps[0].get("outcome") == "Injected"


def wait_held(chaos: Chaos, names: list[str], timeout: float) -> None:
    def all_held() -> bool:
        now = statuses(chaos)
        ended = {n: now[n].get("message") for n in names if now[n].get("phase") in TERMINAL}
        assert not ended, f"runs ended before the pause: {ended}"
        return all(held(now[n]) for n in names)

    wait_for(all_held, timeout=timeout, interval=1, description=f"{len(names)} runs holding their fault")


def broken_pods(core: client.CoreV1Api, namespace: str) -> list[str]:
    """Pods still carrying a record of ours or the pod-failure image."""
    out = []
    for pod in core.list_namespaced_pod(namespace).items:
        records = [k for k in pod.metadata.annotations or {} if k.startswith("chaos.coordinator.dev/")]
        if records or any("pod-failure" in c.image for c in pod.spec.containers):
            out.append(pod.metadata.name)
    return out


def pods_of(core: client.CoreV1Api, namespace: str, replicas: int) -> list[str]:
    return sorted(p.metadata.name for p in wait_ready(core, namespace, "web", replicas).values())


def test_pausing_a_namespace_reverts_its_50_runs_holds_new_ones_and_leaves_others_alone(
    setup: Setup, core: client.CoreV1Api
) -> None:
    paused, other = setup.paused, setup.other
    targets, elsewhere = pods_of(core, paused.namespace, RUNS), pods_of(core, other.namespace, 2)
    runs = [start_run(paused, pod) for pod in targets]
    others = [start_run(other, pod) for pod in elsewhere]
    wait_held(paused, runs, timeout=240)
    wait_held(other, others, timeout=60)
    assert len(broken_pods(core, paused.namespace)) == RUNS

    done = coordinator("pause", "--namespace", paused.namespace, kubeconfig=setup.kubeconfig)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"paused namespace {paused.namespace} (label {PAUSED_LABEL}=true"), done.stdout
    assert core.read_namespace(paused.namespace).metadata.labels[PAUSED_LABEL] == "true"

    def all_cancelled() -> bool:
        return all(statuses(paused)[n].get("phase") in TERMINAL for n in runs)

    wait_for(all_cancelled, timeout=60, interval=0.5, description="the paused namespace's runs ended")
    for name, status in statuses(paused).items():
        assert (status["phase"], status["reason"]) == ("Cancelled", "Paused"), (name, status.get("message"))
        assert status["message"] == (
            f"paused: namespace {paused.namespace} carries the label {PAUSED_LABEL}=true; every fault was reverted"
        )
        assert [i["state"] for i in status["injections"]] == ["Reverted"], name
    assert broken_pods(core, paused.namespace) == []
    # Elsewhere nothing changed: the runs still hold their faults.
    assert all(held(status) for status in statuses(other).values())
    assert len(broken_pods(core, other.namespace)) == 2

    # A new run waits while paused, and starts once resumed.
    waiting = start_run(paused, targets[0], hold="1s")
    wait_for(lambda: paused.status(waiting).get("reason") == "Paused", timeout=30, description="reason Paused")
    assert paused.status(waiting)["message"] == (
        f"paused: namespace {paused.namespace} carries the label {PAUSED_LABEL}=true; the run starts once it is "
        f"removed (coordinator resume --namespace {paused.namespace})"
    )
    assert "Paused" in paused.events(waiting)
    done = coordinator("resume", "--namespace", paused.namespace, kubeconfig=setup.kubeconfig)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"resumed namespace {paused.namespace}"), done.stdout
    assert PAUSED_LABEL not in (core.read_namespace(paused.namespace).metadata.labels or {})
    status = paused.wait_phase(waiting, "Passed", timeout=60)
    assert [i["state"] for i in status["injections"]] == ["Reverted"]

    for name in others:  # done with them
        other.custom.patch_namespaced_custom_object(
            GROUP, VERSION, other.namespace, "testruns", name, {"spec": {"abort": True}}
        )
    for name in others:
        other.wait_phase(name, "Cancelled", timeout=60)


def test_the_operators_namespace_pauses_every_run_of_the_cluster(setup: Setup, core: client.CoreV1Api) -> None:
    other = setup.other
    pods = pods_of(core, other.namespace, 2)
    runs = [start_run(other, pod) for pod in pods]
    wait_held(other, runs, timeout=60)

    done = coordinator("pause", kubeconfig=setup.kubeconfig, system=setup.system)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"paused the whole cluster (label {PAUSED_LABEL}=true on the operator's namespace {setup.system})"
    ), done.stdout
    for name in runs:
        status = other.wait_phase(name, "Cancelled", timeout=30)
        assert status["reason"] == "Paused"
        assert status["message"].startswith(f"paused cluster-wide: the operator's namespace {setup.system}")
    assert broken_pods(core, other.namespace) == []

    waiting = start_run(setup.paused, pods_of(core, setup.paused.namespace, RUNS)[0], hold="1s")
    wait_for(
        lambda: setup.paused.status(waiting).get("reason") == "Paused",
        timeout=30,
        description="a new run waits, in a namespace not paused by name",
    )
    assert "(coordinator resume)" in setup.paused.status(waiting)["message"]
    again = coordinator("pause", kubeconfig=setup.kubeconfig, system=setup.system)
    assert again.returncode == 0, again.stderr
    assert "already paused" in again.stdout, again.stdout

    done = coordinator("resume", kubeconfig=setup.kubeconfig, system=setup.system)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("resumed the whole cluster"), done.stdout
    setup.paused.wait_phase(waiting, "Passed", timeout=60)
    again = coordinator("resume", kubeconfig=setup.kubeconfig, system=setup.system)
    assert again.returncode == 0, again.stderr
    assert "was not paused" in again.stdout, again.stdout


def token_kubeconfig(core: client.CoreV1Api, admin: Path, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for the same API server that authenticates as a ServiceAccount with no rights at all."""
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = core.create_namespaced_service_account_token(account, namespace, request).status.token
    admin_config = yaml.safe_load(admin.read_text())
    contexts = {c["name"]: c["context"] for c in admin_config["contexts"]}
    cluster_name = contexts[admin_config["current-context"]]["cluster"]
    cluster = next(c["cluster"] for c in admin_config["clusters"] if c["name"] == cluster_name)
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [{"name": "user", "context": {"cluster": "local", "user": account}}],
                "current-context": "user",
            }
        )
    )
    return path


def test_the_commands_refuse_clearly(setup: Setup, core: client.CoreV1Api, tmp_path: Path) -> None:
    missing = coordinator("pause", "--namespace", "pz-no-such-namespace", kubeconfig=setup.kubeconfig)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: cannot pause: namespace pz-no-such-namespace not found"
    no_system = coordinator("resume", kubeconfig=setup.kubeconfig, system="pz-no-such-system")
    assert no_system.returncode == 1
    assert "the operator's namespace pz-no-such-system not found (set COORDINATOR_NAMESPACE" in no_system.stderr

    nobody = token_kubeconfig(core, setup.kubeconfig, setup.system, "nobody", tmp_path / "nobody.kubeconfig")
    refused = coordinator("pause", "--namespace", setup.other.namespace, kubeconfig=nobody)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"error: cannot pause: not allowed to label namespace {setup.other.namespace}: ")
    assert "forbidden" in refused.stderr
    assert PAUSED_LABEL not in (core.read_namespace(setup.other.namespace).metadata.labels or {})
