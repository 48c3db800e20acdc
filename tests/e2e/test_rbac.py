"""The install manifests on the local cluster, and the operator running with exactly their rights.

``kubectl apply -k manifests/`` installs everything (the Deployment's pods are kwok pods that run nothing, which
is fine: the operator runs here as a local process). The operator then runs with a kubeconfig holding a token of
the operator's ServiceAccount, so every API call it makes is checked by RBAC: runs of several faults succeed,
and verbs the manifests do not grant are refused. The install is left in place, like the CRDs.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from conftest import make_deployment, wait_ready
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos, pod_kill_spec
from support.namespaces import OPT_IN, ForeignNamespaces

REPO_ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = REPO_ROOT / "manifests"
SYSTEM = "test-coordinator"
SERVICE_ACCOUNT = f"system:serviceaccount:{SYSTEM}:test-coordinator"


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc


def token_kubeconfig(admin: Path, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig for the same API server that authenticates as ``account`` with a fresh token."""
    token = kubectl(admin, "create", "token", account, "-n", namespace, "--duration=1h").stdout.strip()
    admin_config = yaml.safe_load(admin.read_text())
    contexts = {c["name"]: c["context"] for c in admin_config["contexts"]}
    cluster_name = contexts[admin_config["current-context"]]["cluster"]
    cluster = next(c["cluster"] for c in admin_config["clusters"] if c["name"] == cluster_name)
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": account}}],
        "current-context": "operator",
    }
    path.write_text(json.dumps(kubeconfig))
    path.chmod(0o600)
    return path


def can_i(admin: Path, user: str, *args: str) -> bool:
    proc = kubectl(admin, "auth", "can-i", *args, f"--as={user}", check=False)
    assert proc.stdout.strip() in ("yes", "no"), proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


WEBHOOK_CONFIGURATIONS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


@pytest.fixture(scope="module")
def installed(kubeconfig: Path, crds_installed: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`kubectl apply -k manifests/` (server-side, as the same field manager as the CRD fixture).

    The webhook configurations are created only when absent: the operators here run as local processes and point
    them at themselves (patch, which the install's rights allow) instead of the Service, which has no endpoints on
    kwok nodes; applying the install's over theirs would name both a URL and a Service."""
    rendered = [d for d in yaml.safe_load_all(kubectl(kubeconfig, "kustomize", str(MANIFESTS)).stdout) if d]
    directory = tmp_path_factory.mktemp("install")
    (directory / "install.yaml").write_text(
        yaml.safe_dump_all([d for d in rendered if d["kind"] not in WEBHOOK_CONFIGURATIONS])
    )
    (directory / "webhooks.yaml").write_text(
        yaml.safe_dump_all([d for d in rendered if d["kind"] in WEBHOOK_CONFIGURATIONS])
    )
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=coordinator-tests",
        "-f",
        str(directory / "install.yaml"),
    )
    created = kubectl(kubeconfig, "create", "-f", str(directory / "webhooks.yaml"), check=False)
    assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
    return kubeconfig


@pytest.fixture
def foreign(api_client: client.ApiClient) -> Iterator[ForeignNamespaces]:
    with ForeignNamespaces(api_client, "rbac") as namespaces:
        yield namespaces


@pytest.fixture
def log_dir(request: pytest.FixtureRequest) -> Path:
    return REPO_ROOT / ".test-logs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{request.node.name}"


def _operator(kubeconfig: Path, log_dir: Path, instance: str, args: list[str], system: str) -> OperatorProcess:
    env = {
        "COORDINATOR_INSTANCE_NAME": instance,
        "COORDINATOR_NAMESPACE": system,
        "COORDINATOR_LEADER_ELECTION": "true",  # the Lease rights are part of what is proven
        "COORDINATOR_HISTORY_PATH": str(log_dir / "history.db"),
    }
    return OperatorProcess(kubeconfig, log_dir, env=env, args=args, name="operator-as-sa")


def _forbidden_lines(proc: OperatorProcess) -> list[str]:
    """Log lines about a refused API call (the operator or kopf tried something RBAC does not allow)."""
    refused = re.compile(r"\b403\b|[Ff]orbidden|[Nn]ot enough permissions")
    records = [json.loads(line) for line in proc.log_path.read_text().splitlines() if line.strip()]
    return [json.dumps(r) for r in records if refused.search(f"{r.get('event', '')} {r.get('exception', '')}")]


def test_install_applies_and_the_deployment_passes_pod_security(installed: Path, apps: client.AppsV1Api) -> None:
    # The operator's namespace enforces the restricted Pod Security profile: pods with a weaker security context
    # would be refused, and the ReplicaSet would never reach 2 pods.
    wait_for(
        lambda: (apps.read_namespaced_deployment("test-coordinator", SYSTEM).status.replicas or 0) == 2,
        timeout=60,
        description="the Deployment's 2 pods admitted under the restricted profile",
    )
    assert can_i(installed, SERVICE_ACCOUNT, "patch", "testruns.chaos.coordinator.dev", "--subresource=status", "-A")
    assert can_i(installed, SERVICE_ACCOUNT, "create", "pods", "--subresource=eviction", "-A")
    assert can_i(installed, SERVICE_ACCOUNT, "patch", "nodes")


def test_operator_runs_faults_with_only_the_manifests_rights(
    installed: Path,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    foreign: ForeignNamespaces,
    log_dir: Path,
    tmp_path: Path,
) -> None:
    """Cluster-wide, as installed (no --namespace), sharded by a label so it takes only this test's runs."""
    target = foreign.make(labels=OPT_IN)
    shard = {"chaos.coordinator.dev/shard": foreign.base}
    sa_config = token_kubeconfig(installed, SYSTEM, "test-coordinator", tmp_path / "operator.kubeconfig")
    operator = _operator(
        sa_config, log_dir, foreign.base, [f"--selector=chaos.coordinator.dev/shard={foreign.base}"], SYSTEM
    )
    operator.start()
    try:
        make_deployment(apps, target, "web", replicas=3)
        wait_ready(core, target, "web", 3)
        chaos = Chaos(api_client, target)
        chaos.scenario("kill-one", pod_kill_spec({"app": "web"}))
        chaos.scenario(
            "scale-down",
            {
                "target": {"kind": "Deployment", "names": ["web"]},
                "steps": [{"name": "s", "duration": "2s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
            },
        )
        chaos.scenario(
            "partition",
            {
                "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
                "mode": "all",
                "steps": [{"name": "s", "duration": "2s", "faults": [{"type": "network-partition"}]}],
            },
        )
        runs = {scenario: _labelled_run(chaos, scenario, shard) for scenario in ("kill-one", "scale-down", "partition")}
        unsharded = chaos.run("scale-down", name="not-my-shard")
        for scenario, run in runs.items():
            status = chaos.wait_phase(run, "Passed", timeout=60)
            assert all(i["state"] in ("Reverted", "Irreversible") for i in status["injections"]), (scenario, status)
        assert apps.read_namespaced_deployment("web", target).spec.replicas == 3
        networking = client.NetworkingV1Api(api_client)
        assert networking.list_namespaced_network_policy(target).items == []
        assert chaos.status(unsharded).get("phase") is None, "a TestRun outside --selector is left alone"
        assert not chaos.get_run(unsharded)["metadata"].get("finalizers")
        lease = client.CoordinationV1Api(api_client).read_namespaced_lease(f"{foreign.base}-leader", SYSTEM)
        assert lease.spec.holder_identity
        assert not _forbidden_lines(operator), "\n".join(_forbidden_lines(operator))
        # Deleting a run goes through the operator's deletion handler (finalizer) with the same rights.
        chaos.custom.delete_namespaced_custom_object(
            "chaos.coordinator.dev", "v1alpha1", target, "testruns", runs["kill-one"]
        )
        wait_for(lambda: not chaos.run_exists(runs["kill-one"]), timeout=30, description="the deleted TestRun released")
    finally:
        operator.stop()


def _labelled_run(chaos: Chaos, scenario: str, labels: dict[str, str]) -> str:
    name = f"{scenario}-{uuid.uuid4().hex[:4]}"
    body: dict[str, Any] = {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "metadata": {"name": name, "labels": labels},
        "spec": {"scenarioRef": {"name": scenario}},
    }
    chaos.custom.create_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", chaos.namespace, "testruns", body)
    return name


def test_verbs_not_granted_are_refused(installed: Path, foreign: ForeignNamespaces, tmp_path: Path) -> None:
    target = foreign.make(labels=OPT_IN)
    for verb, resource in [
        ("delete", "deployments"),
        ("create", "deployments"),
        ("get", "secrets"),
        ("list", "configmaps"),
        ("update", "testruns.chaos.coordinator.dev"),
        ("delete", "chaosscenarios.chaos.coordinator.dev"),
        ("delete", "nodes"),
        ("create", "clusterrolebindings"),
    ]:
        assert not can_i(installed, SERVICE_ACCOUNT, verb, resource, "-n", target), f"{verb} {resource} is granted"
    assert not can_i(installed, SERVICE_ACCOUNT, "create", "pods", "--subresource=exec", "-n", target)
    assert not can_i(installed, SERVICE_ACCOUNT, "patch", "leases", "-n", "kube-system"), "leases only at home"
    assert can_i(installed, SERVICE_ACCOUNT, "patch", "leases", "-n", SYSTEM)

    # And a real request with the token: 403 from the API server.
    sa_api = config.new_client_from_config(
        config_file=str(token_kubeconfig(installed, SYSTEM, "test-coordinator", tmp_path / "sa.kubeconfig"))
    )
    try:
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(sa_api).list_namespaced_secret(target)
        assert refused.value.status == 403
        with pytest.raises(ApiException) as refused:
            client.AppsV1Api(sa_api).delete_namespaced_deployment("anything", target)
        assert refused.value.status == 403
        assert client.CoreV1Api(sa_api).list_namespaced_pod(target).items == [], "what is granted works"
    finally:
        sa_api.close()


def test_single_namespace_install_runs_with_rights_in_one_namespace_only(
    installed: Path,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    foreign: ForeignNamespaces,
    log_dir: Path,
    tmp_path: Path,
) -> None:
    """overlays/single-namespace's RoleBinding, bound to a ServiceAccount of our own so that the cluster-wide
    binding of test-coordinator does not lend it anything."""
    system = foreign.make("system")
    target = foreign.make(labels=OPT_IN)
    account = "single"
    core.create_namespaced_service_account(system, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account)))
    subject = {"kind": "ServiceAccount", "name": account, "namespace": system}
    rendered = yaml.safe_load_all(
        kubectl(installed, "kustomize", str(MANIFESTS / "overlays" / "single-namespace")).stdout
    )
    docs = []
    webhooks = f"{system}.chaos.coordinator.dev"  # the operator's webhook configurations, named for its namespace
    for doc in rendered:
        name = doc["metadata"]["name"]
        if doc["kind"] == "RoleBinding" and name == "test-coordinator":
            doc["metadata"]["namespace"] = target
        elif doc["kind"] in ("Role", "RoleBinding", "Secret") and name.startswith(
            ("test-coordinator-leader-election", "test-coordinator-webhook")
        ):
            doc["metadata"]["namespace"] = system
        elif doc["kind"] in ("ClusterRole", "ClusterRoleBinding") and name == "test-coordinator-authorization":
            doc["metadata"]["name"] = f"{name}-{system}"
            if doc["kind"] == "ClusterRoleBinding":
                doc["roleRef"]["name"] = doc["metadata"]["name"]
        elif doc["kind"] in ("ClusterRole", "ClusterRoleBinding") and name == "test-coordinator-webhook":
            doc["metadata"]["name"] = f"{name}-{system}"
            if doc["kind"] == "ClusterRole":
                doc["rules"][0]["resourceNames"] = [webhooks]
            else:
                doc["roleRef"]["name"] = doc["metadata"]["name"]
        elif doc["kind"] in WEBHOOK_CONFIGURATIONS:
            doc["metadata"]["name"] = webhooks
            for hook in doc["webhooks"]:
                hook["clientConfig"]["service"]["namespace"] = system
                assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["chaos-sandbox"]
                hook["namespaceSelector"]["matchExpressions"][0]["values"] = [target]
        else:
            continue
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            doc["subjects"] = [subject]
        docs.append(doc)
    assert len(docs) == 12
    (tmp_path / "rbac.yaml").write_text(yaml.safe_dump_all(docs))
    kubectl(installed, "apply", "-f", str(tmp_path / "rbac.yaml"))
    user = f"system:serviceaccount:{system}:{account}"
    assert can_i(installed, user, "patch", "deployments", "-n", target)
    assert not can_i(installed, user, "patch", "deployments", "-n", system), "nothing outside its namespace"
    assert not can_i(installed, user, "list", "pods", "-A")
    assert not can_i(installed, user, "patch", "nodes")

    sa_config = token_kubeconfig(installed, system, account, tmp_path / "single.kubeconfig")
    operator = _operator(sa_config, log_dir, foreign.base, [f"--namespace={target}"], system)
    operator.start()
    try:
        make_deployment(apps, target, "web", replicas=2)
        wait_ready(core, target, "web", 2)
        chaos = Chaos(api_client, target)
        chaos.scenario(
            "scale-down",
            {
                "target": {"kind": "Deployment", "names": ["web"]},
                "steps": [{"name": "s", "duration": "2s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]}],
            },
        )
        run = chaos.run("scale-down")
        chaos.wait_phase(run, "Passed", timeout=60)
        assert apps.read_namespaced_deployment("web", target).spec.replicas == 2
        # Let at least one periodic sweep run: it must stay inside the namespace it may read.
        time.sleep(2.5)
        assert not _forbidden_lines(operator), "\n".join(_forbidden_lines(operator))
    finally:
        operator.stop()
