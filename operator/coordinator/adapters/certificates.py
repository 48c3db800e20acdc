"""X.509 for the admission webhook: a private CA and the serving certificate it signs (the ``cryptography`` package).

The CA lives longer than the serving certificate it signs: renewing the serving certificate keeps the caBundle in
the webhook configurations valid, so only a new CA (once a year) changes what the API server must trust, and then
the bundle carries the old CA beside the new one until the old one expires.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=365)
SERVING_LIFETIME = timedelta(days=90)
# Renewed when less than this is left: a third of the serving lifetime, and well before the CA runs out.
RENEW_BEFORE = timedelta(days=30)
# Tolerates clocks a little behind ours (the API server's).
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM-encoded."""

    cert: bytes
    key: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True)
class ServingBundle:
    """What the webhook server needs (the serving pair) and what the API server must trust (``ca_bundle``)."""

    authority: KeyPair
    serving: KeyPair
    previous_authorities: bytes = b""  # PEM of CAs still trusted while certificates they signed may be in use

    @property
    def ca_bundle(self) -> bytes:
        return self.authority.cert + self.previous_authorities


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def new_authority(common_name: str, now: datetime) -> KeyPair:
    """A self-signed CA (P-256) valid for :data:`CA_LIFETIME` from ``now``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def issue_serving(authority: KeyPair, hosts: list[str], now: datetime) -> KeyPair:
    """A serving certificate for ``hosts`` (names and IP addresses), signed by ``authority``, valid for
    :data:`SERVING_LIFETIME` or until the CA expires, whichever is sooner."""
    ca_key = serialization.load_pem_private_key(authority.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA key is not an EC key")
    ca_cert = authority.certificate
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVING_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def covered_hosts(pair: KeyPair) -> set[str]:
    """The names and addresses a certificate's SAN covers, as strings."""
    try:
        san = pair.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.DNSName)} | {
        str(v) for v in san.get_values_for_type(x509.IPAddress)
    }


def signed_by(pair: KeyPair, authority: KeyPair) -> bool:
    """Whether ``pair`` was issued by ``authority`` (its signature verifies with the CA's key)."""
    try:
        pair.certificate.verify_directly_issued_by(authority.certificate)
    except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
        return False
    return True


def renewal_reason(bundle: ServingBundle, hosts: list[str], now: datetime) -> str | None:
    """Why ``bundle`` must be renewed for serving ``hosts`` at ``now``, or None when it is good."""
    if bundle.authority.not_after - now < RENEW_BEFORE + SERVING_LIFETIME:
        return "the CA expires soon"
    if bundle.serving.not_after - now < RENEW_BEFORE:
        return "the serving certificate expires soon"
    if not set(hosts) <= covered_hosts(bundle.serving):
        return f"the serving certificate does not cover {', '.join(sorted(set(hosts) - covered_hosts(bundle.serving)))}"
    if not signed_by(bundle.serving, bundle.authority):
        return "the serving certificate was not signed by the stored CA"
    return None


def renewed(bundle: ServingBundle | None, common_name: str, hosts: list[str], now: datetime) -> ServingBundle:
    """A bundle good for ``hosts`` at ``now``: the same CA when it has time left (so the caBundle stays valid),
    else a new one, with the old one still trusted until it expires."""
    if bundle is not None and bundle.authority.not_after - now >= RENEW_BEFORE + SERVING_LIFETIME:
        authority, previous = bundle.authority, bundle.previous_authorities
    else:
        authority = new_authority(common_name, now)
        previous = bundle.authority.cert if bundle is not None and bundle.authority.not_after > now else b""
    return ServingBundle(authority, issue_serving(authority, hosts, now), previous)
