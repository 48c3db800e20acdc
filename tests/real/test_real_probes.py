"""grpc and cmd probes against real pods on the real node (issue 23, item 5).

- grpc: a real gRPC health server pod (grpcio's standard health service, in the operator's image) behind a
  ClusterIP Service; the probe passes while the server says SERVING and fails the baseline once it says
  NOT_SERVING.
- cmd: the probe's Pod runs on the real node (nodeSelector and toleration in the probe); a command that prints
  JSON passes and holds the data_consistency assertion; a regex mismatch and an exit code 1 fail the baseline; a
  during probe whose client script sees the gRPC server NOT_SERVING while the step holds fails, and so does the
  data_consistency assertion on it. No probe Pod is left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.realnode import (
    NODE,
    OPERATOR_IMAGE,
    EffectLog,
    kubectl,
    on_real_node,
    one_web_pod,
    pod_ready,
)

GRPC_PORT = 50051
# The server's overall health ("") follows /tmp/health (SERVING or NOT_SERVING), which the test writes with kubectl
# exec (the server writes what it applied to /tmp/health.applied); the service "ready" stays SERVING for the
# kubelet's own gRPC readiness probe, so the pod stays an endpoint of its Service whatever the overall status says.
HEALTH_SERVER = f"""
import pathlib, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
servicer = health.HealthServicer()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("[::]:{GRPC_PORT}")
server.start()
servicer.set("ready", health_pb2.HealthCheckResponse.SERVING)
state, applied = pathlib.Path("/tmp/health"), pathlib.Path("/tmp/health.applied")
state.write_text("SERVING")
while True:
    wanted = state.read_text().strip() or "SERVING"
    servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(wanted))
    applied.write_text(wanted)
    time.sleep(0.1)
"""

REAL_NODE_PLACEMENT: dict[str, Any] = {
    "nodeSelector": {NODE.REAL_NODE_LABEL: NODE.REAL_NODE_LABEL_VALUE},
    "tolerations": [{"key": NODE.REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
}


def grpc_server(core: client.CoreV1Api, namespace: str) -> str:
    """The health server pod on the real node and a ClusterIP Service in front of it; returns ``ip:port``."""
    labels = {"app": "grpc-health"}
    container = client.V1Container(
        name="server",
        image=OPERATOR_IMAGE,
        image_pull_policy="Never",
        command=["python3", "-c", HEALTH_SERVER],
        ports=[client.V1ContainerPort(container_port=GRPC_PORT, name="grpc")],
        readiness_probe=client.V1Probe(
            grpc=client.V1GRPCAction(port=GRPC_PORT, service="ready"), period_seconds=1, failure_threshold=1
        ),
    )
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="grpc-health", labels=labels),
            spec=on_real_node(client.V1PodSpec(containers=[container], termination_grace_period_seconds=1)),
        ),
    )
    wait_for(lambda: pod_ready(core, namespace, "grpc-health"), timeout=90, description="grpc-health Ready")
    svc = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name="grpc-health"),
            spec=client.V1ServiceSpec(
                selector=labels, ports=[client.V1ServicePort(port=GRPC_PORT, target_port=GRPC_PORT, name="grpc")]
            ),
        ),
    )
    assert svc.spec is not None
    return f"{svc.spec.cluster_ip}:{GRPC_PORT}"


def set_health(kubeconfig: Path, namespace: str, status: str) -> None:
    """Write the wanted status, then wait until the server says it serves it (/tmp/health.applied): the server
    reads the file every 0.1 s, and a run created at once could otherwise take its baseline before that."""
    kubectl(kubeconfig, "exec", "-n", namespace, "grpc-health", "--", "sh", "-c", f"echo {status} > /tmp/health")
    wait_for(
        lambda: (
            kubectl(kubeconfig, "exec", "-n", namespace, "grpc-health", "--", "cat", "/tmp/health.applied").stdout
            == status
        ),
        timeout=30,
        description=f"the health server to serve {status}",
    )


def kill_step() -> dict[str, Any]:
    return {"name": "kill", "duration": "3s", "faults": [{"type": "pod-kill"}]}


def web_target() -> dict[str, Any]:
    return {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}}


def test_grpc_probe_checks_a_real_health_server_pod(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    one_web_pod(core, apps, ns)
    address = grpc_server(core, ns)
    probe: dict[str, Any] = {"name": "cart-health", "type": "grpc", "mode": "continuous", "interval": "300ms"}
    probe["grpc"] = {"address": address}
    spec = {"target": web_target(), "mode": "one", "steps": [kill_step()], "steadyState": {"probes": [probe]}}
    chaos.scenario("grpc-serving", spec)
    status = chaos.wait_phase(chaos.run("grpc-serving"), {"Passed", "Failed", "Error"}, timeout=120)
    assert status["phase"] == "Passed", status.get("message")
    (serving,) = status["probes"]
    assert serving["samples"] >= 3
    assert serving["failed"] == 0, serving.get("lastError")
    assert serving["lastValue"] == "SERVING"
    assert serving["latencyP50Ms"] is not None

    set_health(kubeconfig, ns, "NOT_SERVING")
    edge = {**probe, "mode": "edge", "name": "cart-health"}
    chaos.scenario("grpc-not-serving", {**spec, "steadyState": {"probes": [edge]}})
    status = chaos.wait_phase(chaos.run("grpc-not-serving"), {"Passed", "Failed", "Error"}, timeout=120)
    assert status["phase"] == "Failed", status.get("message")
    (refused,) = status["probes"]
    assert refused["lastError"] == "the server is NOT_SERVING, want SERVING"
    assert "steady state not met before any fault" in status["message"]
    effects.record(
        "grpc probe",
        f"Health/Check through ClusterIP {address} to a grpcio health server pod: {serving['samples']} samples "
        f"SERVING (p50 {serving['latencyP50Ms']:.1f} ms, connect included); NOT_SERVING fails the baseline",
        "-",
    )


PRINT_ROWS = "import json; print(json.dumps({'rows': [{'count': 3}], 'checksum': 'sha256:ab12'}))"


def cmd_probe(name: str, mode: str, **checks: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "cmd",
        "mode": mode,
        "timeout": "60s",
        "cmd": {
            "image": OPERATOR_IMAGE,
            "imagePullPolicy": "Never",
            "command": ["python3", "-c", PRINT_ROWS],
            "resources": {"limits": {"memory": "128Mi"}},
            **REAL_NODE_PLACEMENT,
            **checks,
        },
    }


def probe_pods(core: client.CoreV1Api, namespace: str) -> list[str]:
    pods = core.list_namespaced_pod(namespace, label_selector="chaos.coordinator.dev/probe").items
    return [str(p.metadata.name) for p in pods if p.metadata is not None]


def test_cmd_probe_runs_a_command_on_the_real_node_and_judges_its_output(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    one_web_pod(core, apps, ns)
    rows = cmd_probe("rows", "edge", jsonPath="$.rows[0].count", value=3)
    consistent = {"name": "rows-consistent", "type": "data_consistency", "probe": "rows"}
    spec = {
        "target": web_target(),
        "mode": "one",
        "steps": [kill_step()],
        "steadyState": {"probes": [rows]},
        "assertions": [consistent],
    }
    chaos.scenario("cmd-passes", spec)
    status = chaos.wait_phase(chaos.run("cmd-passes"), {"Passed", "Failed", "Error"}, timeout=240)
    assert status["phase"] == "Passed", status.get("message")
    (passed,) = status["probes"]
    assert passed["lastValue"] == "exit code 0, $.rows[0].count=3"
    assert passed["samples"] == 2
    assert passed["failed"] == 0
    (held,) = status["assertions"]
    assert held["passed"] is True
    assert held["actual"] == "Passed"
    wait_for(lambda: not probe_pods(core, ns), timeout=30, description="every probe Pod deleted")

    # The same command, judged by a checksum it does not print: the baseline fails, nothing is injected. (A probe
    # that never passes again would keep the run waiting for recovery until its timeout: a before probe ends it.)
    corrupt = cmd_probe("rows", "before", stdoutRegex="sha256:ffff")
    chaos.scenario("cmd-fails", {**spec, "steadyState": {"probes": [corrupt]}})
    status = chaos.wait_phase(chaos.run("cmd-fails"), {"Passed", "Failed", "Error"}, timeout=240)
    assert status["phase"] == "Failed", status.get("message")
    assert "steady state not met before any fault" in status["message"]
    (failed,) = status["probes"]
    assert failed["lastError"].startswith("output does not match 'sha256:ffff'")
    assert not [i for i in status.get("injections", []) if i.get("appliedAt")]

    # A command that exits 1 fails on its exit code.
    exits = cmd_probe("rows", "before")
    exits["cmd"]["command"] = ["python3", "-c", "import sys; print('rows differ'); sys.exit(1)"]
    chaos.scenario("cmd-exits", {**spec, "steadyState": {"probes": [exits]}})
    status = chaos.wait_phase(chaos.run("cmd-exits"), {"Passed", "Failed", "Error"}, timeout=240)
    assert status["phase"] == "Failed", status.get("message")
    assert status["probes"][0]["lastError"] == "exit code 1, want 0: 'rows differ'"
    wait_for(lambda: not probe_pods(core, ns), timeout=30, description="every probe Pod deleted")
    inconsistent = during_inconsistency(chaos, core, kubeconfig, spec)
    effects.record(
        "cmd probe",
        f"a Pod per sample on the real node: JSON $.rows[0].count=3 passes data_consistency (p50 "
        f"{passed['latencyP50Ms']:.0f} ms from create to exit); a regex mismatch and exit 1 fail it; "
        f"{inconsistent}",
        "probe Pods deleted after each sample",
    )


# A client script: the health of a gRPC server, as JSON.
HEALTH_CHECK = (
    "import json, sys, grpc; from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g; "
    "answer = g.HealthStub(grpc.insecure_channel(sys.argv[1])).Check(p.HealthCheckRequest(), timeout=5); "
    "print(json.dumps({'status': p.HealthCheckResponse.ServingStatus.Name(answer.status)}))"
)


def during_inconsistency(chaos: Chaos, core: client.CoreV1Api, kubeconfig: Path, spec: dict[str, Any]) -> str:
    """A during cmd probe whose client script sees the server NOT_SERVING while the step holds, and SERVING once
    the test puts it back: the probe fails, the run recovers, and data_consistency fails with the probe's error."""
    ns = chaos.namespace
    address = grpc_server(core, ns)
    set_health(kubeconfig, ns, "NOT_SERVING")
    probe = cmd_probe("rows", "during", jsonPath="$.status", value="SERVING", args=[address])
    probe["cmd"]["command"] = ["python3", "-c", HEALTH_CHECK]
    probe["interval"] = "1s"
    step = {**kill_step(), "duration": "15s"}
    chaos.scenario("cmd-during", {**spec, "steps": [step], "steadyState": {"probes": [probe]}})
    run = chaos.run("cmd-during")

    def seen_failing() -> bool:
        status = chaos.status(run)
        failed = any(p.get("failed", 0) >= 1 for p in status.get("probes", []))
        reverted = any(s.get("outcome") == "Reverted" for s in status.get("steps", []))
        return failed or reverted

    wait_for(seen_failing, timeout=120, description="a failed sample recorded, or the step reverted")
    set_health(kubeconfig, ns, "SERVING")
    status = chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=180)
    assert status["phase"] == "Failed", status.get("message")
    assert status["reason"] == "ProbeFailed", status
    (result,) = status["probes"]
    assert result["failed"] >= 1
    (broken,) = status["assertions"]
    assert broken["passed"] is False
    assert broken["message"].startswith("probe rows: $.status=NOT_SERVING, want == SERVING"), broken
    return f"a during probe saw {result['failed']}/{result['samples']} samples NOT_SERVING: data_consistency failed"
