"""Boot and stop a single-machine Kubernetes control plane on 127.0.0.1 with kwok-simulated nodes.

etcd, kube-apiserver (RBAC, TLS, service-account tokens), kube-controller-manager, kube-scheduler and kwok run as
plain processes out of one work directory. Everything listens on 127.0.0.1 only. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import node as real
from build import (
    Binaries,
    BuildError,
    binary_dirs,
    cache_root,
    ensure_binaries,
    ensure_helm,
    ensure_node_binaries,
    ensure_otelcol,
    read_versions,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_COUNT_DEFAULT = 3
MAX_REAL_NODES = 4
# Data only: no process routes to these ranges (there is no kube-proxy and kwok's pods run nothing).
SERVICE_CIDR = "10.96.0.0/12"
POD_CIDR = "10.244.0.1/16"


class ClusterError(RuntimeError):
    """The cluster cannot be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Ports:
    etcd_client: int = 12379
    etcd_peer: int = 12380
    apiserver: int = 16443
    controller_manager: int = 20257
    scheduler: int = 20259
    kwok: int = 20247
    kube_proxy_metrics: int = 20249
    kube_proxy_healthz: int = 20256

    @classmethod
    def from_env(cls) -> Ports:
        """``COORDINATOR_CLUSTER_PORT_OFFSET`` shifts every port, so two clusters can run side by side."""
        offset = int(os.environ.get("COORDINATOR_CLUSTER_PORT_OFFSET", "0"))
        base = cls()
        return cls(**{name: value + offset for name, value in vars(base).items()})


@dataclass
class Cluster:
    workdir: Path
    ports: Ports = field(default_factory=Ports.from_env)
    nodes: int = NODE_COUNT_DEFAULT
    # Real nodes (kubelet + containerd on this host); 0 for the kwok-only cluster.
    real_nodes: int = 0

    @property
    def real(self) -> list[real.RealNode]:
        return [real.RealNode(self.workdir, i) for i in range(self.real_nodes)]

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "pids.json"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"


def default_workdir() -> Path:
    return Path(os.environ.get("COORDINATOR_CLUSTER_DIR") or REPO_ROOT / ".cluster")


# --- certificates --------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("openssl is not on PATH; it generates the cluster's certificates (apt-get install openssl)")
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args[:2])} failed:\n{proc.stderr}")


def _issue_cert(pki: Path, name: str, subject: str, ext: str) -> None:
    (pki / f"{name}.ext").write_text(ext)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=pki)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "825",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=pki,
    )


def generate_pki(cluster: Cluster) -> None:
    pki = cluster.pki
    pki.mkdir(parents=True, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki)
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=test-coordinator-local-ca",
        "-days",
        "825",
        "-sha256",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        "ca.crt",
        cwd=pki,
    )
    sans = ",".join(
        [
            "IP:127.0.0.1",
            "IP:10.96.0.1",
            f"IP:{real.RealNode(cluster.workdir).ip}",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    _issue_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        f"keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={sans}\n",
    )
    client_ext = "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    _issue_cert(pki, "admin", "/O=system:masters/CN=kubernetes-admin", client_ext)
    _issue_cert(pki, "controller-manager", "/CN=system:kube-controller-manager", client_ext)
    _issue_cert(pki, "scheduler", "/CN=system:kube-scheduler", client_ext)
    _issue_cert(pki, "apiserver-etcd-client", "/CN=kube-apiserver-etcd-client", client_ext)
    # Service-account tokens are signed with an RSA key the apiserver and controller-manager share.
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    if cluster.real_nodes:
        # The API server authenticates to kubelets (logs, exec, port-forward); each node, kube-proxy and kube-router
        # have identities of their own (the Node authorizer and the system:node-proxier binding know them).
        _issue_cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", client_ext)
        for node in cluster.real:
            _issue_cert(pki, f"node-{node.name}", f"/O=system:nodes/CN=system:node:{node.name}", client_ext)
        _issue_cert(pki, "kube-proxy", "/CN=system:kube-proxy", client_ext)
        _issue_cert(pki, "kube-router", "/CN=system:kube-router", client_ext)


def write_kubeconfig(cluster: Cluster, path: Path, user: str, cert: str) -> None:
    pki = cluster.pki
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "coordinator-local",
                "cluster": {"server": cluster.server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{cert}.crt"),
                    "client-key": str(pki / f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": "coordinator-local", "context": {"cluster": "coordinator-local", "user": user}}],
        "current-context": "coordinator-local",
        "preferences": {},
    }
    # JSON is valid YAML; kubectl and every client library read it.
    path.write_text(json.dumps(config, indent=2) + "\n")


# --- processes -----------------------------------------------------------------------------------------------


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _who_listens(port: int) -> str:
    if shutil.which("ss") is None:
        return ""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _read_pids(cluster: Cluster) -> dict[str, int]:
    try:
        data: dict[str, int] = json.loads(cluster.pidfile.read_text())
    except (OSError, ValueError):
        return {}
    return data


def _start(cluster: Cluster, name: str, cmd: list[str]) -> int:
    log = (cluster.logs / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=cluster.workdir,
        start_new_session=True,  # survive the caller's terminal and signals; cluster-down stops it explicitly
    )
    pids = _read_pids(cluster)
    pids[name] = proc.pid
    cluster.pidfile.write_text(json.dumps(pids))
    return proc.pid


def _log_tail(cluster: Cluster, name: str, lines: int = 30) -> str:
    try:
        return "\n".join((cluster.logs / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(cluster: Cluster, name: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pid = _read_pids(cluster).get(name)
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not _alive(pid):
            raise ClusterError(f"{name} exited during start-up; last lines of its log:\n{_log_tail(cluster, name)}")
        time.sleep(0.2)
    raise ClusterError(f"{name} not ready after {timeout:.0f}s; last lines of its log:\n{_log_tail(cluster, name)}")


def _https_ok(cluster: Cluster, url: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(cluster.pki / "ca.crt"))
    ctx.load_cert_chain(str(cluster.pki / "admin.crt"), str(cluster.pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310 - our own apiserver
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _insecure_https_ok(url: str) -> bool:
    """The controller-manager and scheduler serve /healthz with self-signed certificates."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:  # noqa: S310 - loopback health check
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _kubectl(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def _node_manifest(name: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "1000"},
        },
    }


def create_nodes(cluster: Cluster, count: int, prefix: str = "kwok-node-") -> None:
    items = [_node_manifest(f"{prefix}{i}") for i in range(count)]
    _kubectl(cluster, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def running(cluster: Cluster) -> bool:
    pids = _read_pids(cluster)
    return bool(pids) and all(_alive(pid) for pid in pids.values())


def up(cluster: Cluster, binaries: Binaries) -> float:
    """Start the cluster (or reuse a healthy one); return seconds to ready.

    A start that fails part-way stops what it started, so the next attempt does not meet a half-running cluster;
    the logs are kept in ``<workdir>.failed/`` for a look.
    """
    try:
        return _up(cluster, binaries)
    except (ClusterError, real.NodeError, BuildError) as exc:
        started_something = cluster.pidfile.exists() and any(_alive(pid) for pid in _read_pids(cluster).values())
        if started_something or real_nodes_on_disk(cluster):
            failed = cluster.workdir.with_name(cluster.workdir.name + ".failed")
            shutil.rmtree(failed, ignore_errors=True)
            shutil.copytree(cluster.logs, failed / "logs", dirs_exist_ok=True)
            down(cluster)
            print(f"start-up failed; stopped the cluster (logs kept in {failed / 'logs'})", file=sys.stderr)
        if isinstance(exc, ClusterError):
            raise
        raise ClusterError(str(exc)) from exc


def _up(cluster: Cluster, binaries: Binaries) -> float:
    started = time.monotonic()
    if cluster.pidfile.exists():
        pids = _read_pids(cluster)
        if running(cluster) and _https_ok(cluster, f"{cluster.server}/readyz"):
            have = len(real_nodes_on_disk(cluster))
            if have < cluster.real_nodes:
                raise ClusterError(
                    "REAL=1: the running cluster was started without a real node (its API server is bound to "
                    "loopback only); run `make cluster-down` first"
                )
            # Images rebuilt since the boot (a changed operator/, say) reach the running node; unchanged ones cost
            # nothing (the import skips archives containerd already has).
            for node in real_nodes_on_disk(cluster):
                import_images(node.containerd_socket, _node_images())
            print(f"cluster already running (kubeconfig: {cluster.kubeconfig})")
            return 0.0
        alive = {name: pid for name, pid in pids.items() if _alive(pid)}
        if alive:
            raise ClusterError(
                f"work directory {cluster.workdir} belongs to a half-running cluster ({alive}); "
                "run `make cluster-down` first"
            )
        print(f"removing stale work directory {cluster.workdir} (its processes are gone)")
        # A crashed real node leaves mounts, namespaces and rules: remove them before the directory.
        for node in real_nodes_on_disk(cluster):
            real.teardown(node, lambda name: _stop_process(cluster, name), _node_binaries_dirs())
    busy = [(name, port) for name, port in vars(cluster.ports).items() if _port_in_use(port)]
    if busy:
        detail = "; ".join(f"{name} port {port} {_who_listens(port)}".strip() for name, port in busy)
        raise ClusterError(
            f"port(s) already in use: {detail}. Stop what holds them, or set COORDINATOR_CLUSTER_PORT_OFFSET."
        )
    for node in cluster.real:
        if Path(f"/sys/class/net/{node.bridge}").exists():
            _remove_left_behind(node)
    if cluster.workdir.exists():
        shutil.rmtree(cluster.workdir)
    cluster.logs.mkdir(parents=True)
    generate_pki(cluster)
    pki, ports = cluster.pki, cluster.ports
    write_kubeconfig(cluster, cluster.kubeconfig, "kubernetes-admin", "admin")
    write_kubeconfig(
        cluster,
        cluster.workdir / "controller-manager.kubeconfig",
        "system:kube-controller-manager",
        "controller-manager",
    )
    write_kubeconfig(cluster, cluster.workdir / "scheduler.kubeconfig", "system:kube-scheduler", "scheduler")

    _start(
        cluster,
        "etcd",
        [
            str(binaries.etcd),
            "--name=local",
            f"--data-dir={cluster.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=local=http://127.0.0.1:{ports.etcd_peer}",
            # A throwaway test cluster: durability is not worth an fsync per write.
            "--unsafe-no-fsync",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
    )
    _wait(cluster, "etcd", lambda: _port_in_use(ports.etcd_client), 30)

    _start(
        cluster,
        "kube-apiserver",
        [
            str(binaries.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            *_apiserver_address_flags(cluster),
            f"--secure-port={ports.apiserver}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--authorization-mode={'Node,RBAC' if cluster.real_nodes else 'RBAC'}",
            "--allow-privileged=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota,"
            "PodSecurity,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,MutatingAdmissionWebhook"
            + (",NodeRestriction" if cluster.real_nodes else ""),
            # Admission webhooks served by pods (the installed operator's) are dialled at their endpoints, as on
            # kind, rather than through the Service's ClusterIP from the host.
            "--enable-aggregator-routing=true",
            # COORDINATOR_CLUSTER_PROFILING=1 serves /debug/pprof (benchmarks/README.md: profiling the API server).
            f"--profiling={'true' if os.environ.get('COORDINATOR_CLUSTER_PROFILING') == '1' else 'false'}",
            "--v=1",
        ],
    )
    _wait(cluster, "kube-apiserver", lambda: _https_ok(cluster, f"{cluster.server}/readyz"), 60)

    _start(
        cluster,
        "kube-controller-manager",
        [
            str(binaries.kube_controller_manager),
            f"--kubeconfig={cluster.workdir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={cluster.workdir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={cluster.workdir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--leader-elect=false",
            "--controllers=*",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Simulated nodes never go away on their own; fast ReplicaSet/GC reactions keep tests short.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-deployment-syncs=10",
            "--concurrent-gc-syncs=20",
            "--v=1",
        ],
    )
    _start(
        cluster,
        "kube-scheduler",
        [
            str(binaries.kube_scheduler),
            f"--kubeconfig={cluster.workdir / 'scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={cluster.workdir / 'scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={cluster.workdir / 'scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=1",
        ],
    )
    kwok_config = cluster.workdir / "kwok.yaml"
    kwok_config.write_text(kwok_configuration(binaries.kwok.parent / "stages"))
    _start(
        cluster,
        "kwok",
        [
            str(binaries.kwok),
            f"--kubeconfig={cluster.kubeconfig}",
            f"--config={kwok_config}",
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            f"--cidr={POD_CIDR}",
            # The API server proxies exec/logs/port-forward to a node's address: keep any such connection on
            # loopback (nothing listens there for kwok's nodes, so it fails at once instead of leaving the host).
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{ports.kwok}",
            "--node-lease-duration-seconds=40",
        ],
    )
    _wait(
        cluster,
        "kube-controller-manager",
        lambda: _insecure_https_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz"),
        60,
    )
    _wait(
        cluster,
        "kube-scheduler",
        lambda: _insecure_https_ok(f"https://127.0.0.1:{ports.scheduler}/healthz"),
        60,
    )
    _wait(cluster, "kwok", lambda: _port_in_use(ports.kwok), 30)
    create_nodes(cluster, cluster.nodes)
    _wait(cluster, "kwok", lambda: _nodes_ready(cluster) >= cluster.nodes, 60)
    # Pods are refused until the ServiceAccount controller has made the default account.
    _wait(cluster, "kube-controller-manager", lambda: _has_default_service_account(cluster), 60)
    for node in cluster.real:
        _start_real_node(cluster, node)
    if cluster.real:
        _start_node_network(cluster, cluster.real[0])
    return time.monotonic() - started


def _apiserver_address_flags(cluster: Cluster) -> list[str]:
    """kwok-only: loopback. With real nodes the API server also listens where pods reach it (kube-proxy sends the
    ``kubernetes`` Service to the advertised address, the first real node's bridge address) and reaches kubelets
    with a client certificate by their InternalIP."""
    if not cluster.real_nodes:
        return ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
    pki = cluster.pki
    return [
        "--bind-address=0.0.0.0",
        f"--advertise-address={cluster.real[0].ip}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def _node_binaries_dirs() -> dict[str, Path]:
    dirs = binary_dirs(read_versions(), cache_root())
    return {"kube-proxy": dirs["node"] / "kube-proxy", "kube-router": dirs["kube-router"] / "kube-router"}


KUBE_ROUTER_RBAC = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:kube-router"}
rules:
  - apiGroups: [""]
    resources: [namespaces, pods, services, nodes, endpoints]
    verbs: [get, list, watch]
  - apiGroups: [networking.k8s.io]
    resources: [networkpolicies]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-router"}]
"""


def _start_real_node(cluster: Cluster, node: real.RealNode) -> None:
    """containerd, the images, the kubelet (Ready), then kube-proxy and kube-router's firewall (their chains)."""
    started = time.monotonic()
    node_bins = ensure_node_binaries()
    archives = _node_images()
    real.set_sysctls(cluster.workdir)
    real.share_netns_dir(cluster.workdir)
    real.create_bridge(node)
    real.write_node_files(node)
    _start(cluster, f"containerd-{node.name}", ["containerd", "--config", str(node.dir / "containerd.toml")])
    _wait(cluster, f"containerd-{node.name}", lambda: _containerd_ready(node), 60)
    import_images(node.containerd_socket, archives)
    kubeconfig = cluster.workdir / f"kubelet-{node.name}.kubeconfig"
    write_kubeconfig(cluster, kubeconfig, f"system:node:{node.name}", f"node-{node.name}")
    config = node.dir / "kubelet.json"
    config.write_text(json.dumps(real.kubelet_config(node, cluster.pki / "ca.crt")))
    _start(
        cluster,
        f"kubelet-{node.name}",
        [
            str(node_bins.kubelet),
            f"--config={config}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={node.kubelet_root}",
            f"--cert-dir={node.dir / 'pki'}",
            f"--hostname-override={node.name}",
            f"--node-ip={node.ip}",
            f"--node-labels={real.REAL_NODE_LABEL}={real.REAL_NODE_LABEL_VALUE},type=real",
            "--v=1",
        ],
    )
    _wait(cluster, f"kubelet-{node.name}", lambda: _node_ready(cluster, node.name), 90)
    print(f"real node {node.name} Ready in {time.monotonic() - started:.1f}s (pods on {node.pod_cidr})")


def _start_node_network(cluster: Cluster, node: real.RealNode) -> None:
    """One kube-proxy and one kube-router for every real node of the host (see node.py: they share an InternalIP)."""
    node_bins = ensure_node_binaries()
    _kubectl(cluster, "apply", "-f", "-", stdin=KUBE_ROUTER_RBAC)
    proxy_kubeconfig = cluster.workdir / "kube-proxy.kubeconfig"
    write_kubeconfig(cluster, proxy_kubeconfig, "system:kube-proxy", "kube-proxy")
    proxy_config = node.dir / "kube-proxy.json"
    proxy_config.write_text(
        json.dumps(
            real.kube_proxy_config(
                proxy_kubeconfig, node, cluster.ports.kube_proxy_metrics, cluster.ports.kube_proxy_healthz
            )
        )
    )
    _start(cluster, "kube-proxy", [str(node_bins.kube_proxy), f"--config={proxy_config}", "--v=1"])
    router_kubeconfig = cluster.workdir / "kube-router.kubeconfig"
    write_kubeconfig(cluster, router_kubeconfig, "system:kube-router", "kube-router")
    _start(
        cluster,
        "kube-router",
        [
            str(node_bins.kube_router),
            f"--kubeconfig={router_kubeconfig}",
            f"--hostname-override={node.name}",
            "--run-firewall=true",
            "--run-router=false",
            "--run-service-proxy=false",
            "--run-loadbalancer=false",
            "--enable-cni=false",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--health-port=0",
            "--iptables-sync-period=1m",
            "--v=1",
        ],
    )
    _wait(cluster, "kube-proxy", lambda: _chain_exists("KUBE-SERVICES"), 60)
    _wait(cluster, "kube-router", lambda: _chain_exists("KUBE-ROUTER-FORWARD"), 60)


def _node_images() -> dict[str, Path]:
    sys.path.insert(0, str(REPO_ROOT / "hack" / "images"))
    from images import ensure_images

    return ensure_images(list(real.NODE_IMAGES))


def import_images(socket_path: Path, archives: dict[str, Path]) -> None:
    sys.path.insert(0, str(REPO_ROOT / "hack" / "images"))
    from images import import_images as _import

    _import(socket_path, list(archives.values()))


def _containerd_ready(node: real.RealNode) -> bool:
    if not node.containerd_socket.exists():
        return False
    proc = subprocess.run(
        ["ctr", "--address", str(node.containerd_socket), "version"], capture_output=True, check=False, timeout=10
    )
    return proc.returncode == 0


def _node_ready(cluster: Cluster, name: str) -> bool:
    try:
        out = _kubectl(cluster, "get", "node", name, "-o", "json")
    except ClusterError:
        return False
    conditions = json.loads(out).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _chain_exists(chain: str) -> bool:
    proc = subprocess.run(["iptables", "-w", "5", "-S", chain], capture_output=True, check=False, timeout=30)
    return proc.returncode == 0


# A pod annotated with this (a Go duration, e.g. "2s") becomes Ready that long after kwok first sees it scheduled:
# a known, controllable start-up time for recovery-time measurements. Without it pods are Ready at once.
READY_DELAY_ANNOTATION = "pod-ready.stage.kwok.x-k8s.io/delay"


def kwok_configuration(stages: Path) -> str:
    """kwok's settings plus its "fast" pod Stages, the pod-ready one with a per-pod delay from an annotation."""
    docs = [
        "apiVersion: config.kwok.x-k8s.io/v1alpha1\n"
        "kind: KwokConfiguration\n"
        "options:\n"
        "  enableCNI: false\n"
        "  nodeLeaseParallelism: 16\n"
        "  podPlayStageParallelism: 16\n"
        "  nodePlayStageParallelism: 4\n"
    ]
    for path in sorted(stages.glob("pod-*.yaml")):
        text = path.read_text()
        if path.name == "pod-ready.yaml":
            marker = "  next:\n"
            if marker not in text:
                raise ClusterError(f"{path}: unexpected Stage layout; cannot add the ready delay")
            delay = (
                "  delay:\n"
                "    durationMilliseconds: 0\n"
                "    durationFrom:\n"
                f"      expressionFrom: '.metadata.annotations[\"{READY_DELAY_ANNOTATION}\"]'\n"
            )
            text = text.replace(marker, delay + marker, 1)
        docs.append(text)
    return "---\n".join(docs)


def _nodes_ready(cluster: Cluster) -> int:
    try:
        out = _kubectl(cluster, "get", "nodes", "-o", "json")
    except ClusterError:
        return 0
    ready = 0
    for node in json.loads(out)["items"]:
        for cond in node.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                ready += 1
    return ready


def _has_default_service_account(cluster: Cluster) -> bool:
    try:
        _kubectl(cluster, "get", "serviceaccount", "default", "-n", "default")
    except ClusterError:
        return False
    return True


def _stop_process(cluster: Cluster, name: str, timeout: float = 15.0) -> None:
    pid = _read_pids(cluster).get(name)
    if pid is None or not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _remove_left_behind(node: real.RealNode) -> None:
    """A bridge ``coord<i>`` is already on this host. Refuse while its node's daemons live (one real node per host);
    when they are gone (a cluster whose test session or machine was killed), remove what it left and go on."""
    live = real.node_daemons(node.index)
    if live:
        first = next(iter(live.items()))
        raise ClusterError(
            f"a real node already runs on this host (bridge {node.bridge}, pid {first[0]}: {first[1][:160]}): one "
            "real node per host. Stop its cluster first (`make cluster-down`, with the COORDINATOR_CLUSTER_DIR and "
            "COORDINATOR_CLUSTER_PORT_OFFSET it was started with; the real test tier uses .cluster-real and 1000)"
        )
    stale = real.left_behind(node.index)
    print(f"removing real node {stale.name} left on this host by a stopped cluster (work directory {stale.workdir})")
    pids: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        pids = json.loads((stale.workdir / "pids.json").read_text())

    def stop(name: str) -> None:
        # Only a process that still names the work directory: after a reboot the recorded pid may be anyone's.
        pid = pids.get(name)
        with contextlib.suppress(OSError):
            if pid is not None and str(stale.workdir).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)

    real.teardown(stale, stop, _node_binaries_dirs())
    left = real.leftovers(stale, {})
    if left:
        raise ClusterError("a stopped cluster's real node could not be removed from this host:\n  " + "\n  ".join(left))


def real_nodes_on_disk(cluster: Cluster) -> list[real.RealNode]:
    """Real nodes whose state is on this host, whether or not their processes still run (a crash leaves some)."""
    nodes_dir = cluster.workdir / "nodes"
    if not nodes_dir.is_dir():
        return []
    found = [p.name for p in nodes_dir.iterdir() if p.name.startswith(real.REAL_NODE_PREFIX)]
    return [real.RealNode(cluster.workdir, int(n.removeprefix(real.REAL_NODE_PREFIX))) for n in sorted(found)]


def down(cluster: Cluster, timeout: float = 15.0) -> None:
    """Stop every process of the cluster (TERM, then KILL), remove real nodes from the host, and remove the work
    directory. Raises when anything of a real node is still on the host afterwards."""
    nodes = real_nodes_on_disk(cluster)
    saved_sysctls = _saved_sysctls(cluster)
    for node in nodes:
        real.teardown(node, lambda name: _stop_process(cluster, name), _node_binaries_dirs())
    pids = _read_pids(cluster)
    # Reverse start order: clients before the servers they talk to.
    for name in reversed(list(pids)):
        pid = pids[name]
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.1)
    still = [name for name, pid in pids.items() if _alive(pid)]
    if still:
        raise ClusterError(f"could not stop: {', '.join(still)}")
    left = [item for node in nodes for item in real.leftovers(node, saved_sysctls)]
    if left:
        raise ClusterError("the real node left these behind (the work directory is kept):\n  " + "\n  ".join(left))
    if cluster.workdir.exists():
        shutil.rmtree(cluster.workdir)


def _saved_sysctls(cluster: Cluster) -> dict[str, str]:
    record = cluster.workdir / "sysctls.json"
    try:
        saved: dict[str, str] = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return saved


def requested_real_nodes() -> int:
    """``REAL=1`` asks for real nodes; ``COORDINATOR_CLUSTER_REAL_NODES`` says how many (default 1)."""
    if os.environ.get("REAL", "") in ("", "0"):
        return 0
    count = int(os.environ.get("COORDINATOR_CLUSTER_REAL_NODES", "1"))
    if not 1 <= count <= MAX_REAL_NODES:
        raise ClusterError(
            f"COORDINATOR_CLUSTER_REAL_NODES={count}: between 1 and {MAX_REAL_NODES} real nodes (each runs a "
            "containerd and a kubelet on this host; kwok's simulated nodes supply the scale)"
        )
    return count


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "up"
    try:
        cluster = Cluster(
            workdir=default_workdir(),
            nodes=int(os.environ.get("COORDINATOR_CLUSTER_NODES", "3")),
            real_nodes=requested_real_nodes() if command == "up" else 0,
        )
        if command == "build":
            ensure_binaries()
        elif command == "build-helm":
            print(ensure_helm())
        elif command == "build-otelcol":
            print(ensure_otelcol())
        elif command == "build-real":
            # Everything a real node needs that takes minutes the first time: kubelet, kube-proxy, kube-router, images.
            reason = real.host_unsupported_reason()
            if reason:
                print(f"skipping the real node's binaries and images: {reason}")
                return 0
            ensure_node_binaries()
            _node_images()
        elif command == "up":
            versions = read_versions()
            bins = ensure_binaries(versions)
            if cluster.real_nodes:
                reason = real.host_unsupported_reason()
                if reason:
                    raise ClusterError(f"REAL=1: {reason}")
            seconds = up(cluster, bins)
            extra = f" and {cluster.real_nodes} real node(s)" if cluster.real_nodes else ""
            print(f"cluster ready in {seconds:.1f}s: Kubernetes {versions.kube}, {cluster.nodes} kwok nodes{extra}")
            print(f"  export KUBECONFIG={cluster.kubeconfig}")
            print("  kubectl get nodes,pods -A")
        elif command == "down":
            down(cluster)
            print("cluster stopped")
        elif command == "status":
            print("running" if running(cluster) else "stopped")
            return 0 if running(cluster) else 1
        elif command == "kubeconfig":
            print(cluster.kubeconfig)
        else:
            print(f"usage: hack/cluster [build|up|down|status|kubeconfig] (got {command!r})", file=sys.stderr)
            return 2
    except (ClusterError, BuildError, real.NodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
