"""Credentials without a client library: kubeconfigs as kubectl reads them, and the pod's service account."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.adapters.kube import load_credentials
from coordinator.adapters.kubeconfig import (
    ConnectionConfig,
    KubeconfigError,
    in_cluster_config,
    kubeconfig_paths,
    read_kubeconfig,
)

CA_PEM = b"-----BEGIN CERTIFICATE-----\nnot-checked-by-the-reader\n-----END CERTIFICATE-----\n"


def write_config(
    path: Path,
    cluster: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
    current: str | None = "ctx",
    context: dict[str, Any] | None = None,
) -> Path:
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster if cluster is not None else {"server": "https://k:6443/"}}],
        "users": [{"name": "u", "user": user if user is not None else {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": context if context is not None else {"cluster": "c", "user": "u"}}],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path


def test_token_and_inline_ca(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "config",
        cluster={"server": "https://k:6443/", "certificate-authority-data": base64.b64encode(CA_PEM).decode()},
        user={"token": "s3cret"},
    )
    config = read_kubeconfig([path])
    assert config is not None
    assert (config.host, config.token, config.insecure) == ("https://k:6443", "s3cret", False)
    assert config.ca_file is not None
    assert Path(config.ca_file).read_bytes() == CA_PEM
    assert stat.S_IMODE(os.stat(config.ca_file).st_mode) == 0o600, "key material only its owner can read"
    again = read_kubeconfig([path])
    assert again is not None
    assert again.ca_file == config.ca_file, "a second login writes no second file"


def test_relative_paths_are_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    path = write_config(
        tmp_path / "config",
        cluster={"server": "https://k:6443", "certificate-authority": "pki/ca.crt"},
        user={"client-certificate": "pki/me.crt", "client-key": "/abs/me.key", "tokenFile": "token"},
    )
    config = read_kubeconfig([path])
    assert config == ConnectionConfig(
        host="https://k:6443",
        ca_file=str(tmp_path.resolve() / "pki/ca.crt"),
        token_file=tmp_path.resolve() / "token",
        cert_file=str(tmp_path.resolve() / "pki/me.crt"),
        key_file="/abs/me.key",
    )


def test_insecure_and_anonymous(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "config",
        cluster={"server": "https://k:6443", "insecure-skip-tls-verify": True},
        context={"cluster": "c"},
    )
    assert read_kubeconfig([path]) == ConnectionConfig(host="https://k:6443", insecure=True)


def test_several_files_merge_like_kubectl(tmp_path: Path) -> None:
    """KUBECONFIG=a:b: for each name, and for current-context, the first file that has it wins; missing files
    are skipped."""
    first = tmp_path / "a"
    first.write_text(yaml.safe_dump({"users": [{"name": "u", "user": {"token": "from-a"}}]}))
    second = write_config(tmp_path / "b", user={"token": "from-b"})
    paths = kubeconfig_paths(os.pathsep.join([str(tmp_path / "missing"), str(first), str(second)]))
    assert len(paths) == 3
    config = read_kubeconfig(paths)
    assert config is not None
    assert (config.host, config.token) == ("https://k:6443", "from-a")


@pytest.mark.parametrize(
    ("cluster", "user"),
    [
        ({"server": "https://k"}, {"exec": {"command": "aws", "apiVersion": "client.authentication.k8s.io/v1"}}),
        ({"server": "https://k"}, {"auth-provider": {"name": "oidc"}}),
        ({"server": "https://k"}, {"username": "admin", "password": "x"}),
        ({"server": "https://k", "proxy-url": "http://proxy:3128"}, {"token": "t"}),
        ({"server": "https://k", "tls-server-name": "kubernetes"}, {"token": "t"}),
    ],
)
def test_what_needs_the_library_gives_none(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> None:
    assert read_kubeconfig([write_config(tmp_path / "config", cluster=cluster, user=user)]) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"current": None}, "sets no current-context"),
        ({"current": "elsewhere"}, "context 'elsewhere' is not in the kubeconfig"),
        ({"context": {"cluster": "gone", "user": "u"}}, "names cluster 'gone'"),
        ({"cluster": {"certificate-authority": "ca"}}, "cluster 'c' has no server"),
        ({"cluster": {"server": "https://k", "certificate-authority-data": "not base64!"}}, "is not base64"),
    ],
)
def test_unusable_kubeconfigs_say_why(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(KubeconfigError, match=message):
        read_kubeconfig([write_config(tmp_path / "config", **kwargs)])


def test_no_file_or_not_a_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="no kubeconfig at"):
        read_kubeconfig([tmp_path / "missing"])
    (tmp_path / "list").write_text("- a\n- b\n")
    with pytest.raises(KubeconfigError, match="is not a kubeconfig"):
        read_kubeconfig([tmp_path / "list"])
    (tmp_path / "broken").write_text("clusters: [\n")
    with pytest.raises(KubeconfigError, match="cannot read the kubeconfig"):
        read_kubeconfig([tmp_path / "broken"])


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("jwt\n")
    (tmp_path / "ca.crt").write_bytes(CA_PEM)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_config(env, tmp_path) == ConnectionConfig(
        host="https://10.96.0.1:443", ca_file=str(tmp_path / "ca.crt"), token_file=tmp_path / "token"
    )
    v6 = in_cluster_config({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)
    assert v6.host == "https://[fd00::1]:443"


def test_in_cluster_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="not in a pod"):
        in_cluster_config({}, tmp_path)
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    with pytest.raises(KubeconfigError, match="no service-account token"):
        in_cluster_config(env, tmp_path)


def client_certificate(directory: Path) -> tuple[bytes, bytes]:
    """A throwaway self-signed certificate and its key (PEM)."""
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem"),
            "-days", "1", "-subj", "/CN=coordinator-test",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return (directory / "cert.pem").read_bytes(), (directory / "key.pem").read_bytes()


async def test_inline_client_certificate_is_presented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = client_certificate(tmp_path)
    path = write_config(
        tmp_path / "config",
        cluster={"server": "https://k:6443", "certificate-authority-data": base64.b64encode(cert).decode()},
        user={
            "client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode(),
        },
    )
    loaded: list[tuple[str, str | None]] = []
    original = ssl.SSLContext.load_cert_chain

    def recording(self: ssl.SSLContext, certfile: str, keyfile: str | None = None, *rest: Any) -> None:
        loaded.append((certfile, keyfile))
        original(self, certfile, keyfile)  # a real key pair: loading fails loudly if the files are wrong

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", recording)
    credentials = await load_credentials(str(path))
    assert isinstance(credentials.ssl_context, ssl.SSLContext)
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert credentials.token is None
    assert len(loaded) == 1
    written = await asyncio.to_thread(lambda: (Path(loaded[0][0]).read_bytes(), Path(loaded[0][1] or "").read_bytes()))
    assert written == (cert, key)


async def test_insecure_still_presents_the_client_certificate(tmp_path: Path) -> None:
    client_certificate(tmp_path)
    path = write_config(
        tmp_path / "config",
        cluster={"server": "https://k:6443", "insecure-skip-tls-verify": True},
        user={"client-certificate": "cert.pem", "client-key": "key.pem"},
    )
    credentials = await load_credentials(str(path))
    assert isinstance(credentials.ssl_context, ssl.SSLContext), "ssl=False would drop the certificate"
    assert credentials.ssl_context.verify_mode == ssl.CERT_NONE
    assert not credentials.ssl_context.check_hostname


def test_operator_process_loads_neither_client_library(tmp_path: Path) -> None:
    """What `coordinator run` does: register the handlers with the client libraries hidden from kopf, then read a
    static kubeconfig. Neither library is loaded, and kubernetes_asyncio can still be imported (exec plugins)."""
    path = write_config(tmp_path / "config", user={"token": "t"})
    code = (
        "import asyncio, sys\n"
        "from coordinator.cli.main import import_handlers_without_client_libraries\n"
        "import_handlers_without_client_libraries()\n"
        "import coordinator.cli.run\n"
        "from coordinator.adapters.kube import load_credentials\n"
        f"creds = asyncio.run(load_credentials({str(path)!r}))\n"
        "assert creds.token == 't', creds\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kubernetes_asyncio')]\n"
        "assert not loaded, loaded\n"
        "import kubernetes_asyncio.config\n"
        "print('importable')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "importable"


@pytest.mark.parametrize("which", ["certificate-authority", "client-certificate"])
async def test_missing_or_broken_tls_files_say_which(tmp_path: Path, which: str) -> None:
    (tmp_path / "not-pem").write_text("hello\n")
    cluster: dict[str, Any] = {"server": "https://k:6443"}
    user: dict[str, Any] = {"token": "t"}
    if which == "certificate-authority":
        cluster["certificate-authority"] = "missing-ca.crt"
    else:
        user = {"client-certificate": "not-pem", "client-key": "not-pem"}
    path = write_config(tmp_path / "config", cluster=cluster, user=user)
    with pytest.raises(KubeconfigError, match=r"cannot load the TLS files of https://k:6443 \(.*(missing-ca|not-pem)"):
        await load_credentials(str(path))


def test_coordinator_run_without_credentials_says_why(tmp_path: Path) -> None:
    """A one-line error and exit status 2, not a traceback."""
    env = {**os.environ, "HOME": str(tmp_path), "KUBERNETES_SERVICE_HOST": "", "KUBECONFIG": ""}
    done = subprocess.run(
        [sys.executable, "-m", "coordinator.cli.main", "run", "--kubeconfig", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: no kubeconfig at {tmp_path / 'missing'}"
