"""The real node's configuration and teardown rules (hack/cluster/node.py), pure parts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from support.realnode import NODE


def test_containerd_keeps_all_state_under_the_node_and_carries_what_this_host_needs(tmp_path: Path) -> None:
    node = NODE.RealNode(tmp_path, 0)
    config = tomllib.loads(NODE.containerd_config(node))
    for key in ("root", "state"):
        assert config[key].startswith(str(node.dir))
    assert config["grpc"]["address"] == str(node.containerd_socket)
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True, "root here lacks CAP_SYS_RESOURCE"
    assert cri["sandbox_image"] == NODE.SANDBOX_IMAGE
    runc = cri["containerd"]["runtimes"]["runc"]["options"]
    assert runc["Root"] == str(node.runc_root), "runc's state too, or teardown misses it"
    assert runc["SystemdCgroup"] is False
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"


def test_the_pod_network_adds_no_rules_only_a_cni_del_would_remove(tmp_path: Path) -> None:
    node = NODE.RealNode(tmp_path, 0)
    (bridge,) = NODE.cni_config(node)["plugins"]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["dataDir"].startswith(str(node.dir))
    assert bridge["ipam"]["ranges"][0][0]["gateway"] == node.ip


def test_the_kubelet_registers_tainted_and_serves_on_the_node_address(tmp_path: Path) -> None:
    node = NODE.RealNode(tmp_path, 0)
    config = NODE.kubelet_config(node, tmp_path / "ca.crt")
    assert config["registerWithTaints"] == [{"key": NODE.REAL_NODE_TAINT, "value": "true", "effect": "NoSchedule"}]
    assert config["address"] == node.ip
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["failCgroupV1"] is False
    assert config["makeIPTablesUtilChains"] is False


@pytest.mark.parametrize(
    ("line", "ours"),
    [
        (":KUBE-SERVICES - [0:0]", True),
        ("-A KUBE-POD-FW-ABC -j ACCEPT", True),
        ('-A FORWARD -m comment --comment "kube-router netpol - X" -j KUBE-ROUTER-FORWARD', True),
        ('-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES', True),
        ("-A INPUT -p tcp --dport 22 -j ACCEPT", False),
        (":DOCKER-USER - [0:0]", False),
        ("-A CNI-FORWARD -j ACCEPT", False),
    ],
)
def test_the_iptables_sweep_takes_only_kubernetes_rules(line: str, ours: bool) -> None:
    assert NODE._ours(line) is ours


def test_real_nodes_share_one_address_and_differ_by_bridge_subnet_and_port(tmp_path: Path) -> None:
    # kube-router takes the pods whose hostIP is its node's address as its own: one firewall for every real node.
    first, second = NODE.RealNode(tmp_path, 0), NODE.RealNode(tmp_path, 1)
    assert first.ip == second.ip == first.gateway
    assert second.gateway != first.gateway
    assert (first.bridge, second.bridge) == ("coord0", "coord1")
    assert (first.kubelet_port, second.kubelet_port) == (10250, 10251)
    assert NODE.kubelet_config(second, tmp_path / "ca.crt")["port"] == 10251
    (bridge,) = NODE.cni_config(second)["plugins"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": second.pod_cidr, "gateway": second.gateway}]]


def test_a_real_node_is_running_only_while_its_containerd_or_kubelet_lives(tmp_path: Path) -> None:
    cmdlines = {
        10: ["containerd", "--config", f"{tmp_path}/nodes/real-0/containerd.toml"],
        11: ["/cache/kubelet", f"--root-dir={tmp_path}/nodes/real-1/kubelet"],
        12: ["grep", f"{tmp_path}/nodes/real-0/"],
        13: ["/usr/bin/containerd-shim-runc-v2", "-address", f"{tmp_path}/nodes/real-0/containerd.sock"],
    }
    assert set(NODE.node_daemons(0, cmdlines)) == {10}, "a grep naming the path is not the node; a shim outlives it"
    assert set(NODE.node_daemons(1, cmdlines)) == {11}
    assert NODE.node_daemons(2, cmdlines) == {}


def test_a_left_behind_node_is_found_by_its_owner_record_then_by_a_surviving_shim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NODE, "OWNER_RECORDS", tmp_path / "owners")
    shim = {
        7: ["/usr/bin/containerd-shim-runc-v2", "-address", "/tmp/clone/.cluster-real/nodes/real-0/containerd.sock"]
    }
    assert NODE.left_behind(0, shim, []).workdir == Path("/tmp/clone/.cluster-real")
    volume = "/w/.cluster-real/nodes/real-0/kubelet/pods/u/volumes/kubernetes.io~projected/x"
    assert NODE.left_behind(0, {}, ["/proc", volume]).workdir == Path("/w/.cluster-real"), "then by a mount"
    assert NODE.left_behind(0, {}, []).workdir == tmp_path / "owners" / "unknown", "then by bridge and subnet alone"
    node = NODE.RealNode(tmp_path / "cluster", 0)
    NODE.record_owner(node)
    assert NODE.left_behind(0, shim, []) == node
    NODE.forget_owner(NODE.RealNode(tmp_path / "another", 0))
    assert NODE.left_behind(0, {}, []) == node, "only the owner's own teardown forgets it"
    NODE.forget_owner(node)
    assert NODE.left_behind(0, {}, []).workdir == tmp_path / "owners" / "unknown"
