"""Denied address ranges of http, prometheus and grpc probes (COORDINATOR_PROBE_DENY_CIDRS), pure.

Enforced by the probes' HTTP session and resolver (coordinator.probes.reach) and by the grpc probe, which dials
only addresses that resolver checked (coordinator.probes.grpc); docs/probe-reach.md says what the default holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# COORDINATOR_PROBE_DENY_CIDRS by default. Loopback stays allowed: local runs and tests probe 127.0.0.1.
DEFAULT_DENIED_CIDRS: tuple[str, ...] = (
    "169.254.0.0/16",  # IPv4 link-local: the metadata service of AWS, GCP, Azure, OpenStack, ... (169.254.169.254)
    "fe80::/10",  # IPv6 link-local
    "fd00:ec2::254/128",  # AWS instance metadata over IPv6
    "fd20:ce::254/128",  # Google Cloud metadata server over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure WireServer (host agent)
    "192.0.0.192/32",  # Oracle Cloud (Classic) metadata
)
SETTING = "COORDINATOR_PROBE_DENY_CIDRS"


def parse_cidrs(entries: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """Comma-separated (or listed) CIDRs as networks; a bare address is a /32 or /128. ValueError names the entry."""
    parts = entries.split(",") if isinstance(entries, str) else entries
    networks = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not a CIDR such as 169.254.0.0/16 or fe80::/10") from None
    return tuple(networks)


def denied_by(address: str | IPAddress, denied: Sequence[IPNetwork]) -> IPNetwork | None:
    """The denied network holding ``address``, if any. An IPv4-mapped IPv6 address (::ffff:169.254.169.254) is
    judged as the IPv4 address it reaches; a zone (fe80::1%eth0) does not change the address."""
    if isinstance(address, str):
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
    else:
        ip = address
    candidates: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        candidates.append(ip.ipv4_mapped)
    for network in denied:
        if any(c.version == network.version and c in network for c in candidates):
            return network
    return None
