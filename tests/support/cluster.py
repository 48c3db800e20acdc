"""Find or boot the cluster the e2e tier runs against."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from urllib.parse import urlparse

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO_ROOT / "hack" / "cluster"


@dataclass(frozen=True)
class ClusterUnderTest:
    kubeconfig: Path
    started_here: bool
    # True for the Go-built control plane of hack/cluster (pinned version, kwok nodes); False for kind or others.
    local: bool = False


def _server_is_loopback(kubeconfig: Path) -> bool:
    config = yaml.safe_load(kubeconfig.read_text()) or {}
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    current = contexts.get(config.get("current-context", ""), {})
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    server = clusters.get(current.get("cluster", ""), {}).get("server", "")
    host = urlparse(server).hostname or ""
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def acquire_cluster() -> ClusterUnderTest:
    """``COORDINATOR_TEST_KUBECONFIG`` wins; ``KUBECONFIG`` is used only when it points at a loopback API server
    (a kind or local cluster) because these tests inject faults; otherwise the local control plane is booted."""
    local_kubeconfig = REPO_ROOT / ".cluster" / "kubeconfig"
    explicit = os.environ.get("COORDINATOR_TEST_KUBECONFIG")
    if explicit:
        return ClusterUnderTest(Path(explicit), started_here=False, local=Path(explicit).resolve() == local_kubeconfig)
    env_config = os.environ.get("KUBECONFIG")
    if env_config and ":" not in env_config and Path(env_config).is_file() and _server_is_loopback(Path(env_config)):
        return ClusterUnderTest(Path(env_config), started_here=False)
    status = subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "status"], capture_output=True, check=False)
    already_running = status.returncode == 0
    proc = subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "up"], check=False)
    if proc.returncode != 0:
        raise RuntimeError("could not boot the local control plane (see the output above)")
    out = subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), "kubeconfig"], capture_output=True, text=True, check=True
    )
    return ClusterUnderTest(Path(out.stdout.strip()), started_here=not already_running, local=True)


def release_cluster(cluster: ClusterUnderTest) -> None:
    if cluster.started_here and os.environ.get("COORDINATOR_KEEP_CLUSTER", "") in ("", "0"):
        subprocess.run([sys.executable, str(CLUSTER_SCRIPT), "down"], check=False)
