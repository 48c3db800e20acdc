"""Pause and resume from the dashboard in a real browser, with the viewer's own rights: a limited user's refusal
is the API server's message; the in-cluster mode logs in with a ServiceAccount token (TokenReview) and acts with
that token only; forged POSTs are refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from coordinator.api.models import PAUSED_LABEL
from support.dashboard import DESKTOP, DashboardProcess, screenshot
from support.identities import user_kubeconfig

OVERLAY_RBAC = Path(__file__).resolve().parents[2] / "manifests" / "dashboard" / "rbac.yaml"


def paused_label(core: client.CoreV1Api, namespace: str) -> str | None:
    return (core.read_namespace(namespace).metadata.labels or {}).get(PAUSED_LABEL)


Grant = Callable[[str, list[dict[str, Any]], dict[str, str]], None]


@pytest.fixture
def grant(api_client: client.ApiClient) -> Iterator[Grant]:
    """``grant(what, rules, subject)``: a ClusterRole with ``rules`` bound to ``subject``; both go after the test."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    made: list[str] = []

    def make(what: str, rules: list[dict[str, Any]], subject: dict[str, str]) -> None:
        name = f"dash-{what}-{uuid.uuid4().hex[:6]}"
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
        made.append(name)
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [subject],
            }
        )

    yield make
    for name in made:
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            try:
                delete(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def submit(page: Any, button: Any) -> None:
    """Click a form's button (the confirmation is accepted by the page's dialog handler) and wait for the answer."""
    with page.expect_navigation():
        button.click()


def service_account_token(core: client.CoreV1Api, namespace: str, account: str) -> str:
    """A ServiceAccount and a bound token for it (TokenRequest, as `kubectl create token` does)."""
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account))
    )
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    return str(core.create_namespaced_service_account_token(account, namespace, request).status.token)


def token_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """A kubeconfig for the same API server that authenticates with ``token``."""
    config = yaml.safe_load(admin.read_text())
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    cluster_name = contexts[config["current-context"]]["cluster"]
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == cluster_name)
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": "dashboard", "user": {"token": token}}],
                "contexts": [{"name": "dashboard", "context": {"cluster": "local", "user": "dashboard"}}],
                "current-context": "dashboard",
            }
        )
    )
    path.chmod(0o600)
    return path


def started(kubeconfig: Path, tmp_path: Path, system: str, args: tuple[str, ...] = ()) -> DashboardProcess:
    """A dashboard whose history store is the test's own and whose operator namespace is ``system``."""
    proc = DashboardProcess(
        kubeconfig,
        env={"COORDINATOR_HISTORY_PATH": str(tmp_path / "history.db"), "COORDINATOR_NAMESPACE": system},
        log=tmp_path / "dashboard.log",
        args=args,
    )
    proc.start()
    return proc


def post(url: str, data: dict[str, str], cookie: str | None = None) -> int:
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 (http on loopback)
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    if cookie:
        request.add_header("Cookie", cookie)
    try:
        with urllib.request.urlopen(request) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_pause_and_resume_a_namespace_from_the_page(
    kubeconfig: Path, core: client.CoreV1Api, browser: Any, make_namespace: Any, tmp_path: Path
) -> None:
    target = make_namespace({})
    system = make_namespace({})
    dashboard = started(kubeconfig, tmp_path, system)
    page = browser.new_page(viewport=DESKTOP)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        response = page.goto(f"{dashboard.url}/namespaces")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        row = page.locator(f'tr[data-namespace="{target}"]')
        assert row.locator(".state").inner_text() == "Active"
        assert page.locator(f'tr[data-namespace="{system}"]').count() == 0, "the operator's own is the cluster row"
        assert "The cluster is not paused" in page.locator("#cluster-state").inner_text()

        submit(page, row.get_by_role("button", name="Pause"))
        outcome = page.locator("#outcome").inner_text()
        assert outcome.startswith(f"Paused namespace {target} (label {PAUSED_LABEL}=true"), outcome
        assert page.locator(f'tr[data-namespace="{target}"] .state').inner_text() == "Paused"
        assert paused_label(core, target) == "true"
        screenshot(page, "namespaces")

        submit(page, page.locator(f'tr[data-namespace="{target}"]').get_by_role("button", name="Resume"))
        assert page.locator("#outcome").inner_text().startswith(f"Resumed namespace {target}")
        assert page.locator(f'tr[data-namespace="{target}"] .state').inner_text() == "Active"
        assert paused_label(core, target) is None

        # The whole cluster: the label on the operator's namespace (here the test's own stand-in).
        submit(page, page.get_by_role("button", name="Pause the cluster"))
        assert page.locator("#outcome").inner_text().startswith("Paused the whole cluster")
        assert paused_label(core, system) == "true"
        submit(page, page.get_by_role("button", name="Resume the cluster"))
        assert paused_label(core, system) is None
    finally:
        page.close()
        dashboard.stop()


def test_a_dismissed_confirmation_changes_nothing(
    kubeconfig: Path, core: client.CoreV1Api, browser: Any, make_namespace: Any, tmp_path: Path
) -> None:
    target = make_namespace({})
    dashboard = started(kubeconfig, tmp_path, make_namespace({}))
    page = browser.new_page(viewport=DESKTOP)
    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    try:
        page.goto(f"{dashboard.url}/namespaces")
        page.locator(f'tr[data-namespace="{target}"]').get_by_role("button", name="Pause").click()
        assert questions == [f"Pause namespace {target}? Every run that touches it is cancelled and reverted."]
        assert page.locator("#outcome").count() == 0
        assert paused_label(core, target) is None
    finally:
        page.close()
        dashboard.stop()


def test_a_limited_user_is_refused_with_the_api_servers_message(
    kubeconfig: Path,
    core: client.CoreV1Api,
    grant: Grant,
    browser: Any,
    make_namespace: Any,
    tmp_path: Path,
) -> None:
    target = make_namespace({})
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    # May see namespaces, may not label them.
    grant(
        "viewer",
        [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}],
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user},
    )
    limited = user_kubeconfig(kubeconfig, user, tmp_path / "users")
    dashboard = started(limited, tmp_path, make_namespace({}))
    page = browser.new_page(viewport=DESKTOP)
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.goto(f"{dashboard.url}/namespaces")
        assert page.locator("header .viewer").inner_text().strip() == user
        submit(page, page.locator(f'tr[data-namespace="{target}"]').get_by_role("button", name="Pause"))
        refusal = page.locator("#outcome[role=alert]").inner_text()
        assert refusal.startswith(f"The API server refused to pause namespace {target}: "), refusal
        assert f'namespaces "{target}" is forbidden: User "{user}" cannot patch resource "namespaces"' in refusal
        assert page.locator(f'tr[data-namespace="{target}"] .state').inner_text() == "Active"
        assert paused_label(core, target) is None
    finally:
        page.close()
        dashboard.stop()


@pytest.fixture
def token_login(
    kubeconfig: Path,
    core: client.CoreV1Api,
    grant: Grant,
    make_namespace: Any,
    tmp_path: Path,
) -> Iterator[tuple[DashboardProcess, str, str, str, str]]:
    """A dashboard in the in-cluster mode (--token-login), its identity a ServiceAccount with the overlay's own
    ClusterRole (tokenreviews create, nothing else), and a user ``alice`` (a ServiceAccount) who may label one
    namespace and only read another. Yields the dashboard, alice's name and token, the allowed and the refused
    namespace."""
    home = make_namespace({})
    allowed, refused = make_namespace({}), make_namespace({})
    (overlay_role, _) = yaml.safe_load_all(OVERLAY_RBAC.read_text())
    grant(
        "reviewer",
        overlay_role["rules"],
        {"kind": "ServiceAccount", "name": "dashboard", "namespace": home},
    )
    own = token_kubeconfig(
        kubeconfig, service_account_token(core, home, "dashboard"), tmp_path / "dashboard.kubeconfig"
    )
    alice = {"kind": "ServiceAccount", "name": "alice", "namespace": home}
    grant(
        "alice-label",
        [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [allowed], "verbs": ["get", "patch"]}],
        alice,
    )
    grant(
        "alice-read",
        [{"apiGroups": [""], "resources": ["namespaces"], "resourceNames": [refused], "verbs": ["get"]}],
        alice,
    )
    token = service_account_token(core, home, "alice")
    dashboard = started(own, tmp_path, make_namespace({}), args=("--token-login",))
    try:
        yield dashboard, f"system:serviceaccount:{home}:alice", token, allowed, refused
    finally:
        dashboard.stop()


def test_in_cluster_mode_logs_in_with_a_token_and_acts_with_it_only(
    token_login: tuple[DashboardProcess, str, str, str, str], core: client.CoreV1Api, browser: Any
) -> None:
    dashboard, alice, token, allowed, refused = token_login
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        page.goto(f"{dashboard.url}/namespaces")
        assert page.url == f"{dashboard.url}/login?next=/namespaces", "no session: the login page"
        assert page.locator("header .viewer").count() == 0
        screenshot(page, "login")

        page.locator("input[name=token]").fill("not-a-token")
        submit(page, page.get_by_role("button", name="Log in"))
        error = page.locator("#login-error").inner_text()
        assert error.startswith("the API server did not accept this token"), error
        assert not [c for c in context.cookies() if c["name"] == "coordinator_session"]

        page.locator("input[name=token]").fill(token)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{dashboard.url}/namespaces")
        assert page.locator("header .viewer").inner_text().strip() == alice
        (session,) = [c for c in context.cookies() if c["name"] == "coordinator_session"]
        assert session["httpOnly"]
        assert session["sameSite"] == "Strict"
        assert token not in page.content(), "the token is never written into a page"
        assert token not in page.url
        # alice may not list namespaces: the page says so with the API server's words, and offers the form.
        listed = page.locator("#list-refused").inner_text()
        assert f'User "{alice}" cannot list resource "namespaces"' in listed, listed

        page.locator("#by-name input[name=name]").fill(refused)
        submit(page, page.locator("#by-name").get_by_role("button", name="Pause"))
        refusal = page.locator("#outcome[role=alert]").inner_text()
        assert refusal.startswith(f"The API server refused to pause namespace {refused}: "), refusal
        assert f'User "{alice}" cannot patch resource "namespaces"' in refusal
        assert paused_label(core, refused) is None

        page.locator("#by-name input[name=name]").fill(allowed)
        submit(page, page.locator("#by-name").get_by_role("button", name="Pause"))
        assert page.locator("#outcome").inner_text().startswith(f"Paused namespace {allowed}")
        assert paused_label(core, allowed) == "true"
        page.locator("#by-name input[name=name]").fill(allowed)
        submit(page, page.locator("#by-name").get_by_role("button", name="Resume"))
        assert page.locator("#outcome").inner_text().startswith(f"Resumed namespace {allowed}")
        assert paused_label(core, allowed) is None

        page.get_by_role("button", name="Log out").click()
        page.wait_for_url(f"{dashboard.url}/login")
        page.goto(f"{dashboard.url}/namespaces")
        assert page.url.startswith(f"{dashboard.url}/login"), "the session ended at logout"
        # The old cookie, replayed, names no session any more.
        replay = urllib.request.Request(f"{dashboard.url}/namespaces")  # noqa: S310 (http on loopback)
        replay.add_header("Cookie", f"coordinator_session={session['value']}")
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(replay)
        assert redirected.value.code == 303
        assert redirected.value.headers["Location"] == "/login?next=/namespaces"
    finally:
        context.close()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_a_forged_post_is_refused_and_changes_nothing(
    kubeconfig: Path, core: client.CoreV1Api, make_namespace: Any, tmp_path: Path
) -> None:
    target = make_namespace({})
    dashboard = started(kubeconfig, tmp_path, make_namespace({}))
    try:
        url = f"{dashboard.url}/namespaces/{target}/pause"
        assert post(url, {}) == 403, "no CSRF cookie, no token"
        assert post(url, {"csrf": "guess"}, cookie="coordinator_csrf=other") == 403, "a token not the cookie's"
        assert (
            post(f"{dashboard.url}/namespaces", {"name": target, "action": "pause"}, cookie="coordinator_csrf=x") == 403
        )
        assert paused_label(core, target) is None
        assert post(url, {"csrf": "same"}, cookie="coordinator_csrf=same") == 200, "the double submit passes"
        assert paused_label(core, target) == "true"
    finally:
        dashboard.stop()


def test_the_login_page_carries_the_security_headers_and_no_secret(
    token_login: tuple[DashboardProcess, str, str, str, str],
) -> None:
    dashboard, _, token, _, _ = token_login
    with urllib.request.urlopen(f"{dashboard.url}/login") as response:  # noqa: S310 (http on loopback)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert 'name="csrf"' in page
    assert token not in page
    assert post(f"{dashboard.url}/login", {"token": token}) == 403, "a login without the CSRF token is refused"
    assert post(f"{dashboard.url}/logout", {"csrf": "t"}, cookie="coordinator_csrf=t") == 401, "no session to end"


def test_stored_runs_are_shown_only_where_the_viewer_may_list_testruns(
    kubeconfig: Path, api_client: client.ApiClient, make_namespace: Any, tmp_path: Path
) -> None:
    allowed = make_namespace({})
    other = make_namespace({})
    user = f"reader-{uuid.uuid4().hex[:6]}"
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        allowed,
        {
            "metadata": {"name": "list-runs"},
            "rules": [{"apiGroups": ["chaos.coordinator.dev"], "resources": ["testruns"], "verbs": ["list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        allowed,
        {
            "metadata": {"name": "list-runs"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-runs"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )
    dashboard = started(user_kubeconfig(kubeconfig, user, tmp_path / "users"), tmp_path, make_namespace({}))

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"{dashboard.url}{path}") as response:  # noqa: S310 (loopback)
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        status, page = get("/history")
        assert status == 403
        assert "the stored runs of every namespace are shown only to those who may list TestRuns" in page
        status, page = get(f"/history?namespace={other}")
        assert status == 403
        assert f"the stored runs of namespace {other} are shown only" in page
        status, page = get(f"/history?namespace={allowed}")
        assert status == 200
        assert 'id="history-problem"' not in page
        status, page = get("/")
        assert status == 200
        assert "History unavailable: the stored runs of every namespace are shown only" in page
    finally:
        dashboard.stop()
