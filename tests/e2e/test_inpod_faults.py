"""In-pod faults through the API: the ephemeral container, its image, capabilities and agent, and the bookkeeping.

kwok runs no containers, so here the agent never starts, and a run must say so: the fault is not applied and the
run ends Error (the session's operator waits COORDINATOR_AGENT_START_TIMEOUT=3s for an agent). The real effect is
measured on a real node (tests/real/test_real_inpod_faults.py) and in network namespaces (test_inpod_netns.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from conftest import make_deployment, wait_ready
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos


def _scenario(fault: dict[str, Any], mode: str = "all", duration: str = "2s") -> dict[str, Any]:
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": mode,
        "steps": [{"name": "s", "duration": duration, "faults": [fault]}],
    }


def _agents(core: client.CoreV1Api, ns: str, name: str) -> list[client.V1EphemeralContainer]:
    return list(core.read_namespaced_pod(name, ns).spec.ephemeral_containers or [])


@pytest.mark.parametrize(
    ("fault", "capability", "tool"),
    [
        ({"type": "network-loss", "networkLoss": {"percent": 30, "scope": {"ports": [80]}}}, "NET_ADMIN", "nft"),
        ({"type": "network-delay", "networkDelay": {"latencyMs": 100, "jitterMs": 10}}, "NET_ADMIN", "netem"),
        ({"type": "network-bandwidth", "networkBandwidth": {"rate": "1mbit"}}, "NET_ADMIN", "tbf"),
        ({"type": "cpu-stress", "cpuStress": {"workers": 2, "loadPercent": 50}}, None, "stress-ng"),
        ({"type": "container-kill", "containerKill": {"containerName": "app"}}, "KILL", "kill"),
        (
            {"type": "clock-skew", "clockSkew": {"containerName": "app", "offset": "-1h"}},
            "SYS_PTRACE",
            # kwok's pods have no container IDs: the agent would refuse (the tracer's line is in the unit tests).
            "container app had no containerID in the pod status",
        ),
        ({"type": "dns-fault", "dnsFault": {"patterns": ["*.example.com"], "error": {}}}, "NET_ADMIN", "dns_fault.py"),
    ],
    ids=["loss", "delay", "bandwidth", "cpu", "kill", "clock", "dns"],
)
def test_agent_is_added_to_each_target_with_its_command(
    chaos: Chaos,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    fault: dict[str, Any],
    capability: str | None,
    tool: str,
) -> None:
    ns = chaos.namespace
    make_deployment(apps, ns, "web", replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("inpod", _scenario(fault))
    run = chaos.run("inpod")
    names = [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector="app=web").items]
    assert len(names) == 2
    for name in names:
        (agent,) = wait_for(lambda name=name: _agents(core, ns, name), timeout=30, description=f"agent in {name}")
        assert agent.image == "test-coordinator-tools:0.1.0"
        assert agent.command[:2] == ["/bin/sh", "-c"]
        assert tool in agent.command[2]
        if fault["type"] != "container-kill":  # one shot: nothing to hold or undo
            assert "trap" in agent.command[2], "the agent reverts on TERM: a dead man's switch"
        caps = agent.security_context.capabilities
        assert caps.drop == ["ALL"]
        assert (caps.add or []) == ([capability] if capability else [])
        assert not agent.security_context.allow_privilege_escalation
        if fault["type"] in ("container-kill", "clock-skew"):
            assert agent.target_container_name == "app"
    # No kubelet ever starts the agent: the fault is not applied, and the run says so instead of passing.
    status = chaos.wait_phase(run, "Error", timeout=60)
    assert status["reason"] == "AgentNotRunning"
    assert "not applied" in status["message"]
    assert "did not confirm the fault within 3s" in status["message"]
    assert {i["state"] for i in status["injections"]} <= {"Failed", "Reverted"}
    assert [i.get("appliedAt") for i in status["injections"]] == [None, None], "nothing counts as applied"
    for name in names:
        pod = core.read_namespaced_pod(name, ns)
        assert len(pod.spec.ephemeral_containers) == 1, "no second agent"
    assert "ChaosInjected" not in chaos.events(names[0]), "nothing was injected"


def test_container_kill_names_a_missing_container(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> None:
    make_deployment(apps, chaos.namespace, "web", replicas=1)
    wait_ready(core, chaos.namespace, "web", 1)
    chaos.scenario("kill", _scenario({"type": "container-kill", "containerKill": {"containerName": "sidecar"}}))
    status = chaos.wait_phase(chaos.run("kill"), "Error")
    assert "containerKill.containerName" in status["message"]
    assert "sidecar" in status["message"]


def test_host_network_pods_are_refused(chaos: Chaos, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(
        chaos.namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="hostnet", labels={"app": "web"}),
            spec=client.V1PodSpec(host_network=True, containers=[client.V1Container(name="app", image="nginx:1.27")]),
        ),
    )
    wait_ready(core, chaos.namespace, "web", 1)
    chaos.scenario("loss", _scenario({"type": "network-loss", "networkLoss": {"percent": 10}}))
    status = chaos.wait_phase(chaos.run("loss"), "Error")
    assert "hostNetwork" in status["message"]
    assert _agents(core, chaos.namespace, "hostnet") == []


def test_schema_requires_the_options_of_in_pod_faults(chaos: Chaos) -> None:
    with pytest.raises(ApiException) as err:
        chaos.scenario("bad", _scenario({"type": "network-loss"}))
    assert err.value.status == 422
    assert "networkLoss" in err.value.body
    with pytest.raises(ApiException) as err:
        chaos.scenario("bad2", _scenario({"type": "network-loss", "networkLoss": {"percent": 130}}))
    assert "percent" in err.value.body


def test_pod_security_refusing_the_agent_is_agent_not_running(
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    make_namespace: Callable[[dict[str, str]], str],
    running_operator: object,
) -> None:
    """A namespace enforcing the restricted profile refuses an agent that runs as root with NET_ADMIN: the run says
    so (AgentNotRunning, naming Pod Security), and nothing counts as applied."""
    ns = make_namespace({"chaos.coordinator.dev/allow": "true", "pod-security.kubernetes.io/enforce": "privileged"})
    make_deployment(apps, ns, "web", replicas=1)
    wait_ready(core, ns, "web", 1)
    # Restricted from now on: the existing pod stays (admission judges only new writes), the agent is refused.
    core.patch_namespace(ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    chaos = Chaos(api_client, ns)
    chaos.scenario("loss", _scenario({"type": "network-loss", "networkLoss": {"percent": 10}}))
    status = chaos.wait_phase(chaos.run("loss"), "Error", timeout=60)
    assert status["reason"] == "AgentNotRunning"
    assert "Pod Security admission refused the agent" in status["message"]
    assert all(i.get("appliedAt") is None for i in status["injections"])
