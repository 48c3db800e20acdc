"""``dns-fault``: the command lines of the agent's resolver and of the nftables redirect in front of it (pure).

The agent starts the resolver first (its hold process, ``programs/dns_fault.py serve``), checks that no other
dns-fault redirects the pod's DNS (``alone``), then adds an nftables table whose nat chain redirects the pod's outbound DNS (UDP and TCP port 53) to it, then checks that a
query to each of the pod's nameservers reaches this fault's resolver (``programs/dns_fault.py check``). The
resolver's own upstream sockets carry ``BYPASS_MARK``, which the chain lets pass. The revert deletes the table.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

from coordinator.faults.inpod.programs import dns_fault as program

PROGRAM = "/opt/coordinator-agent/dns_fault.py"
# The firewall mark of every dns-fault resolver's upstream queries: one value for all of them, so that two
# dns-faults' resolvers on one pod never forward to each other in a loop.
BYPASS_MARK = 0x636F6F72
DNS_PORT = 53
_PORTS = (20000, 10000)  # the resolver's port: 20000-29999, below the ephemeral range clients draw from

DnsAction = Literal["error", "random", "delay"]


@dataclass(frozen=True)
class DnsFault:
    """``dns-fault``: queries for names matching ``patterns`` get ``action``; all others are forwarded unchanged.

    ``error`` answers ``rcode`` (NXDOMAIN or SERVFAIL); ``random`` answers A/AAAA queries with an address from
    the documentation ranges; ``delay`` forwards after ``delay_ms``.
    """

    patterns: tuple[str, ...]
    action: DnsAction
    rcode: str = "NXDOMAIN"
    delay_ms: int = 0

    def __post_init__(self) -> None:
        try:
            program.NameMatcher(self.patterns)
            program.Action(self.action, self.rcode, self.delay_ms / 1000)
        except ValueError as exc:
            raise ValueError(f"dns-fault: {exc}") from None

    def matches(self, name: str) -> bool:
        """Whether the resolver gives a query for ``name`` the fault's answer (the resolver's own rule)."""
        return program.NameMatcher(self.patterns).matches(name)


def resolver_port(fault_id: str) -> int:
    """The loopback port of this fault's resolver: stable per fault id, so two dns-faults on a pod differ."""
    low, span = _PORTS
    return low + int(hashlib.sha256(fault_id.encode()).hexdigest()[:8], 16) % span


def apply_commands(fault: DnsFault, table: str, fault_id: str) -> list[list[str]]:
    """No other dns-fault's redirect, then this one (after the mark's exemption), then the check that it reaches
    the resolver."""
    port = resolver_port(fault_id)
    chain = program.REDIRECT_CHAIN
    hook = ["{", "type", "nat", "hook", "output", "priority", "-100", ";", "policy", "accept", ";", "}"]
    return [
        ["python3", PROGRAM, "alone", "--id", fault_id],
        ["nft", "add", "table", "inet", table],
        ["nft", "add", "chain", "inet", table, chain, *hook],
        ["nft", "add", "rule", "inet", table, chain, "meta", "mark", hex(BYPASS_MARK), "return"],
        [
            "nft",
            "add",
            "rule",
            "inet",
            table,
            chain,
            "meta",
            "l4proto",
            "{ tcp, udp }",
            "th",
            "dport",
            str(DNS_PORT),
            "counter",
            "redirect",
            "to",
            f":{port}",
        ],
        ["python3", PROGRAM, "check", "--id", fault_id],
    ]


def revert_commands(table: str) -> list[list[str]]:
    return [["nft", "delete", "table", "inet", table]]


def hold_command(fault: DnsFault, fault_id: str, duration_seconds: int) -> list[str]:
    """The resolver, which ends by itself after ``duration_seconds``."""
    command = ["python3", PROGRAM, "serve", "--id", fault_id, "--port", str(resolver_port(fault_id))]
    command += ["--mark", hex(BYPASS_MARK), "--duration", str(duration_seconds)]
    for pattern in fault.patterns:
        command += ["--pattern", pattern]
    command += ["--action", fault.action]
    if fault.action == "error":
        command += ["--rcode", fault.rcode]
    if fault.action == "delay":
        command += ["--delay-ms", str(fault.delay_ms)]
    return command
