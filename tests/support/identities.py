"""Real identities on the local cluster: a kubeconfig per user, with a client certificate signed by the cluster CA.

The API server authenticates a client certificate's subject as the user (CN) and their groups (O), exactly as
it does any other user; RBAC then decides what they may do. The cluster's CA key sits next to the CA certificate
that the admin kubeconfig names (``<cluster dir>/pki/ca.key``), so this works on clusters booted by
``make cluster-up`` (hack/cluster), not on a cluster whose CA key we do not hold.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=1)


def _current_cluster(config: dict[str, Any]) -> dict[str, Any]:
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    name = contexts[config["current-context"]]["cluster"]
    return dict(next(c["cluster"] for c in config["clusters"] if c["name"] == name))


def cluster_ca(admin_kubeconfig: Path) -> tuple[Path, Path]:
    """The cluster CA's certificate and key files, from the admin kubeconfig's ``certificate-authority``."""
    cluster = _current_cluster(yaml.safe_load(admin_kubeconfig.read_text()))
    if "certificate-authority" not in cluster:
        raise ValueError(f"{admin_kubeconfig}: the cluster names no certificate-authority file (its CA key is unknown)")
    ca_cert = Path(cluster["certificate-authority"])
    ca_key = ca_cert.with_name("ca.key")
    if not ca_key.exists():
        raise ValueError(f"{ca_key} does not exist: only clusters booted by `make cluster-up` can make users")
    return ca_cert, ca_key


def client_certificate(ca_cert: Path, ca_key: Path, name: str, groups: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """A new key and a client certificate for user ``name`` in ``groups``, signed by the CA (PEM, PEM)."""
    authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    authority_key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
        + [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(authority_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


def user_kubeconfig(admin_kubeconfig: Path, name: str, directory: Path, groups: Sequence[str] = ()) -> Path:
    """A kubeconfig for the same API server that authenticates as user ``name`` (in ``groups``) by a client
    certificate signed by the cluster CA. Its key and certificate are written beside it in ``directory``."""
    ca_cert, ca_key = cluster_ca(admin_kubeconfig)
    key_pem, cert_pem = client_certificate(ca_cert, ca_key, name, groups)
    directory.mkdir(parents=True, exist_ok=True)
    key_file, cert_file = directory / f"{name}.key", directory / f"{name}.crt"
    key_file.write_bytes(key_pem)
    key_file.chmod(0o600)
    cert_file.write_bytes(cert_pem)
    cluster = _current_cluster(yaml.safe_load(admin_kubeconfig.read_text()))
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": name, "user": {"client-certificate": str(cert_file), "client-key": str(key_file)}}],
        "contexts": [{"name": name, "context": {"cluster": "local", "user": name}}],
        "current-context": name,
    }
    path = directory / f"{name}.kubeconfig"
    path.write_text(json.dumps(kubeconfig, indent=2))
    path.chmod(0o600)
    return path
