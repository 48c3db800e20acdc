"""A real node for the local cluster (``make cluster-up REAL=1``): containerd, runc, CNI, kubelet, kube-proxy and
kube-router's NetworkPolicy firewall as plain host processes. Standard library only.

Everything a node owns is under ``<workdir>/nodes/<name>/`` (containerd's root and state, runc's state, the CNI
IPAM store, the kubelet's root) or is named after the node (the bridge ``coord<i>``). The host-wide pieces are
kube-proxy's and kube-router's iptables chains and ipsets, two sysctls, and the network namespaces containerd
makes for pods; ``teardown`` removes each of them and ``leftovers`` lists whatever is still there, so
``make cluster-down`` can prove it left nothing behind.

Several real nodes (``COORDINATOR_CLUSTER_REAL_NODES``) share one host: each has its own containerd, kubelet
(port 10250 + index), bridge and pod subnet, and all report the same InternalIP, so one kube-proxy and one
kube-router (both program host-wide iptables chains, and two of each would rewrite each other's rules) serve the
pods of every real node. kwok's simulated nodes supply the scale.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# The pod network of real nodes; kwok's simulated pods use 10.244.0.0/16, the Services 10.96.0.0/12.
REAL_POD_NETWORK = "10.245"
REAL_NODE_PREFIX = "real-"
# Pods meant for a real node select it by this label and tolerate this taint; nothing else lands there by accident.
REAL_NODE_LABEL = "chaos.coordinator.dev/node"
REAL_NODE_LABEL_VALUE = "real"
REAL_NODE_TAINT = "chaos.coordinator.dev/real-node"
# The pod sandbox ("pause") image, built by hack/images from a small Go program.
SANDBOX_IMAGE = "test-coordinator-pause:3.10"
# Images every real node gets, built locally by hack/images and imported into containerd's k8s.io namespace.
NODE_IMAGES = ("pause", "web", "tools", "operator", "postgres")
CNI_BIN_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/var/run/netns")
# Which work directory a bridge ``coord<i>`` belongs to, host-wide (a cluster started from another clone or another
# COORDINATOR_CLUSTER_DIR must find it): written when the bridge is made, removed when it goes. /run is emptied by a
# reboot, as the bridge is.
OWNER_RECORDS = Path("/run/test-coordinator")
# The node processes whose life decides whether a real node is running or was left behind by a killed cluster.
NODE_DAEMONS = ("containerd", "kubelet")
# (sysctl, value a real node needs): bridged pod traffic must pass iptables (kube-proxy, kube-router), and a pod
# reaching a Service whose endpoint is a pod on the same bridge is routed back out through the host.
SYSCTLS = (("net/bridge/bridge-nf-call-iptables", "1"), ("net/ipv4/ip_forward", "1"))
# Host tools a real node runs or its teardown needs (command -> Debian package).
HOST_TOOLS = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "ipset": "ipset",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "mmdebstrap": "mmdebstrap",
    "buildah": "buildah",
}
CNI_PLUGINS = ("bridge", "host-local", "loopback")
DEBIAN_PACKAGES = (*sorted(set(HOST_TOOLS.values())), "containernetworking-plugins")


class NodeError(RuntimeError):
    """A real node cannot be started or removed; the message says why."""


@dataclass(frozen=True)
class RealNode:
    workdir: Path
    index: int = 0

    @property
    def name(self) -> str:
        return f"{REAL_NODE_PREFIX}{self.index}"

    @property
    def dir(self) -> Path:
        return self.workdir / "nodes" / self.name

    @property
    def bridge(self) -> str:
        return f"coord{self.index}"

    @property
    def ip(self) -> str:
        """The node's InternalIP, the same for every real node of the host: the first node's bridge address.

        kube-router's firewall treats the pods whose hostIP is its node's address as its own, so one kube-router
        (and one kube-proxy) serves every real node of the host; the kubelets tell apart by port."""
        return f"{REAL_POD_NETWORK}.0.1"

    @property
    def gateway(self) -> str:
        """The address of this node's pod bridge, its pods' default gateway."""
        return f"{REAL_POD_NETWORK}.{self.index}.1"

    @property
    def kubelet_port(self) -> int:
        return 10250 + self.index

    @property
    def pod_cidr(self) -> str:
        return f"{REAL_POD_NETWORK}.{self.index}.0/24"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd"

    @property
    def runc_root(self) -> Path:
        return self.dir / "runc"

    @property
    def kubelet_root(self) -> Path:
        return self.dir / "kubelet"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.dir / "cni" / "ipam"

    @property
    def netns_record(self) -> Path:
        return self.dir / "netns.json"


def host_unsupported_reason() -> str | None:
    """Why this host cannot run a real node, in one line, or None when it can."""
    if os.name != "posix" or not Path("/proc/self/mountinfo").exists():
        return "a real node needs Linux"
    if os.geteuid() != 0:
        return "a real node needs root (containerd, network namespaces, iptables)"
    missing = sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})
    missing += ["containernetworking-plugins"] if any(not (CNI_BIN_DIR / p).exists() for p in CNI_PLUGINS) else []
    if missing:
        return f"a real node needs the Debian packages: {' '.join(missing)}"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "a real node needs the kernel's br_netfilter (net.bridge.bridge-nf-call-iptables is missing)"
    if not Path("/sys/fs/cgroup/memory").is_dir() and not Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "a real node needs cgroups mounted at /sys/fs/cgroup"
    return None


# --- configuration ---------------------------------------------------------------------------------------------


def containerd_config(node: RealNode) -> str:
    """containerd 1.6 (CRI v1) with all of its state under the node's directory.

    ``restrict_oom_score_adj``: root here lacks CAP_SYS_RESOURCE, so the kubelet's -998 sandbox OOM score would be
    refused (runc reports only "can't get final child's PID from pipe: EOF"). runc, not crun: crun refuses the
    hybrid cgroup v1 layout.
    """
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{node.containerd_root / "root"}"
state = "{node.containerd_root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{node.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{node.containerd_root / "opt"}"

[{cri}]
  sandbox_image = "{SANDBOX_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc") or "runc"}"
        Root = "{node.runc_root}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{node.cni_conf_dir}"
    max_conf_num = 1
"""


def cni_config(node: RealNode) -> dict[str, object]:
    """A Linux bridge per node with host-local IPAM. No IP masquerade and no portmap: neither is needed on one host,
    and both would add iptables rules that only a CNI DEL removes."""
    return {
        "cniVersion": "0.4.0",
        "name": "coordinator",
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr, "gateway": node.gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(node.cni_ipam_dir),
                },
            }
        ],
    }


def kubelet_config(node: RealNode, ca_file: Path) -> dict[str, object]:
    """What this host needs of a kubelet: cgroupfs on cgroup v1 without per-QoS cgroups or node-allocatable
    enforcement (the root cgroup is not ours to carve up), no swap check, and eviction thresholds that a shared
    development disk does not trip."""
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        # No healthz port: readiness is the Node's Ready condition, and several kubelets share this host.
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupsPerQOS": False,
        "enforceNodeAllocatable": [],
        "failCgroupV1": False,
        "failSwapOn": False,
        "podCIDR": node.pod_cidr,
        "resolvConf": "/etc/resolv.conf",
        "registerWithTaints": [{"key": REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}],
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "shutdownGracePeriod": "0s",
        "localStorageCapacityIsolation": True,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "maxPods": 110,
        # The kubelet's own KUBE-FIREWALL/KUBE-KUBELET-CANARY chains are not needed on a development host.
        "makeIPTablesUtilChains": False,
    }


def kube_proxy_config(kubeconfig: Path, node: RealNode, metrics_port: int, healthz_port: int) -> dict[str, object]:
    """iptables mode. ``conntrack.maxPerCore: 0`` leaves the host's conntrack table size alone, and node ports
    are served only on the node's bridge address (so kube-proxy never sets route_localnet)."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "bindAddress": node.ip,
        "clusterCIDR": f"{REAL_POD_NETWORK}.0.0/16",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "nodePortAddresses": [f"{node.ip}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
    }


# --- host state --------------------------------------------------------------------------------------------------


def _run(*cmd: str, check: bool = True, timeout: float = 60) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=timeout)
    if check and proc.returncode != 0:
        raise NodeError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name


def set_sysctls(workdir: Path) -> None:
    """Set what a real node needs, remembering the host's values (once) so teardown puts them back."""
    record = workdir / "sysctls.json"
    saved: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
    for name, value in SYSCTLS:
        path = _sysctl_path(name)
        saved.setdefault(name, path.read_text().strip())
        path.write_text(value)
    record.write_text(json.dumps(saved))


def restore_sysctls(workdir: Path) -> None:
    record = workdir / "sysctls.json"
    if not record.exists():
        return
    for name, value in json.loads(record.read_text()).items():
        with contextlib.suppress(OSError):
            _sysctl_path(name).write_text(value)
    record.unlink()


def _is_mount_point(path: Path) -> bool:
    target = str(path.resolve())
    return any(line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines())


def share_netns_dir(workdir: Path) -> None:
    """Make /run/netns a shared bind mount of itself before containerd mounts pods' namespaces there.

    ``ip netns add`` does this on first use. Done after pods exist, it hides their namespace mounts under the new
    bind mount, and the kubelet can then never remove those pods ("remove netns: device or resource busy").
    Done first, by us, later ``ip netns`` calls leave it alone."""
    netns = NETNS_DIR.resolve()
    netns.mkdir(parents=True, exist_ok=True)
    if _is_mount_point(netns):
        return
    _run("mount", "--bind", str(netns), str(netns))
    _run("mount", "--make-shared", str(netns))
    (workdir / "netns-mount").write_text(str(netns))


def unshare_netns_dir(workdir: Path) -> None:
    """Undo ``share_netns_dir`` if this cluster made the mount and nobody else's namespace lives there now."""
    record = workdir / "netns-mount"
    if not record.exists():
        return
    netns = Path(record.read_text())
    if any(netns.iterdir()):
        return  # namespaces are still there (ours, if the teardown failed: the next attempt comes back here)
    _run("umount", str(netns), check=False)
    record.unlink()


def _owner_record(index: int) -> Path:
    return OWNER_RECORDS / f"coord{index}.json"


def record_owner(node: RealNode) -> None:
    OWNER_RECORDS.mkdir(parents=True, exist_ok=True)
    _owner_record(node.index).write_text(json.dumps({"workdir": str(node.workdir)}))


def forget_owner(node: RealNode) -> None:
    record = _owner_record(node.index)
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(record.read_text())["workdir"] == str(node.workdir):
            record.unlink()


def _cmdlines() -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            found[int(entry.name)] = raw.rstrip(b"\0").decode(errors="replace").split("\0")
    return found


def node_daemons(index: int, cmdlines: dict[int, list[str]] | None = None) -> dict[int, str]:
    """Live containerd and kubelet processes of real node ``index`` of any cluster on this host (pid -> command)."""
    marker = f"/nodes/{REAL_NODE_PREFIX}{index}/"
    live: dict[int, str] = {}
    for pid, argv in (_cmdlines() if cmdlines is None else cmdlines).items():
        if Path(argv[0]).name in NODE_DAEMONS and any(marker in arg for arg in argv[1:]):
            live[pid] = " ".join(argv)
    return live


def left_behind(index: int, cmdlines: dict[int, list[str]] | None = None, mounts: list[str] | None = None) -> RealNode:
    """The real node ``index`` that a killed cluster left on this host (its bridge is here, its daemons are not).

    Its work directory comes from the owner record, else from a surviving containerd-shim's socket path, else from
    a mount still under the node's directory (a pod's volume, a sandbox's shm); when none knows it, the node is
    addressed by its bridge and pod subnet alone."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return RealNode(Path(json.loads(_owner_record(index).read_text())["workdir"]), index)
    suffix = f"/nodes/{REAL_NODE_PREFIX}{index}/containerd.sock"
    for argv in (_cmdlines() if cmdlines is None else cmdlines).values():
        if "containerd-shim" not in Path(argv[0]).name:
            continue
        for arg in argv:
            if arg.endswith(suffix):
                return RealNode(Path(arg.removesuffix(suffix)), index)
    marker = f"/nodes/{REAL_NODE_PREFIX}{index}/"
    for point in _mounts_under(["/"]) if mounts is None else mounts:
        if marker in point:
            return RealNode(Path(point.split(marker, 1)[0]), index)
    return RealNode(OWNER_RECORDS / "unknown", index)


def _pod_network_namespaces(node: RealNode) -> list[str]:
    """Namespaces under /run/netns whose interfaces carry an address of this node's pod subnet: the pods' own,
    found without containerd (a killed containerd cannot list its sandboxes)."""
    prefix = node.pod_cidr.rsplit(".", 1)[0] + "."
    found: list[str] = []
    if not NETNS_DIR.is_dir():
        return found
    for entry in NETNS_DIR.iterdir():
        if not entry.name.startswith("cni-"):
            continue
        out = _run("ip", "-n", entry.name, "-4", "-o", "addr", "show", check=False, timeout=10)
        if f"inet {prefix}" in out:
            found.append(str(entry))
    return found


def create_bridge(node: RealNode) -> None:
    """The pod bridge exists before the kubelet starts: the kubelet serves on the node address it carries."""
    record_owner(node)
    if not Path(f"/sys/class/net/{node.bridge}").exists():
        _run("ip", "link", "add", node.bridge, "type", "bridge")
    _run("ip", "addr", "replace", f"{node.gateway}/24", "dev", node.bridge)
    _run("ip", "link", "set", node.bridge, "up")


def write_node_files(node: RealNode) -> None:
    for path in (node.cni_conf_dir, node.cni_ipam_dir, node.kubelet_root, node.runc_root, node.containerd_root):
        path.mkdir(parents=True, exist_ok=True)
    (node.dir / "containerd.toml").write_text(containerd_config(node))
    (node.cni_conf_dir / "10-coordinator.conflist").write_text(json.dumps(cni_config(node), indent=2) + "\n")


def _ctr(node: RealNode, *args: str, check: bool = True, timeout: float = 60) -> str:
    return _run("ctr", "--address", str(node.containerd_socket), "-n", "k8s.io", *args, check=check, timeout=timeout)


def _sandbox_netns_paths(node: RealNode) -> list[str]:
    if not node.containerd_socket.exists():
        return []
    paths: list[str] = []
    ids = _ctr(node, "containers", "ls", "-q", check=False, timeout=20).split()
    for cid in ids:
        info = _ctr(node, "containers", "info", cid, check=False, timeout=20)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            for ns in json.loads(info)["Spec"]["linux"]["namespaces"]:
                if ns.get("type") == "network" and ns.get("path", "").startswith(str(NETNS_DIR)):
                    paths.append(ns["path"])
    return paths


def _mounts_under(prefixes: list[str]) -> list[str]:
    """Mount points at or below any prefix, deepest first."""
    found: list[str] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _shim_pids(node: RealNode) -> list[int]:
    """containerd-shim processes of this node's containerd (they outlive containerd itself)."""
    pids: list[int] = []
    needle = str(node.containerd_socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim" in cmdline and needle in cmdline:
            pids.append(int(entry.name))
    return pids


def _iptables_leftovers() -> list[str]:
    lines: list[str] = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool) is None:
            continue
        out = _run(tool, check=False)
        lines += [f"{tool}: {ln}" for ln in out.splitlines() if _ours(ln) or ln.startswith(":CNI-")]
    return lines


def _ipset_leftovers() -> list[str]:
    if shutil.which("ipset") is None:
        return []
    names = _run("ipset", "list", "-n", check=False).split()
    return [f"ipset {n}" for n in names if n.startswith(("KUBE-", "kube-router"))]


def teardown(node: RealNode, stop_process: Callable[[str], None], node_binaries: dict[str, Path]) -> None:
    """Remove a real node from the host: its pods' containers, containerd, mounts, network namespaces, veths,
    the bridge, kube-proxy's and kube-router's rules, and the sysctls. Safe to run twice and after a crash."""
    # The kubelet first, so it does not restart what is being removed; then the rule writers.
    for name in (f"kubelet-{node.name}", "kube-proxy", "kube-router"):
        stop_process(name)
    netns = set(json.loads(node.netns_record.read_text()) if node.netns_record.exists() else [])
    netns.update(_sandbox_netns_paths(node))
    netns.update(_pod_network_namespaces(node))
    # /var/run is a link to /run: the mount table names the resolved path.
    netns = {os.path.realpath(path) for path in netns}
    # Kept until the node's directory goes, so a teardown that fails part-way still knows them next time.
    if node.dir.is_dir():
        node.netns_record.write_text(json.dumps(sorted(netns)))
    if node.containerd_socket.exists():
        for task in _ctr(node, "tasks", "ls", "-q", check=False, timeout=20).split():
            _ctr(node, "tasks", "kill", "-s", "SIGKILL", task, check=False, timeout=20)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _ctr(node, "tasks", "ls", "-q", check=False, timeout=20).split():
            time.sleep(0.2)
    stop_process(f"containerd-{node.name}")
    for pid in _shim_pids(node):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _shim_pids(node):
        time.sleep(0.1)
    for point in _mounts_under([str(node.dir), *sorted(netns)]):
        _run("umount", "-l", point, check=False)
    for path in netns:
        # A namespace file can carry stacked mounts (a bind mount of /run/netns made while it existed).
        for _ in range(4):
            if not _mounts_under([path]):
                break
            _run("umount", "-l", path, check=False)
        with contextlib.suppress(OSError):
            Path(path).unlink()
    # A pod's host-side veth goes with its namespace; any still attached to the bridge go now, then the bridge.
    if Path(f"/sys/class/net/{node.bridge}").exists():
        for link in Path(f"/sys/class/net/{node.bridge}/brif").iterdir():
            _run("ip", "link", "delete", link.name, check=False)
        _run("ip", "link", "delete", node.bridge, check=False)
    if node_binaries.get("kube-proxy", Path()).is_file():
        _run(str(node_binaries["kube-proxy"]), "--cleanup", check=False, timeout=120)
    # kube-router's own --cleanup-config needs an API server and panics without one: its chains and sets, and what
    # kube-proxy's cleanup leaves (its canary chains, the kubelet's), go in one sweep.
    sweep_iptables()
    sweep_ipsets()
    restore_sysctls(node.workdir)
    unshare_netns_dir(node.workdir)
    forget_owner(node)


def _ours(line: str) -> bool:
    """An iptables-save line that belongs to kube-proxy, kube-router or the kubelet."""
    return (
        line.startswith((":KUBE-", "-A KUBE-"))
        or " -j KUBE-" in line
        or " --jump KUBE-" in line
        or '--comment "kube-router' in line
        or " -g KUBE-" in line
    )


def sweep_iptables() -> None:
    """Remove every KUBE-* chain and every rule that jumps to one, in every table, for IPv4 and IPv6."""
    for save, restore in (("iptables-save", "iptables-restore"), ("ip6tables-save", "ip6tables-restore")):
        if shutil.which(save) is None or shutil.which(restore) is None:
            continue
        dump = _run(save, check=False)
        if "KUBE-" not in dump and "kube-router" not in dump:
            continue
        kept = "\n".join(line for line in dump.splitlines() if not _ours(line)) + "\n"
        proc = subprocess.run([restore], input=kept, capture_output=True, text=True, check=False, timeout=60)
        if proc.returncode != 0:
            raise NodeError(f"{restore} failed while removing the node's rules: {proc.stderr.strip()}")


def sweep_ipsets() -> None:
    if shutil.which("ipset") is None:
        return
    for name in _run("ipset", "list", "-n", check=False).split():
        if name.startswith(("KUBE-", "kube-router")):
            _run("ipset", "destroy", name, check=False)


def leftovers(node: RealNode, saved_sysctls: dict[str, str] | None = None) -> list[str]:
    """Everything of a real node still on the host after its teardown (empty means clean)."""
    found: list[str] = []
    found += [f"process {pid} (containerd-shim)" for pid in _shim_pids(node)]
    found += [f"mount {p}" for p in _mounts_under([str(node.dir)])]
    if node.netns_record.exists():
        found += [f"netns {p}" for p in json.loads(node.netns_record.read_text()) if Path(p).exists()]
        found += [
            f"mount {p}"
            for p in _mounts_under([os.path.realpath(p) for p in json.loads(node.netns_record.read_text())])
        ]
    if Path(f"/sys/class/net/{node.bridge}").exists():
        found.append(f"link {node.bridge}")
    found += [f"link {ln}" for ln in _veths_without_peer()]
    found += _iptables_leftovers()
    found += _ipset_leftovers()
    for name, value in (saved_sysctls or {}).items():
        current = _sysctl_path(name).read_text().strip()
        if current != value:
            found.append(f"sysctl {name}={current} (was {value})")
    return found


def _veths_without_peer() -> list[str]:
    """Host veths whose other end lived in a pod: their peer namespace is gone only if the link is gone too, so any
    veth named like the CNI bridge plugin's (``veth`` + 8 hex digits) that is still here is a leftover."""
    names: list[str] = []
    for link in Path("/sys/class/net").iterdir():
        name = link.name
        if name.startswith("veth") and len(name) == 12 and all(c in "0123456789abcdef" for c in name[4:]):
            names.append(name)
    return names
