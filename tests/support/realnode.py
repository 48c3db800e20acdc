"""Workloads on the real node, and the measurements the real tier takes of them (inside pods and on the host)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from coordinator.testing.waiting import wait_for
from support.cluster import REPO_ROOT
from support.hackmodules import hack_module

REAL_CLUSTER_DIR = REPO_ROOT / ".cluster-real"
REAL_CLUSTER_ENV = {
    "REAL": "1",
    "COORDINATOR_CLUSTER_DIR": str(REAL_CLUSTER_DIR),
    "COORDINATOR_CLUSTER_PORT_OFFSET": "1000",
}
WEB_IMAGE = "test-coordinator-web:0.1.0"
AGENT_IMAGE = "test-coordinator-tools:0.1.0"
OPERATOR_IMAGE = "test-coordinator:0.1.0"
WEB_PORT = 8080


NODE = hack_module("coordinator_real_node", "cluster/node.py")
# The real tier runs on this host's own real node, or on an existing cluster (kind) whose node is named here.
EXTERNAL_KUBECONFIG = os.environ.get("COORDINATOR_TEST_KUBECONFIG")
REAL_NODE_NAME = os.environ.get("COORDINATOR_REAL_NODE") or f"{NODE.REAL_NODE_PREFIX}0"


def host_unsupported_reason() -> str | None:
    if EXTERNAL_KUBECONFIG:
        # The node is someone else's; this host only reads its cgroups and makes network namespaces.
        return None if os.geteuid() == 0 else "the real tier reads the node's cgroups: run it as root"
    reason: str | None = NODE.host_unsupported_reason()
    return reason


def on_real_node(spec: client.V1PodSpec) -> client.V1PodSpec:
    """Pin a pod to the real node: its label and a toleration of its taint (no other pod lands there)."""
    spec.node_selector = {NODE.REAL_NODE_LABEL: NODE.REAL_NODE_LABEL_VALUE}
    spec.tolerations = [client.V1Toleration(key=NODE.REAL_NODE_TAINT, operator="Exists", effect="NoSchedule")]
    return spec


def web_container(name: str = "app", **extra: Any) -> client.V1Container:
    return client.V1Container(
        name=name,
        image=WEB_IMAGE,
        image_pull_policy="Never",
        ports=[client.V1ContainerPort(container_port=WEB_PORT, name="http")],
        readiness_probe=client.V1Probe(
            http_get=client.V1HTTPGetAction(path="/readyz", port=WEB_PORT), period_seconds=1, failure_threshold=1
        ),
        **extra,
    )


def web_deployment(
    apps: client.AppsV1Api,
    namespace: str,
    name: str = "web",
    replicas: int = 1,
    container: client.V1Container | None = None,
) -> None:
    labels = {"app": name}
    spec = on_real_node(client.V1PodSpec(containers=[container or web_container()], termination_grace_period_seconds=2))
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=replicas,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=spec),
            ),
        ),
    )


def one_web_pod(core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> client.V1Pod:
    """A one-replica web Deployment on the real node; its Ready pod."""
    web_deployment(apps, namespace, replicas=1)
    (pod,) = wait_ready(core, namespace, "web", 1)
    return pod


def timestamp(value: str) -> float:
    """An RFC 3339 time from a status (``...Z``) as seconds since the epoch."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def web_service(core: client.CoreV1Api, namespace: str, name: str = "web") -> str:
    """A ClusterIP Service in front of the app; returns its cluster IP (kube-proxy routes it)."""
    svc = core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(
                selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=WEB_PORT, name="http")]
            ),
        ),
    )
    return str(svc.spec.cluster_ip)


def client_pod(core: client.CoreV1Api, namespace: str, name: str = "peer", labels: dict[str, str] | None = None) -> str:
    """A pod that makes requests from inside the pod network (the web image has Python)."""
    core.create_namespaced_pod(
        namespace,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=labels or {"role": "peer"}),
            spec=on_real_node(client.V1PodSpec(containers=[web_container()], termination_grace_period_seconds=1)),
        ),
    )
    wait_for(lambda: pod_ready(core, namespace, name), timeout=90, description=f"pod {name} Ready")
    return name


def pod_ready(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    pod = core.read_namespaced_pod(name, namespace)
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def ready_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def wait_ready(
    core: client.CoreV1Api, namespace: str, app: str, count: int, timeout: float = 120
) -> list[client.V1Pod]:
    return wait_for(
        lambda: pods if len(pods := ready_pods(core, namespace, app)) >= count else None,
        timeout=timeout,
        description=f"{count} Ready pod(s) of {app} in {namespace}",
    )


def kubectl(kubeconfig: Path, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc


FETCH = """
import json, sys, time, urllib.request
url, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ok = 0
times = []
for _ in range(count):
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            ok += resp.status == 200
    except Exception:
        pass
    times.append(time.monotonic() - started)
print(json.dumps({"ok": ok, "count": count, "seconds": times}))
"""


@dataclass(frozen=True)
class FetchResult:
    ok: int
    count: int
    seconds: list[float]

    @property
    def success_rate(self) -> float:
        return self.ok / self.count if self.count else 0.0


def fetch_from_pod(
    kubeconfig: Path, namespace: str, pod: str, url: str, count: int = 1, timeout: float = 2.0
) -> FetchResult:
    """GET ``url`` ``count`` times from inside ``pod`` (kubectl exec through the kubelet)."""
    proc = kubectl(
        kubeconfig,
        "exec",
        "-n",
        namespace,
        pod,
        "-c",
        "app",
        "--",
        "python3",
        "-c",
        FETCH,
        url,
        str(count),
        str(timeout),
        timeout=count * (timeout + 1) + 60,
    )
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return FetchResult(ok=data["ok"], count=data["count"], seconds=data["seconds"])


def container_id(core: client.CoreV1Api, namespace: str, pod: str, container: str = "app") -> str:
    status = core.read_namespaced_pod(pod, namespace).status
    for cs in status.container_statuses or []:
        if cs.name == container and cs.container_id:
            return str(cs.container_id).split("://", 1)[1]
    raise AssertionError(f"pod {namespace}/{pod} has no running container {container}")


def container_cgroup(kubeconfig: Path, namespace: str, pod: str, container: str, controller: str) -> Path:
    """The cgroup (v1) directory of a container on this host, found through its main process."""
    proc = kubectl(kubeconfig, "exec", "-n", namespace, pod, "-c", container, "--", "cat", "/proc/1/cgroup")
    for line in proc.stdout.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for {namespace}/{pod}/{container}: {proc.stdout}")


class EffectLog:
    """Each fault's measured effect and revert time, written as the table docs/real-node.md carries."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def record(self, fault: str, effect: str, revert: str) -> None:
        self.rows.append((fault, effect, revert))

    def markdown(self) -> str:
        lines = ["| fault | measured effect | measured revert |", "| --- | --- | --- |"]
        lines += [f"| {f} | {e} | {r} |" for f, e, r in sorted(self.rows)]
        return "\n".join(lines) + "\n"


UDP_RECEIVE = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
sock.settimeout(float(sys.argv[2]))
print("listening", flush=True)
got = set()
try:
    while True:
        data, _ = sock.recvfrom(64)
        if data == b"end":
            break
        got.add(data)
except socket.timeout:
    pass
print(len(got), flush=True)
"""

UDP_SEND = """
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    try:
        sock.sendto(str(i).encode(), (host, port))
    except PermissionError:
        pass  # an output rule dropped it: the kernel tells the sender (EPERM)
    time.sleep(0.002)
time.sleep(0.5)
for _ in range(20):
    try:
        sock.sendto(b"end", (host, port))
    except PermissionError:
        pass
    time.sleep(0.05)
"""


def udp_delivery(
    kubeconfig: Path,
    namespace: str,
    sender: str,
    receiver: str,
    receiver_ip: str,
    count: int,
    idle_timeout: float = 15.0,
) -> float:
    """Send ``count`` numbered UDP datagrams from pod ``sender`` to pod ``receiver``; return the share that arrived.

    The "end" marker is sent 20 times, so even 90 % loss lets the receiver stop before its idle timeout; at 100 %
    loss the receiver waits ``idle_timeout`` for nothing."""
    port = "9999"
    base = ["kubectl", "--kubeconfig", str(kubeconfig), "exec", "-n", namespace]
    listener = subprocess.Popen(
        [*base, receiver, "-c", "app", "--", "python3", "-c", UDP_RECEIVE, port, str(idle_timeout)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        kubectl(
            kubeconfig,
            "exec",
            "-n",
            namespace,
            sender,
            "-c",
            "app",
            "--",
            "python3",
            "-c",
            UDP_SEND,
            receiver_ip,
            port,
            str(count),
        )
        out, _ = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
    return int(out.strip().splitlines()[-1]) / count


DOWNLOAD = """
import sys, time, urllib.request
url = sys.argv[1]
started = time.monotonic()
with urllib.request.urlopen(url, timeout=120) as resp:
    size = len(resp.read())
print(size, time.monotonic() - started)
"""


def download_rate(kubeconfig: Path, namespace: str, pod: str, url: str) -> float:
    """Bits per second of one HTTP download made from inside ``pod``."""
    proc = kubectl(
        kubeconfig, "exec", "-n", namespace, pod, "-c", "app", "--", "python3", "-c", DOWNLOAD, url, timeout=300
    )
    size, seconds = proc.stdout.split()
    return int(size) * 8 / float(seconds)


def pod_ip(core: client.CoreV1Api, namespace: str, name: str) -> str:
    return str(core.read_namespaced_pod(name, namespace).status.pod_ip)


def cgroup_of(container_id: str, controller: str) -> Path:
    """The cgroup directory of a container on this host: under ``controller`` on cgroup v1 (runc names it after the
    container ID), or in the unified tree on cgroup v2 (systemd names it ``cri-containerd-<id>.scope``)."""
    v1 = Path("/sys/fs/cgroup") / controller
    root = v1 if v1.is_dir() else Path("/sys/fs/cgroup")
    for dirpath, dirnames, _ in os.walk(root):
        if container_id in os.path.basename(dirpath):
            return Path(dirpath)
        if dirpath.count("/") - str(root).count("/") >= 8:
            dirnames.clear()
    raise AssertionError(f"no {controller} cgroup for container {container_id} under {root}")


def cpu_seconds(cgroup: Path) -> float:
    """CPU time the cgroup has used (cgroup v1 cpuacct, or v2 cpu.stat)."""
    if (cgroup / "cpuacct.usage").exists():
        return int((cgroup / "cpuacct.usage").read_text()) / 1e9
    stat = dict(line.split() for line in (cgroup / "cpu.stat").read_text().splitlines())
    return int(stat["usage_usec"]) / 1e6


def memory_bytes(cgroup: Path) -> int:
    for name in ("memory.usage_in_bytes", "memory.current"):
        if (cgroup / name).exists():
            return int((cgroup / name).read_text())
    raise AssertionError(f"no memory usage file in {cgroup}")


def pod_container_ids(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, str]:
    """Container name -> ID, ephemeral containers included."""
    status = core.read_namespaced_pod(name, namespace).status
    found: dict[str, str] = {}
    for cs in [*(status.container_statuses or []), *(status.ephemeral_container_statuses or [])]:
        if cs.container_id:
            found[cs.name] = str(cs.container_id).split("://", 1)[1]
    return found


def netem_available() -> bool:
    """Whether this kernel has sch_netem: a netem qdisc on the loopback of a throwaway network namespace.

    ``unshare --net``, not ``ip netns add``: the first ``ip netns add`` on a host turns /run/netns into a bind
    mount, and pods' network namespaces already mounted under it then cannot be removed."""
    proc = subprocess.run(
        ["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0
