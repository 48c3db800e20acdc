"""kopf logs in with the operator's own credentials, and the operator process goes without the sync client."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import yaml

from coordinator.adapters.kube import Credentials
from coordinator.handlers.login import KOPF_REQUESTS, handle_login, kopf_connection_limit, session_headers

CA_PEM = b"-----BEGIN CERTIFICATE-----\nnot-checked-by-the-loader\n-----END CERTIFICATE-----\n"


def kubeconfig(tmp_path: Path, cluster: dict[str, object], user: dict[str, object]) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


@pytest.mark.parametrize(
    ("watched", "limit"),
    [
        ([], 2 + 2 + KOPF_REQUESTS),  # cluster-wide: two resources, two scanning watches
        (["shop"], 2 + 2 + KOPF_REQUESTS),
        (["shop", "db", "web"], 6 + 2 + KOPF_REQUESTS),
        (["team-*"], 0),  # the number of watches is not known: no limit rather than a starved watch
        (["shop", "ns-[ab]"], 0),
    ],
)
def test_kopf_pool_holds_every_watch_and_some_requests(watched: list[str], limit: int) -> None:
    assert kopf_connection_limit(watched) == limit


def test_bearer_token_header() -> None:
    assert session_headers("abc") == {"Authorization": "Bearer abc"}
    assert session_headers(None) == {}, "client certificates need no header"


def test_service_account_token_is_read_from_its_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    creds = Credentials(host="https://10.0.0.1", ssl_context=False, token=None, token_file=token_file)
    assert creds.current_token() == "first"
    token_file.write_text("rotated\n")
    assert creds.current_token() == "rotated", "a rotated token is picked up"
    assert creds.insecure


async def test_login_reads_the_kubeconfig_kopf_will_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = kubeconfig(
        tmp_path,
        {"server": "https://127.0.0.1:16443", "certificate-authority-data": base64.b64encode(CA_PEM).decode()},
        {"token": "s3cret"},
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    loaded: list[str] = []
    monkeypatch.setattr("ssl.SSLContext.load_verify_locations", lambda _, cafile, *rest: loaded.append(cafile))
    info = await handle_login(["shop"])
    try:
        assert info.server == "https://127.0.0.1:16443"
        assert info.aiohttp_session.headers["Authorization"] == "Bearer s3cret"
        connector = info.aiohttp_session.connector
        assert connector is not None
        assert connector.limit == kopf_connection_limit(["shop"])
        assert len(loaded) == 1, "the cluster's CA is trusted"
        assert await asyncio.to_thread(Path(loaded[0]).read_bytes) == CA_PEM
    finally:
        await info.aiohttp_session.close()


async def test_login_runs_exec_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cloud kubeconfigs (EKS, GKE, AKS) get their token from an exec plugin: kopf must get that token too."""
    plugin = tmp_path / "plugin"
    plugin.write_text(
        "#!/bin/sh\n"
        'echo \'{"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",'
        ' "status": {"token": "from-plugin"}}\'\n'
    )
    plugin.chmod(0o755)
    path = kubeconfig(
        tmp_path,
        {"server": "https://127.0.0.1:16443", "insecure-skip-tls-verify": True},
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "interactiveMode": "Never"}},
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    info = await handle_login([])
    try:
        assert info.aiohttp_session.headers["Authorization"] == "Bearer from-plugin"
    finally:
        await info.aiohttp_session.close()
