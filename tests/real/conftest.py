"""The ``real`` tier: faults measured on real containers, on a cluster of its own with one real kubelet node.

The cluster lives in ``.cluster-real/`` with its ports shifted by 1000, so a developer's own cluster (and the e2e
tier's) is never touched. Where the host cannot run a real node (not root, no containerd), every test here is
skipped with one line saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.cluster import CLUSTER_SCRIPT, REPO_ROOT, ClusterUnderTest
from support.realnode import EXTERNAL_KUBECONFIG, REAL_CLUSTER_ENV, EffectLog, host_unsupported_reason
from support.testnamespaces import create_test_namespace, delete_test_namespace

OPT_IN = {"chaos.coordinator.dev/allow": "true"}
SESSION_PREFIX = f"r{uuid.uuid4().hex[:4]}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = host_unsupported_reason()
    if reason:
        skip = pytest.mark.skip(reason=f"real tier: {reason}")
        for item in items:
            if "real" in item.keywords:
                item.add_marker(skip)
    # The cluster-down check removes the cluster: it runs after every other real test.
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)


def _cluster_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLUSTER_SCRIPT), *args],
        env={**os.environ, **REAL_CLUSTER_ENV},
        text=True,
        check=False,
    )


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterUnderTest]:
    """This tier's own cluster with a real node, booted once; stopped (and checked clean) at the end. With
    COORDINATOR_TEST_KUBECONFIG (kind in GitHub Actions) that cluster is used, its node named COORDINATOR_REAL_NODE."""
    if EXTERNAL_KUBECONFIG:
        yield ClusterUnderTest(Path(EXTERNAL_KUBECONFIG), started_here=False)
        return
    started = time.monotonic()
    if _cluster_command("up").returncode != 0:
        raise RuntimeError("could not boot the real-node cluster (see the output above)")
    print(f"real-node cluster ready in {time.monotonic() - started:.1f}s")
    kubeconfig = Path(REAL_CLUSTER_ENV["COORDINATOR_CLUSTER_DIR"]) / "kubeconfig"
    found = ClusterUnderTest(kubeconfig, started_here=True, local=True)
    yield found
    if os.environ.get("COORDINATOR_KEEP_CLUSTER", "") in ("", "0") and kubeconfig.exists():
        _cluster_command("down")


HOST_OPERATOR_NAMESPACE = "coordinator-host"


@pytest.fixture(scope="session")
def operator(kubeconfig: Path, crds_installed: list[str]) -> Iterator[OperatorProcess]:
    """The operator as a host process for the tier's fault tests (test_operator_in_cluster.py runs its image)."""
    log_dir = REPO_ROOT / ".test-logs" / f"real-{time.strftime('%Y%m%d-%H%M%S')}"
    proc = OperatorProcess(
        kubeconfig,
        log_dir,
        namespaces=[f"{SESSION_PREFIX}-*"],
        # A namespace of its own, not the install's (test-coordinator): the installed operator's webhook
        # configurations, certificate Secret and namespace come and go with test_real_node_and_operator.py.
        # test_real_node_and_operator drains the real node: Node targets on, as the cluster-wide install.
        env={
            "COORDINATOR_HISTORY_PATH": str(log_dir / "history.db"),
            "COORDINATOR_NAMESPACE": HOST_OPERATOR_NAMESPACE,
            "COORDINATOR_NODE_TARGETING": "true",
        },
    )
    proc.start()
    yield proc
    if not kubeconfig.exists():
        # test_cluster_down_leaves_nothing_behind stopped the cluster, with this session's pods still on it.
        proc.stop()
        return
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    if proc.proc is None or proc.proc.poll() is not None:
        proc.start()
    wait_for(
        lambda: not [ns for ns in core.list_namespace().items if ns.metadata.name.startswith(SESSION_PREFIX)],
        timeout=120,
        description=f"this session's namespaces ({SESSION_PREFIX}-*) deleted",
    )
    proc.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()
    return operator


@pytest.fixture
def chaos_namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    name = create_test_namespace(core, request, SESSION_PREFIX, {"test": "real", **OPT_IN})
    yield name
    delete_test_namespace(core, name)


@pytest.fixture
def chaos(api_client: client.ApiClient, chaos_namespace: str, running_operator: OperatorProcess) -> Chaos:
    return Chaos(api_client, chaos_namespace)


_EFFECTS = EffectLog()


@pytest.fixture(scope="session")
def effects() -> Iterator[EffectLog]:
    yield _EFFECTS
    if _EFFECTS.rows:
        out = REPO_ROOT / ".test-logs" / "real-node-effects.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(_EFFECTS.markdown())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _EFFECTS.rows:
        terminalreporter.section("real node: measured effects (docs/real-node.md)")
        terminalreporter.write(_EFFECTS.markdown())
