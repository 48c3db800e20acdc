"""The dashboard's in-cluster mode, the pure parts: the session store, the TokenReview's verdict, where a login
may lead, the user's credentials, the command line, and the manifests/dashboard overlay (least privilege).
tests/e2e/test_dashboard_actions.py logs in for real."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.adapters.kube import Credentials, bearer_credentials
from coordinator.dashboard.namespaces import namespace_rows
from coordinator.dashboard.sessions import (
    LoginRefused,
    SessionStore,
    review_body,
    reviewed_username,
    safe_next,
)

pytestmark = pytest.mark.unit

OVERLAY = Path(__file__).resolve().parents[2] / "manifests" / "dashboard"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLIENT: Any = object()  # the store never touches a session's client; it only hands it back


def test_a_session_is_found_by_its_id_until_it_expires() -> None:
    clock = Clock()
    store = SessionStore(lifetime=60, clock=clock)
    session = store.open("alice", CLIENT)
    assert store.get(session.id) is session
    assert (session.username, session.client) == ("alice", CLIENT)
    clock.now += 59.9
    assert store.get(session.id) is session
    clock.now += 0.1
    assert store.get(session.id) is None, "a session ends at its lifetime"
    assert store.expired() == [session], "an expired session is handed back so its client can be closed"
    assert len(store) == 0
    assert store.expired() == []


def test_unknown_missing_and_ended_ids_find_no_session() -> None:
    store = SessionStore(clock=Clock())
    session = store.open("alice", CLIENT)
    assert store.get(None) is None
    assert store.get("") is None
    assert store.get(session.id + "x") is None
    assert store.end("nobody") is None
    assert store.end(session.id) is session, "logout hands the session back, to close its client"
    assert store.get(session.id) is None
    assert store.end(session.id) is None


def test_session_ids_are_unguessable_and_distinct() -> None:
    store = SessionStore(clock=Clock())
    ids = {store.open("alice", CLIENT).id for _ in range(200)}
    assert len(ids) == 200
    assert min(len(i) for i in ids) >= 43, "256 random bits, URL-safe base64"


def test_only_expired_sessions_are_swept_and_drain_takes_all() -> None:
    clock = Clock()
    store = SessionStore(lifetime=10, clock=clock)
    old = store.open("old", CLIENT)
    clock.now += 5
    young = store.open("young", CLIENT)
    clock.now += 5
    assert store.expired() == [old]
    assert store.get(young.id) is young
    assert store.drain() == [young]
    assert len(store) == 0


def test_the_default_lifetime_is_a_working_day() -> None:
    assert SessionStore().lifetime == 8 * 3600


def test_a_token_review_names_the_user_or_says_why_not() -> None:
    assert review_body("t0k") == {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": "t0k"},
    }
    accepted = {"status": {"authenticated": True, "user": {"username": "system:serviceaccount:shop:alice"}}}
    assert reviewed_username(accepted) == "system:serviceaccount:shop:alice"
    with pytest.raises(LoginRefused, match="did not accept this token: token has expired"):
        reviewed_username({"status": {"authenticated": False, "error": "token has expired"}})
    with pytest.raises(LoginRefused, match="did not accept this token: the token is not valid"):
        reviewed_username({"status": {}})
    with pytest.raises(LoginRefused, match="named no user"):
        reviewed_username({"status": {"authenticated": True, "user": {}}})


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/"),
        ("", "/"),
        ("/runs/shop/r1?x=1", "/runs/shop/r1?x=1"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
    ],
)
def test_after_login_the_browser_goes_only_to_a_page_of_this_dashboard(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_a_sessions_credentials_keep_the_host_and_ca_and_carry_only_the_users_token(tmp_path: Path) -> None:
    own = Credentials(
        host="https://10.0.0.1:443",
        ssl_context=False,
        token=None,
        token_file=tmp_path / "token",
        ca_file=None,
        cert_file=str(tmp_path / "dashboard.crt"),
        key_file=str(tmp_path / "dashboard.key"),
    )
    user = bearer_credentials(own, "users-token")
    assert (user.host, user.ca_file, user.ssl_context) == (own.host, None, False)
    assert user.token == "users-token"
    assert user.current_token() == "users-token"
    assert user.token_file is None, "never the dashboard's own ServiceAccount token"
    assert (user.cert_file, user.key_file) == (None, None), "a client certificate would win over the token"


def test_a_sessions_tls_context_verifies_the_server_and_holds_no_client_certificate() -> None:
    own_context = ssl.create_default_context()
    own = Credentials(host="https://api:6443", ssl_context=own_context, token="dashboards", token_file=None)
    user = bearer_credentials(own, "users-token")
    assert isinstance(user.ssl_context, ssl.SSLContext)
    assert user.ssl_context is not own_context, "the dashboard's context may hold its client certificate"
    assert user.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert user.ssl_context.check_hostname
    assert user.token == "users-token"


def test_the_namespaces_page_lists_names_in_order_with_their_pause() -> None:
    items = [
        {"metadata": {"name": "shop", "labels": {"chaos.coordinator.dev/paused": "true"}}},
        {"metadata": {"name": "default"}},
        {"metadata": {"name": "ops", "labels": {"chaos.coordinator.dev/paused": "false"}}},
    ]
    assert [(row.name, row.paused) for row in namespace_rows(items)] == [
        ("default", False),
        ("ops", False),
        ("shop", True),
    ]


def test_the_command_line_offers_the_in_cluster_and_token_login_modes() -> None:
    from coordinator.cli.main import build_parser

    args = build_parser().parse_args(["dashboard", "--in-cluster", "--address", "0.0.0.0"])  # noqa: S104
    assert (args.in_cluster, args.token_login, args.address) == (True, False, "0.0.0.0")  # noqa: S104
    args = build_parser().parse_args(["dashboard", "--token-login", "--kubeconfig", "/k"])
    assert (args.in_cluster, args.token_login, args.kubeconfig) == (False, True, "/k")
    args = build_parser().parse_args(["dashboard"])
    assert (args.in_cluster, args.token_login) == (False, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["dashboard", "--in-cluster", "--token-login"])


# --- manifests/dashboard ----------------------------------------------------------------------------------------


def dashboard_overlay() -> dict[str, dict[str, Any]]:
    """manifests/dashboard rendered by ``kubectl kustomize``, by kind."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed (it renders the kustomizations); .ci/run installs it")
    out = subprocess.run([kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return {doc["kind"]: doc for doc in yaml.safe_load_all(out.stdout) if doc}


def test_the_dashboard_overlay_renders_its_deployment_service_and_account() -> None:
    docs = dashboard_overlay()
    assert set(docs) == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"] == "test-coordinator-dashboard"
    assert docs["ServiceAccount"]["metadata"]["namespace"] == "test-coordinator"
    (container,) = pod["containers"]
    assert container["args"][:4] == ["dashboard", "--in-cluster", "--address", "0.0.0.0"]  # noqa: S104
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    service = docs["Service"]
    assert service["metadata"]["name"] == "test-coordinator-dashboard"
    assert service["spec"]["type"] == "ClusterIP"
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(8765, "http")]
    assert service["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]


def test_the_dashboards_own_account_may_only_review_tokens() -> None:
    docs = dashboard_overlay()
    assert docs["ClusterRole"]["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "test-coordinator-dashboard", "namespace": "test-coordinator"}
    ]
