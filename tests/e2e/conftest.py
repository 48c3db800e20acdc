"""Fixtures for the operator e2e tests: the CRDs, a running operator process, opted-in namespaces."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from coordinator.adapters.kube import KubeClient
from coordinator.testing.process import OperatorProcess
from coordinator.testing.servers import PostgresServer, RedisServer
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.dashboard import DashboardProcess, chromium
from support.testnamespaces import create_test_namespace, delete_test_namespace

OPT_IN = {"chaos.coordinator.dev/allow": "true"}
# Every namespace this session makes starts with this prefix, and its operator watches only those: two test
# sessions on one cluster (a developer's and CI's, or parallel workers) never execute each other's runs.
SESSION_PREFIX = f"c{uuid.uuid4().hex[:4]}"


@pytest.fixture(scope="session")
def operator(kubeconfig: Path, crds_installed: list[str]) -> Iterator[OperatorProcess]:
    """One operator for the session; crash tests kill and restart it (it is restarted if a test left it dead).

    Its logs go to .test-logs/<time>/ so a failure can be read after the session.
    """
    log_dir = Path(__file__).resolve().parents[2] / ".test-logs" / time.strftime("%Y%m%d-%H%M%S")
    # The history of the session's runs goes beside the logs, never into the developer's own store.
    proc = OperatorProcess(
        kubeconfig,
        log_dir,
        namespaces=[f"{SESSION_PREFIX}-*"],
        # kwok starts no containers: an in-pod agent is reported unconfirmed after 3 s instead of 60. Node faults
        # (test_workload_faults, test_safety, the node examples) need Node targets on, as the cluster-wide install.
        env={
            "COORDINATOR_HISTORY_PATH": str(log_dir / "history.db"),
            "COORDINATOR_AGENT_START_TIMEOUT": "3",
            "COORDINATOR_NODE_TARGETING": "true",
        },
    )
    proc.start()
    yield proc
    # Let the operator release the TestRuns of the namespaces this session deleted, so none is left Terminating.
    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    if proc.proc is None or proc.proc.poll() is not None:
        proc.start()
    wait_for(
        lambda: not [ns for ns in core.list_namespace().items if ns.metadata.name.startswith(SESSION_PREFIX)],
        timeout=90,
        description=f"this session's namespaces ({SESSION_PREFIX}-*) deleted",
    )
    proc.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 for the session (tests isolate themselves by instance name, i.e. table prefix)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real Redis for the session (tests isolate themselves by key prefix)."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()
    return operator


def _new_namespace(core: client.CoreV1Api, request: pytest.FixtureRequest, labels: dict[str, str]) -> str:
    return create_test_namespace(core, request, SESSION_PREFIX, {"test": "e2e", **labels})


@pytest.fixture
def chaos_namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace that opted in to chaos (label chaos.coordinator.dev/allow=true)."""
    name = _new_namespace(core, request, OPT_IN)
    yield name
    delete_test_namespace(core, name)


@pytest.fixture
def make_namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[Callable[[dict[str, str]], str]]:
    made: list[str] = []

    def make(labels: dict[str, str]) -> str:
        made.append(_new_namespace(core, request, labels))
        return made[-1]

    yield make
    for name in made:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture
def chaos(api_client: client.ApiClient, chaos_namespace: str, running_operator: OperatorProcess) -> Chaos:
    return Chaos(api_client, chaos_namespace)


@contextlib.contextmanager
def own_operator_namespace(core: client.CoreV1Api, name: str) -> Iterator[str]:
    """An opted-in namespace for a module's own operator (a prefix the session operator does not watch): its
    TestRuns are deleted and let go by that operator before the namespace goes, without waiting for it."""
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"test": "e2e", **OPT_IN})))
    yield name
    custom = client.CustomObjectsApi(core.api_client)
    custom.delete_collection_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", name, "testruns")
    wait_for(
        lambda: (
            not custom.list_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", name, "testruns")["items"]
        ),
        timeout=60,
        description=f"the TestRuns of {name} deleted",
    )
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def make_deployment(
    apps: client.AppsV1Api,
    namespace: str,
    name: str,
    replicas: int = 3,
    node: str | None = None,
    pod_annotations: dict[str, str] | None = None,
) -> None:
    labels = {"app": name}
    spec = client.V1PodSpec(containers=[client.V1Container(name="app", image="nginx:1.27")])
    if node:
        spec.node_selector = {"kubernetes.io/hostname": node}
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name, labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=replicas,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels, annotations=pod_annotations), spec=spec
                ),
            ),
        ),
    )


def ready_pods(core: client.CoreV1Api, namespace: str, app: str) -> dict[str, client.V1Pod]:
    out = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app={app}").items:
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        if pod.metadata.deletion_timestamp is None and pod.status.phase == "Running" and ready:
            out[pod.metadata.uid] = pod
    return out


def wait_ready(core: client.CoreV1Api, namespace: str, app: str, count: int) -> dict[str, client.V1Pod]:
    return wait_for(
        lambda: pods if len(pods := ready_pods(core, namespace, app)) == count else None,
        timeout=60,
        description=f"{count} ready pods of {app}",
    )


@pytest.fixture
def workload(chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api) -> str:
    """A 3-replica Deployment "web", Ready, in the test's chaos namespace; returns the namespace."""
    make_deployment(apps, chaos.namespace, "web", replicas=3)
    wait_ready(core, chaos.namespace, "web", 3)
    return chaos.namespace


@pytest.fixture
def unwatched_namespace(request: pytest.FixtureRequest, core: client.CoreV1Api) -> Iterator[str]:
    """An opted-in namespace outside the session operator's prefix: only the test's own (in-process) engine acts
    there, so a test can drive a RunMachine or a sweep itself."""
    name = create_test_namespace(core, request, "own", {"test": "e2e", **OPT_IN})
    yield name
    delete_test_namespace(core, name)


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    """The operator's own Kubernetes client, for tests that drive engine code in-process."""
    connected = await KubeClient.connect(str(kubeconfig))
    yield connected
    await connected.close()


@contextlib.contextmanager
def own_operator(
    kubeconfig: Path, api_client: client.ApiClient, core: client.CoreV1Api, name: str, env: dict[str, str]
) -> Iterator[Chaos]:
    """An opted-in namespace served by an operator of its own, started with ``env`` and watching only that
    namespace's prefix (which the session operator does not serve). The namespace goes first, so the operator can
    release its runs' finalizers; then the operator stops."""
    prefix = f"{name[0]}{uuid.uuid4().hex[:5]}"
    namespace = f"{prefix}-{name}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels=OPT_IN)))
    log_dir = Path(__file__).resolve().parents[2] / ".test-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    operator = OperatorProcess(
        kubeconfig,
        log_dir,
        env={"COORDINATOR_HISTORY_PATH": str(log_dir / "history.db"), **env},
        namespaces=[f"{prefix}-*"],
        name=f"{name}-operator",
    )
    operator.start()
    try:
        yield Chaos(api_client, namespace)
    finally:
        try:
            core.delete_namespace(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        wait_for(
            lambda: namespace not in {ns.metadata.name for ns in core.list_namespace().items},
            timeout=90,
            description=f"namespace {namespace} deleted",
        )
        operator.stop()


SESSION_WEBHOOKS = "test-coordinator.chaos.coordinator.dev"


@pytest.fixture(autouse=True)
def only_the_session_webhooks(
    operator: OperatorProcess, admissionregistration: client.AdmissionregistrationV1Api
) -> Iterator[None]:
    """The admission webhooks fail closed, so every test runs with the session operator up: it serves the webhooks
    of the operator namespace test-coordinator, which every operator process of that namespace shares (port and
    certificate). After each test, remove the configurations an operator of a namespace of its own registered,
    since that operator has stopped."""
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()  # a test that killed it did not live to restart it
    yield
    for kind in ("mutating", "validating"):
        listed = getattr(admissionregistration, f"list_{kind}_webhook_configuration")().items
        for configuration in listed:
            name = configuration.metadata.name
            if name != SESSION_WEBHOOKS and name.endswith(".chaos.coordinator.dev"):
                getattr(admissionregistration, f"delete_{kind}_webhook_configuration")(name)


@pytest.fixture(scope="session")
def admissionregistration(api_client: client.ApiClient) -> client.AdmissionregistrationV1Api:
    return client.AdmissionregistrationV1Api(api_client)


@pytest.fixture(scope="session")
def dashboard(kubeconfig: Path, operator: OperatorProcess) -> Iterator[DashboardProcess]:
    """``coordinator dashboard`` for the session, with the admin kubeconfig and the session operator's history."""
    history = {k: v for k, v in operator.env.items() if k in ("COORDINATOR_HISTORY_PATH", "COORDINATOR_DATABASE_URL")}
    proc = DashboardProcess(
        kubeconfig, env=history, log=Path(history["COORDINATOR_HISTORY_PATH"]).parent / "dashboard.log"
    )
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium for one test (Playwright). Not shared wider: Playwright's sync API keeps an event loop
    running in this thread while it is open, and the asyncio tests of the session need the thread's loop free."""
    with chromium() as launched:
        yield launched
