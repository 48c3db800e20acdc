"""hack/cluster itself: a second cluster boots from the cached binaries and stops without leaving anything behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from coordinator.testing.waiting import wait_for
from support.cluster import CLUSTER_SCRIPT, ClusterUnderTest

OFFSET = 1000  # a second cluster beside the session's one
PORTS = [p + OFFSET for p in (12379, 12380, 16443, 20257, 20259, 20247)]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _cluster(command: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COORDINATOR_CLUSTER_PORT_OFFSET": str(OFFSET), "COORDINATOR_CLUSTER_DIR": str(workdir)}
    env.pop("KIND", None)
    return subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), command], env=env, capture_output=True, text=True, timeout=300
    )


def test_second_cluster_boots_from_cache_and_leaves_nothing_behind(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    if not cluster.local:
        pytest.skip("exercises hack/cluster's Go-built control plane; this session runs against another cluster")
    workdir = tmp_path / "second"
    started = time.monotonic()
    up = _cluster("up", workdir)
    elapsed = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stderr
        assert "building" not in up.stdout, "binaries were rebuilt instead of taken from the cache"
        assert elapsed < 60, f"warm boot took {elapsed:.1f}s"
        pids = json.loads((workdir / "pids.json").read_text())
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        nodes = subprocess.run(
            ["kubectl", "--kubeconfig", str(workdir / "kubeconfig"), "get", "nodes", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert len(nodes.stdout.split()) == 3
        # A port in use is reported clearly, not as a half-started cluster.
        again = _cluster("up", workdir)
        assert again.returncode == 0
        assert "already running" in again.stdout
    finally:
        down = _cluster("down", workdir)
    assert down.returncode == 0, down.stderr
    assert not workdir.exists()
    wait_for(
        lambda: not [p for p in PORTS if _listening(p)], timeout=10, description="every port closed after cluster-down"
    )
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_port_in_use_is_a_clear_error(cluster: ClusterUnderTest, tmp_path: Path) -> None:
    if not cluster.local:
        pytest.skip("exercises hack/cluster's Go-built control plane; this session runs against another cluster")
    with socket.socket() as blocker:
        # The port may still have TIME_WAIT connections from an earlier cluster on it.
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 16443 + OFFSET))
        blocker.listen()
        result = _cluster("up", tmp_path / "blocked")
    assert result.returncode == 1
    assert f"apiserver port {16443 + OFFSET}" in result.stderr
    assert "COORDINATOR_CLUSTER_PORT_OFFSET" in result.stderr
