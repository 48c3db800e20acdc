"""Where the API server is and how to authenticate, read without a Kubernetes client library.

kubernetes_asyncio can resolve credentials too, but importing it loads its ~860 generated modules, 38 MiB
resident for the operator's whole life (benchmarks/README.md, footprint). The cases a deployed operator meets are
read here: its service account in the cluster, and kubeconfigs whose user has a token, a token file or a client
certificate. A kubeconfig that needs more (an exec plugin, an auth provider, a proxy) gives ``None``, and the
caller hands it to kubernetes_asyncio (adapters/kube.py). Everything here reads files: call it off the event loop.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# Kubeconfig fields this module does not implement: their presence sends the kubeconfig to kubernetes_asyncio.
LIBRARY_USER_FIELDS = ("exec", "auth-provider", "username", "password")
LIBRARY_CLUSTER_FIELDS = ("proxy-url", "tls-server-name")


class KubeconfigError(ValueError):
    """No usable connection settings: the message says what is missing and where it was looked for."""


@dataclass(frozen=True)
class ConnectionConfig:
    """What a client needs to reach the API server. Paths are absolute; inline kubeconfig data (``*-data``) is
    written to private temporary files, removed when the process exits."""

    host: str
    ca_file: str | None = None
    insecure: bool = False
    token: str | None = None
    token_file: Path | None = None
    cert_file: str | None = None
    key_file: str | None = None


def in_cluster_config(env: Mapping[str, str] | None = None, account: Path = SERVICE_ACCOUNT) -> ConnectionConfig:
    """The pod's service account: ``KUBERNETES_SERVICE_HOST``/``_PORT``, and the token and CA Kubernetes mounts."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeconfigError(
            "no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and not in a pod "
            "(KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not set)"
        )
    token = account / "token"
    if not token.is_file():
        raise KubeconfigError(f"in a pod, but no service-account token at {token} (automountServiceAccountToken?)")
    ca = account / "ca.crt"
    host = f"[{host}]" if ":" in host else host  # an IPv6 address
    return ConnectionConfig(host=f"https://{host}:{port}", ca_file=str(ca) if ca.is_file() else None, token_file=token)


def kubeconfig_paths(explicit: str) -> list[Path]:
    """``--kubeconfig`` or ``KUBECONFIG``: one path, or several joined like ``PATH`` (merged, the first wins)."""
    return [Path(part).expanduser() for part in explicit.split(os.pathsep) if part]


def read_kubeconfig(paths: Sequence[Path]) -> ConnectionConfig | None:
    """The current context's cluster and user, merged over ``paths`` as kubectl does (for each name, and for
    ``current-context``, the first file that has it wins; missing files are skipped). ``None`` when the user or
    cluster needs what only kubernetes_asyncio implements (``LIBRARY_USER_FIELDS``, ``LIBRARY_CLUSTER_FIELDS``).

    Raises:
        KubeconfigError: no file exists, a file is not a kubeconfig, or the current context, its cluster or the
            cluster's server is missing.
    """
    entries: dict[str, dict[str, tuple[dict[str, Any], Path]]] = {"clusters": {}, "users": {}, "contexts": {}}
    current: str | None = None
    read: list[Path] = []
    for path in paths:
        try:
            document = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as exc:
            raise KubeconfigError(f"cannot read the kubeconfig {path}: {exc}") from exc
        read.append(path)
        if document is None:
            continue
        if not isinstance(document, dict):
            raise KubeconfigError(f"{path} is not a kubeconfig (a YAML mapping with clusters, users and contexts)")
        current = current or document.get("current-context") or None
        for section, found in entries.items():
            field = section[:-1]  # clusters -> cluster
            for entry in document.get(section) or []:
                name = entry.get("name") if isinstance(entry, dict) else None
                if isinstance(name, str) and name not in found:
                    found[name] = (entry.get(field) or {}, path.parent.resolve())
    if not read:
        raise KubeconfigError(f"no kubeconfig at {os.pathsep.join(map(str, paths))}")
    where = ", ".join(map(str, read))
    if not current:
        raise KubeconfigError(f"the kubeconfig ({where}) sets no current-context")
    if current not in entries["contexts"]:
        raise KubeconfigError(f"context {current!r} is not in the kubeconfig ({where})")
    context = entries["contexts"][current][0]
    cluster_name = context.get("cluster")
    if cluster_name not in entries["clusters"]:
        raise KubeconfigError(f"context {current!r} names cluster {cluster_name!r}, which is not in ({where})")
    cluster, cluster_dir = entries["clusters"][cluster_name]
    user, user_dir = entries["users"].get(context.get("user") or "", ({}, cluster_dir))  # no user: anonymous
    if any(field in user for field in LIBRARY_USER_FIELDS) or any(f in cluster for f in LIBRARY_CLUSTER_FIELDS):
        return None
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"cluster {cluster_name!r} has no server in the kubeconfig ({where})")
    token_file = _path(user.get("tokenFile"), user_dir)
    return ConnectionConfig(
        host=server.rstrip("/"),
        ca_file=_material(cluster, "certificate-authority", cluster_dir),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        token=str(user["token"]) if user.get("token") else None,
        token_file=Path(token_file) if token_file else None,
        cert_file=_material(user, "client-certificate", user_dir),
        key_file=_material(user, "client-key", user_dir),
    )


def _path(value: object, base: Path) -> str | None:
    """A kubeconfig path: relative ones are relative to the file that holds them."""
    if not isinstance(value, str) or not value:
        return None
    return str(base / Path(value).expanduser())


_written: dict[bytes, str] = {}  # inline data -> its temporary file, so a new login writes no new file


def _material(entry: Mapping[str, Any], field: str, base: Path) -> str | None:
    """``field`` (a path) or ``field-data`` (base64, written to a file only this user can read)."""
    data = entry.get(f"{field}-data")
    if not data:
        return _path(entry.get(field), base)
    try:
        content = base64.b64decode(str(data), validate=True)
    except binascii.Error as exc:
        raise KubeconfigError(f"{field}-data in the kubeconfig is not base64: {exc}") from exc
    if content not in _written:
        fd, name = tempfile.mkstemp(prefix=f"coordinator-{field}-")  # mode 0600
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        atexit.register(_remove, name)
        _written[content] = name
    return _written[content]


def _remove(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)
