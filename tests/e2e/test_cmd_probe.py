"""cmd probes (issue 23, item 5) run by the operator on the kwok cluster.

kwok nodes run no containers: a probe Pod becomes Running and would stay so. So the test plays the kubelet: once a
probe Pod runs, it writes the container's end (an exit code) into the Pod's status, as a kubelet would. What the
operator does is real: it creates the Pod (restricted, owned by the TestRun, on the node the probe asks for),
follows its status, judges the exit code and deletes the Pod. The command itself runs on the real node
(tests/real/test_real_probes.py). The requester's right to create pods is checked at admission.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from conftest import make_deployment, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import GROUP, VERSION, Chaos
from support.examples import CONTAINER_PROBE_EXAMPLES, WORKLOAD, in_namespace, kubectl_apply, load_docs
from support.identities import user_kubeconfig

pytestmark = pytest.mark.e2e

PROBE_LABEL = "chaos.coordinator.dev/probe"
KWOK_NODE = "kwok-node-1"


class Kubelet:
    """Ends every probe Pod of ``namespace`` once kwok made it Running: the n-th one's container exits with
    ``exit_codes[n]`` (the last one for every later Pod). Keeps each Pod as it was first seen Running (what the
    operator created)."""

    def __init__(self, core: client.CoreV1Api, namespace: str, *exit_codes: int) -> None:
        self.core = core
        self.namespace = namespace
        self.exit_codes = exit_codes
        self.seen: dict[str, client.V1Pod] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pod in self.core.list_namespaced_pod(self.namespace, label_selector=PROBE_LABEL).items:
                name = pod.metadata.name
                if name in self.seen or pod.status.phase != "Running" or not pod.status.pod_ip:
                    continue
                exit_code = self.exit_codes[min(len(self.seen), len(self.exit_codes) - 1)]
                self.seen[name] = pod
                phase = "Succeeded" if exit_code == 0 else "Failed"
                terminated = {"exitCode": exit_code, "reason": "Completed" if phase == "Succeeded" else "Error"}
                status = {
                    "phase": phase,
                    "containerStatuses": [
                        {
                            "name": "probe",
                            "image": pod.spec.containers[0].image,
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {"terminated": terminated},
                        }
                    ],
                }
                try:
                    self.core.patch_namespaced_pod_status(name, self.namespace, {"status": status})
                except ApiException as exc:
                    if exc.status != 404:  # deleted since (the sample timed out)
                        raise


def _probe(mode: str, **cmd: Any) -> dict[str, Any]:
    return {
        "name": "rows",
        "type": "cmd",
        "mode": mode,
        "timeout": "20s",
        "cmd": {
            "image": "postgres:16",
            "command": ["psql", "-tAc", "select count(*) from orders"],
            "runAsUser": 999,
            "nodeSelector": {"kubernetes.io/hostname": KWOK_NODE},
            **cmd,
        },
    }


def _scenario(probe: dict[str, Any]) -> dict[str, Any]:
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "one",
        "steps": [{"name": "kill", "duration": "1s", "faults": [{"type": "pod-kill"}]}],
        "steadyState": {"probes": [probe]},
        "assertions": [{"name": "orders-consistent", "type": "data_consistency", "probe": "rows"}],
    }


@pytest.fixture
def web(chaos: Chaos, apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=2)
    wait_ready(core, chaos.namespace, "web", 2)


def probe_pods(core: client.CoreV1Api, namespace: str) -> list[str]:
    return [p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=PROBE_LABEL).items]


@pytest.mark.usefixtures("web")
def test_a_probe_pod_is_created_restricted_owned_and_deleted_and_its_exit_code_passes(
    chaos: Chaos, core: client.CoreV1Api
) -> None:
    ns = chaos.namespace
    chaos.scenario("orders", _scenario(_probe("edge", env=[{"name": "PGHOST", "value": "db"}])))
    with Kubelet(core, ns, 0) as kubelet:
        run = chaos.run("orders")
        status = chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=90)
    assert status["phase"] == "Passed", status.get("message")
    (result,) = status["probes"]
    assert result["type"] == "cmd"
    assert result["samples"] == 2  # before and after
    assert result["lastValue"] == "exit code 0"
    assert result["latencyP50Ms"] > 0
    (assertion,) = status["assertions"]
    assert assertion["passed"] is True
    assert assertion["actual"] == "Passed"

    assert kubelet.seen, "no probe Pod ran"
    uid = chaos.get_run(run)["metadata"]["uid"]
    for pod in kubelet.seen.values():
        assert pod.metadata.labels["app.kubernetes.io/managed-by"] == "test-coordinator"
        assert pod.metadata.labels["chaos.coordinator.dev/test-run"] == run
        (owner,) = pod.metadata.owner_references
        assert (owner.kind, owner.name, owner.uid) == ("TestRun", run, uid)
        assert pod.spec.restart_policy == "Never"
        assert pod.spec.active_deadline_seconds == 20
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.node_name == KWOK_NODE
        (container,) = pod.spec.containers
        assert container.command == ["psql", "-tAc", "select count(*) from orders"]
        assert [(e.name, e.value) for e in container.env] == [("PGHOST", "db")]
        security = container.security_context
        assert security.run_as_non_root is True
        assert security.run_as_user == 999
        assert security.allow_privilege_escalation is False
        assert security.capabilities.drop == ["ALL"]
        assert security.seccomp_profile.type == "RuntimeDefault"
    wait_for(lambda: not probe_pods(core, ns), timeout=20, description="every probe Pod deleted")


@pytest.mark.usefixtures("web")
def test_a_command_failing_while_the_fault_holds_fails_the_probe_and_the_data_consistency_assertion(
    chaos: Chaos, core: client.CoreV1Api
) -> None:
    """The first sample (taken while the step holds) exits 3, every later one 0: the run recovers, and its verdict
    says the data was inconsistent during the fault. (A command that never passes again keeps the run waiting for
    recovery until its timeout, as any probe does.)"""
    ns = chaos.namespace
    chaos.scenario("orders", _scenario({**_probe("during"), "interval": "1s"}))
    with Kubelet(core, ns, 3, 0):
        status = chaos.wait_phase(chaos.run("orders"), {"Passed", "Failed", "Error"}, timeout=90)
    assert status["phase"] == "Failed", status.get("message")
    assert status["reason"] == "ProbeFailed", status
    (result,) = status["probes"]
    assert result["failed"] == 1, result
    (assertion,) = status["assertions"]
    assert assertion["passed"] is False
    assert assertion["message"] == "probe rows: exit code 3, want 0"
    wait_for(lambda: not probe_pods(core, ns), timeout=20, description="every probe Pod deleted")


@pytest.mark.usefixtures("web")
def test_a_pod_that_never_ends_fails_the_sample_at_its_time_limit(chaos: Chaos, core: client.CoreV1Api) -> None:
    # No kubelet here: kwok leaves the Pod Running, and the sample must not pass for it.
    ns = chaos.namespace
    probe = {**_probe("before"), "timeout": "2s"}
    chaos.scenario("orders", _scenario(probe))
    status = chaos.wait_phase(chaos.run("orders"), {"Passed", "Failed", "Error"}, timeout=60)
    assert status["phase"] == "Failed", status.get("message")
    assert "steady state not met before any fault" in status["message"]
    assert "no end within 2s (phase Running)" in status["probes"][0]["lastError"]
    wait_for(lambda: not probe_pods(core, ns), timeout=20, description="every probe Pod deleted")


@pytest.fixture
def carol(kubeconfig: Path, tmp_path: Path, chaos: Chaos, api_client: client.ApiClient) -> Iterator[client.ApiClient]:
    """carol may read, change and delete pods in the test's namespace, and create scenarios and runs, but not
    create pods."""
    ns = chaos.namespace
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="carol"),
            rules=[
                client.V1PolicyRule(
                    api_groups=[""], resources=["pods"], verbs=["get", "list", "watch", "patch", "delete"]
                ),
                client.V1PolicyRule(api_groups=[GROUP], resources=["chaosscenarios", "testruns"], verbs=["create"]),
            ],
        ),
    )
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="carol"),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="carol"),
            subjects=[client.RbacV1Subject(kind="User", name="carol", api_group="rbac.authorization.k8s.io")],
        ),
    )
    with config.new_client_from_config(config_file=str(user_kubeconfig(kubeconfig, "carol", tmp_path))) as api:
        yield api


def test_a_requester_who_may_not_create_pods_cannot_declare_a_cmd_probe(
    chaos: Chaos, carol: client.ApiClient, core: client.CoreV1Api
) -> None:
    ns = chaos.namespace
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosScenario",
        "metadata": {"name": f"scn-{uuid.uuid4().hex[:6]}"},
        "spec": _scenario(_probe("edge")),
    }
    with pytest.raises(ApiException) as raised:
        client.CustomObjectsApi(carol).create_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", body)
    assert raised.value.status == 403, raised.value.body
    message = str(json.loads(raised.value.body)["message"])
    assert message.endswith(f'carol cannot create resource "pods" in the namespace "{ns}" (needed by probe rows)'), (
        message
    )
    # Without the cmd probe she may: the refusal is the probe's.
    plain = {**body, "spec": {**body["spec"], "steadyState": {"probes": []}, "assertions": []}}
    client.CustomObjectsApi(carol).create_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", plain)
    assert not probe_pods(core, ns)


def test_the_container_probe_examples_are_admitted_and_the_cmd_example_passes(
    chaos: Chaos, core: client.CoreV1Api, kubeconfig: Path
) -> None:
    """examples/cmd-probe-data-consistency.yaml applied as a user would (in the test's namespace, with the sample
    workload), its command's Pod ended by the test with exit code 0; examples/grpc-probe.yaml admitted (its server needs a real
    node: tests/real/test_real_probes.py runs a grpc probe against one)."""
    assert {path.stem for path in CONTAINER_PROBE_EXAMPLES} == {"cmd-probe-data-consistency", "grpc-probe"}
    ns = chaos.namespace
    kubectl_apply(kubeconfig, in_namespace(load_docs(WORKLOAD), ns))
    wait_ready(core, ns, "web", 3)
    (grpc_example,) = [p for p in CONTAINER_PROBE_EXAMPLES if p.stem == "grpc-probe"]
    kubectl_apply(kubeconfig, [d for d in in_namespace(load_docs(grpc_example), ns) if d["kind"] == "ChaosScenario"])
    assert chaos.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "chaosscenarios", "grpc-probe")

    (cmd_example,) = [p for p in CONTAINER_PROBE_EXAMPLES if p.stem == "cmd-probe-data-consistency"]
    docs = in_namespace(load_docs(cmd_example), ns)
    # kwok serves no container logs: the output check ($.welcome) is left out here; the real tier judges a
    # command's real output (tests/real/test_real_probes.py).
    (scenario,) = [d for d in docs if d["kind"] == "ChaosScenario"]
    (probe,) = scenario["spec"]["steadyState"]["probes"]
    assert [probe["cmd"].pop(key) for key in ("jsonPath", "operator", "value")] == ["$.welcome", ">=", 1]
    with Kubelet(core, ns, 0) as kubelet:
        kubectl_apply(kubeconfig, docs)
        status = chaos.wait_phase("cmd-probe-data-consistency-run", {"Passed", "Failed", "Error"}, timeout=90)
    assert status["phase"] == "Passed", status.get("message")
    assert [a["passed"] for a in status["assertions"]] == [True]
    pod = next(iter(kubelet.seen.values()))
    assert pod.spec.containers[0].image == "busybox:1.36"
    assert pod.spec.containers[0].security_context.run_as_user == 65534
    wait_for(lambda: not probe_pods(core, ns), timeout=20, description="every probe Pod deleted")
