"""Test tiers: ``unit`` (pure logic, no servers) and ``e2e`` (the real API server, booted on demand).

The marker follows the folder (tests/unit, tests/e2e), so a test cannot land in a tier by accident.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from support.cluster import ClusterUnderTest, acquire_cluster, release_cluster
from support.testnamespaces import create_test_namespace, delete_test_namespace

TESTS_DIR = Path(__file__).parent
CRD_DIR = TESTS_DIR.parent / "crds"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS_DIR).parts[0]
        if tier in ("unit", "e2e", "real"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterUnderTest]:
    found = acquire_cluster()
    yield found
    release_cluster(found)


@pytest.fixture(scope="session")
def kubeconfig(cluster: ClusterUnderTest) -> Path:
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting: deletion is the cluster's job)."""
    name = create_test_namespace(core, request, "t", {"test": "e2e"}, length=40)
    yield name
    delete_test_namespace(core, name)


def _kubectl(kubeconfig: Path, *args: str) -> str:
    proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc.stdout


@pytest.fixture(scope="session")
def crds_installed(kubeconfig: Path) -> list[str]:
    """The committed CRDs (crds/*.yaml) applied to the cluster and Established; returns the CRD names.

    Server-side apply makes this idempotent across sessions and picks up schema changes; the CRDs are left
    installed afterwards, since deleting a CRD deletes every object of its kind.
    """
    files = sorted(CRD_DIR.glob("*.yaml"))
    assert files, f"no CRDs in {CRD_DIR}; run `make crds`"
    _kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=coordinator-tests",
        "-f",
        str(CRD_DIR),
    )
    names = [path.name.removesuffix(".yaml") for path in files]
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{name}" for name in names))
    return names
