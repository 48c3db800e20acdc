"""The exact command lines (argv lists) that apply and revert each in-pod fault (pure).

Each fault is a small frozen option class, validated on construction (``ValueError`` naming the fault and the
option). ``build_commands`` turns one into ``FaultCommands``: ``apply`` (run in order), ``revert`` (undoes all of
``apply``; safe to run when nothing or only part was applied), and ``hold`` (a process that *is* the fault and
ends by itself, for the stress faults). The agent (``agent.py``) renders them into one shell script.

Mechanisms, chosen per fault (docs/inpod-faults.md explains why):

* ``network-delay``, ``network-duplicate``, ``network-corrupt``: tc netem (needs ``sch_netem``).
* ``network-bandwidth``: tc tbf.
* ``network-loss``: nftables ``numgen random`` (default) or tc netem.
* ``network-partition`` (in-pod): nftables drop.
* ``cpu-stress``, ``memory-stress``, ``io-stress``: stress-ng with ``--timeout`` (its own dead man's switch).
* ``container-kill``: ``kill -s SIG`` to the target container's main process.
* ``clock-skew``: the ``coordinator-clock-skew`` tracer patches the vDSO of the container's processes (``clock_skew``).
* ``dns-fault``: an nftables redirect of the pod's DNS to a resolver in the agent (``dns.py``).
* ``http-fault``: a transparent HTTP/1.1 proxy in the agent, with an nftables redirect to it (``http.py``).

tc shapes **egress only** (what the pod sends): ingress shaping needs an ifb device, which a pod cannot count
on. With ``TrafficScope.cidrs``/``ports`` the tc faults hang the netem/tbf qdisc under an htb class that u32
filters feed, and everything else bypasses it through htb's direct queue (htb rather than prio: prio is a
kernel option that some kernels, this project's development machines among them, are built without). nftables
faults can also match ingress. Every tc qdisc carries a handle derived from the fault id and the revert deletes
only that handle, so a late revert never removes a qdisc that another fault installed since.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from coordinator.faults.inpod import clock_skew, dns, http
from coordinator.faults.inpod.clock_skew import ClockSkew as ClockSkew
from coordinator.faults.inpod.dns import DnsFault
from coordinator.faults.inpod.http import HttpFault as HttpFault  # re-exported: one module names every fault

Direction = Literal["egress", "ingress", "both"]

# tc's rate units (tc(8)): bit-based and byte-based (``bps`` is bytes per second), SI or IEC prefixes.
_RATE = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<prefix>[kmgt]i?)?(?P<unit>bit|bps)$", re.IGNORECASE)
_RATE_PREFIX = {
    "": 1,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
    "t": 10**12,
    "ki": 2**10,
    "mi": 2**20,
    "gi": 2**30,
    "ti": 2**40,
}
# stress-ng sizes: bytes with an optional b/k/m/g suffix, or a percentage of memory.
_SIZE = re.compile(r"^(?:\d+[bkmg]?|\d+(?:\.\d+)?%)$", re.IGNORECASE)
_INTERFACE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
_FAULT_ID = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_CONTAINER = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")

# Linux signal numbers (x86, arm, arm64, riscv, s390, ppc agree on these). The agent checks the target's
# SigCgt mask with them, so only signals whose effect on a container is meaningful are offered.
SIGNALS = {
    "HUP": 1,
    "INT": 2,
    "QUIT": 3,
    "ABRT": 6,
    "KILL": 9,
    "USR1": 10,
    "SEGV": 11,
    "USR2": 12,
    "ALRM": 14,
    "TERM": 15,
}

# A class rate so high it never shapes: only the netem/tbf qdisc under it acts on the matched traffic.
_UNSHAPED_CLASS = ("rate", "100gbit", "quantum", "60000")
# htb's direct queue carries the unmatched traffic; a pod's veth may have txqueuelen 0, which htb would turn
# into a 2-packet queue.
_DIRECT_QLEN = "1000"


def _percent(fault: str, option: str, value: float) -> None:
    if not 0 <= value <= 100:
        raise ValueError(f"{fault}: {option} must be between 0 and 100 (percent), got {value:g}")


def _positive(fault: str, option: str, value: int, upper: int | None = None) -> None:
    if value < 1 or (upper is not None and value > upper):
        bound = f"between 1 and {upper}" if upper is not None else "at least 1"
        raise ValueError(f"{fault}: {option} must be {bound}, got {value}")


def rate_bits_per_second(rate: str) -> float:
    """``"1mbit"`` -> 1e6; raises ValueError for anything tc would not read as a rate."""
    match = _RATE.match(rate)
    if not match:
        raise ValueError(f'rate "{rate}" is not a tc rate such as 500kbit, 8mbit, 1gbit or 125kbps')
    value = float(match["value"]) * _RATE_PREFIX[(match["prefix"] or "").lower()]
    return value * 8 if match["unit"].lower() == "bps" else value


@dataclass(frozen=True)
class TrafficScope:
    """Which traffic a network fault acts on: the interface, and optionally only these peers.

    ``cidrs`` and ``ports`` describe the *remote* side: destination address and port of egress packets,
    source address and port of ingress ones (nftables only). Both given: a packet must match one of each.
    Ports match TCP and UDP.
    """

    interface: str = "eth0"
    cidrs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    direction: Direction = "egress"

    def __post_init__(self) -> None:
        if not _INTERFACE.match(self.interface):
            raise ValueError(f'interface "{self.interface}" is not a network interface name')
        for cidr in self.cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f'cidrs: "{cidr}" is not an IPv4 or IPv6 CIDR') from None
        for port in self.ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"ports: {port} is not a port (1-65535)")
        if self.direction not in ("egress", "ingress", "both"):
            raise ValueError(f'direction must be egress, ingress or both, got "{self.direction}"')

    @property
    def filtered(self) -> bool:
        return bool(self.cidrs or self.ports)

    def networks(self, version: int) -> list[str]:
        return [
            str(ipaddress.ip_network(c, strict=False))
            for c in self.cidrs
            if ipaddress.ip_network(c, strict=False).version == version
        ]


def _tc_scope(fault: str, scope: TrafficScope) -> None:
    if scope.direction != "egress":
        raise ValueError(
            f'{fault}: direction "{scope.direction}" is not supported: tc shapes egress only '
            "(what the pod sends); shape the other side's egress instead"
        )


@dataclass(frozen=True)
class NetworkDelay:
    """``network-delay``: every matched packet waits ``latency_ms`` (± ``jitter_ms``), through netem."""

    latency_ms: int
    jitter_ms: int = 0
    correlation_percent: float = 0
    scope: TrafficScope = field(default_factory=TrafficScope)

    def __post_init__(self) -> None:
        _positive("network-delay", "latency_ms", self.latency_ms, 600_000)
        if not 0 <= self.jitter_ms <= 600_000:
            raise ValueError(f"network-delay: jitter_ms must be between 0 and 600000, got {self.jitter_ms}")
        _percent("network-delay", "correlation_percent", self.correlation_percent)
        if self.correlation_percent and not self.jitter_ms:
            raise ValueError("network-delay: correlation_percent needs jitter_ms (it correlates the jitter)")
        _tc_scope("network-delay", self.scope)


@dataclass(frozen=True)
class NetworkDuplicate:
    """``network-duplicate``: ``percent`` of the matched packets are sent twice, through netem."""

    percent: float
    correlation_percent: float = 0
    scope: TrafficScope = field(default_factory=TrafficScope)

    def __post_init__(self) -> None:
        _percent("network-duplicate", "percent", self.percent)
        _percent("network-duplicate", "correlation_percent", self.correlation_percent)
        _tc_scope("network-duplicate", self.scope)


@dataclass(frozen=True)
class NetworkCorrupt:
    """``network-corrupt``: ``percent`` of the matched packets get a flipped bit, through netem."""

    percent: float
    correlation_percent: float = 0
    scope: TrafficScope = field(default_factory=TrafficScope)

    def __post_init__(self) -> None:
        _percent("network-corrupt", "percent", self.percent)
        _percent("network-corrupt", "correlation_percent", self.correlation_percent)
        _tc_scope("network-corrupt", self.scope)


@dataclass(frozen=True)
class NetworkLoss:
    """``network-loss``: ``percent`` of the matched packets are dropped.

    ``nftables`` (default) draws a random number per packet (``numgen random``) and works on kernels without
    netem, in either direction; ``netem`` is egress only, and supports ``correlation_percent``.
    """

    percent: float
    correlation_percent: float = 0
    scope: TrafficScope = field(default_factory=TrafficScope)
    mechanism: Literal["nftables", "netem"] = "nftables"

    def __post_init__(self) -> None:
        _percent("network-loss", "percent", self.percent)
        _percent("network-loss", "correlation_percent", self.correlation_percent)
        if self.mechanism == "netem":
            _tc_scope("network-loss", self.scope)
        elif self.mechanism == "nftables":
            if self.correlation_percent:
                raise ValueError('network-loss: correlation_percent needs mechanism "netem"')
            if abs(round(self.percent * 100) - self.percent * 100) > 1e-6:
                raise ValueError(f"network-loss: percent has at most 2 decimals with nftables, got {self.percent}")
        else:
            raise ValueError(f'network-loss: mechanism must be nftables or netem, got "{self.mechanism}"')


@dataclass(frozen=True)
class NetworkPartition:
    """``network-partition`` inside the pod: nftables drops all matched traffic (both directions by default).

    Unlike the NetworkPolicy partition it needs no enforcing network plugin, and it also cuts the pod off from
    its node (kubelet probes fail).
    """

    scope: TrafficScope = field(default_factory=lambda: TrafficScope(direction="both"))


@dataclass(frozen=True)
class NetworkBandwidth:
    """``network-bandwidth``: egress capped at ``rate`` by a token bucket (tc tbf).

    ``burst_bytes`` is the bucket: what may go out at line rate before the cap bites (default: 10 ms at
    ``rate``, at least 32 KiB, which tbf needs to reach the rate at all). ``limit_bytes`` bounds the queue;
    without it the queue holds ``latency_ms`` of traffic.
    """

    rate: str
    burst_bytes: int | None = None
    limit_bytes: int | None = None
    latency_ms: int = 50
    scope: TrafficScope = field(default_factory=TrafficScope)

    def __post_init__(self) -> None:
        try:
            bits = rate_bits_per_second(self.rate)
        except ValueError as exc:
            raise ValueError(f"network-bandwidth: {exc}") from None
        if bits < 8:
            raise ValueError(f'network-bandwidth: rate "{self.rate}" is below 1 byte per second')
        if self.burst_bytes is not None:
            _positive("network-bandwidth", "burst_bytes", self.burst_bytes, 2**31 - 1)
        if self.limit_bytes is not None:
            _positive("network-bandwidth", "limit_bytes", self.limit_bytes, 2**31 - 1)
        _positive("network-bandwidth", "latency_ms", self.latency_ms, 60_000)
        _tc_scope("network-bandwidth", self.scope)

    @property
    def burst(self) -> int:
        if self.burst_bytes is not None:
            return self.burst_bytes
        return max(32 * 1024, int(rate_bits_per_second(self.rate) / 8 / 100))


@dataclass(frozen=True)
class CpuStress:
    """``cpu-stress``: ``workers`` stress-ng CPU workers, each loading a CPU to ``load_percent``."""

    workers: int = 1
    load_percent: int = 100

    def __post_init__(self) -> None:
        _positive("cpu-stress", "workers", self.workers, 256)
        _positive("cpu-stress", "load_percent", self.load_percent, 100)


@dataclass(frozen=True)
class MemoryStress:
    """``memory-stress``: ``workers`` stress-ng vm workers, each keeping ``size`` mapped and dirty.

    ``size`` is per worker (stress-ng's ``--vm-bytes``): bytes with b/k/m/g, or a percentage of memory.
    """

    size: str = "256m"
    workers: int = 1

    def __post_init__(self) -> None:
        if not _SIZE.match(self.size):
            raise ValueError(f'memory-stress: size "{self.size}" is not a size such as 512k, 256m, 1g or 50%')
        _positive("memory-stress", "workers", self.workers, 256)


@dataclass(frozen=True)
class IoStress:
    """``io-stress``: ``workers`` stress-ng hdd workers writing and unlinking ``size`` each under ``path``.

    ``path`` is in the agent's own filesystem; it shares the node's disk with the target, which is what the
    stress is for.
    """

    workers: int = 1
    size: str = "1g"
    path: str = "/tmp"  # noqa: S108 - the agent container's own scratch space, not this process's

    def __post_init__(self) -> None:
        _positive("io-stress", "workers", self.workers, 256)
        if not _SIZE.match(self.size) or self.size.endswith("%"):
            raise ValueError(f'io-stress: size "{self.size}" is not a size such as 512k, 256m or 1g')
        if not self.path.startswith("/"):
            raise ValueError(f'io-stress: path "{self.path}" must be absolute')


@dataclass(frozen=True)
class ContainerKill:
    """``container-kill``: ``signal`` to the main process of ``container`` (one shot, nothing to revert).

    The agent runs in an ephemeral container with ``targetContainerName: container``, so it shares that
    container's PID namespace, where the container's main process is PID 1. The kernel delivers a signal to a
    namespace's PID 1 from inside the namespace only if that process handles it: SIGKILL never arrives that
    way, SIGTERM only when the program installed a handler. The agent checks PID 1's caught-signal mask first
    and fails with that reason instead of pretending. In a pod with ``shareProcessNamespace: true`` PID 1 is
    the sandbox's ``pause`` process (never signalled); there the main process is found by ``container_id``
    (from ``status.containerStatuses[].containerID``) in ``/proc/<pid>/cgroup``, and any signal works.
    """

    container: str
    signal: str = "SIGKILL"
    container_id: str | None = None
    grace_seconds: int = 10

    def __post_init__(self) -> None:
        if not _CONTAINER.match(self.container):
            raise ValueError(f'container-kill: container "{self.container}" is not a container name')
        if self.signal_name not in SIGNALS:
            raise ValueError(
                f'container-kill: signal "{self.signal}" is not one of {", ".join("SIG" + s for s in SIGNALS)}'
            )
        if self.container_id is not None and not _CONTAINER_ID.match(self.bare_container_id or ""):
            raise ValueError(f'container-kill: container_id "{self.container_id}" is not a container ID')
        _positive("container-kill", "grace_seconds", self.grace_seconds, 600)

    @property
    def signal_name(self) -> str:
        return self.signal.upper().removeprefix("SIG")

    @property
    def bare_container_id(self) -> str | None:
        """``containerd://abc…`` -> ``abc…``."""
        return self.container_id.split("://", 1)[-1] if self.container_id else None


InPodFault = (
    NetworkDelay
    | NetworkDuplicate
    | NetworkCorrupt
    | NetworkLoss
    | NetworkPartition
    | NetworkBandwidth
    | CpuStress
    | MemoryStress
    | IoStress
    | ContainerKill
    | ClockSkew
    | DnsFault
    | HttpFault
)

_NAMES: dict[type, str] = {
    NetworkDelay: "network-delay",
    NetworkDuplicate: "network-duplicate",
    NetworkCorrupt: "network-corrupt",
    NetworkLoss: "network-loss",
    NetworkPartition: "network-partition",
    NetworkBandwidth: "network-bandwidth",
    CpuStress: "cpu-stress",
    MemoryStress: "memory-stress",
    IoStress: "io-stress",
    ContainerKill: "container-kill",
    ClockSkew: "clock-skew",
    DnsFault: "dns-fault",
    HttpFault: "http-fault",
}


def fault_name(fault: InPodFault) -> str:
    """The fault's type as the CRD spells it, e.g. ``network-delay``."""
    return _NAMES[type(fault)]


def fault_id_for(injection_id: str) -> str:
    """A short id for an injection, usable in nftables table names and tc handles."""
    return hashlib.sha256(injection_id.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class FaultCommands:
    """What the agent runs: ``apply`` in order, then ``hold`` (or a sleep) for the duration, then ``revert``.

    ``hold_first``: the hold process is a server that the apply commands send traffic to (dns-fault's resolver),
    so it starts before them, and the last apply command checks that the traffic reaches it. ``ready_file``
    (http-fault's proxy): such a server creates it once it listens, and the agent waits for it before applying.
    """

    fault: str
    apply: list[list[str]]
    revert: list[list[str]]
    hold: list[str] | None = None
    hold_first: bool = False
    ready_file: str | None = None

    @property
    def one_shot(self) -> bool:
        """Nothing to hold or revert (container-kill)."""
        return self.hold is None and not self.revert


def _check_id(fault_id: str) -> None:
    if not _FAULT_ID.match(fault_id):
        raise ValueError(f'fault id "{fault_id}" must be 1-40 letters, digits or underscores')


def tc_handle(fault_id: str) -> str:
    """The major number of the fault's root qdisc, ``"1a2b:"``: stable per id, clear of the kernel's 8000+."""
    _check_id(fault_id)
    major = 0x1000 + int(hashlib.sha256(fault_id.encode()).hexdigest()[:8], 16) % 0x7000
    return f"{major:x}:"


def nft_table(fault_id: str) -> str:
    _check_id(fault_id)
    return f"coordinator_{fault_id}"


def _pct(value: float) -> str:
    return f"{value:g}%"


def _netem_args(fault: NetworkDelay | NetworkDuplicate | NetworkCorrupt | NetworkLoss) -> list[str]:
    if isinstance(fault, NetworkDelay):
        args = ["delay", f"{fault.latency_ms}ms"]
        if fault.jitter_ms:
            args.append(f"{fault.jitter_ms}ms")
            if fault.correlation_percent:
                args.append(_pct(fault.correlation_percent))
        return ["netem", *args]
    keyword = {NetworkDuplicate: "duplicate", NetworkCorrupt: "corrupt", NetworkLoss: "loss"}[type(fault)]
    args = [keyword, _pct(fault.percent)]
    if fault.correlation_percent:
        args.append(_pct(fault.correlation_percent))
    return ["netem", *args]


def _tbf_args(fault: NetworkBandwidth) -> list[str]:
    args = ["tbf", "rate", fault.rate, "burst", str(fault.burst)]
    if fault.limit_bytes is not None:
        return [*args, "limit", str(fault.limit_bytes)]
    return [*args, "latency", f"{fault.latency_ms}ms"]


def _u32_filters(interface: str, handle: str, scope: TrafficScope) -> list[list[str]]:
    """One filter per (network, port) pair sending matched packets to class ``handle``1.

    u32 reads the port at a fixed offset: right for IPv4 without options and IPv6 without extension headers,
    which is what pods send.
    """
    out: list[list[str]] = []
    for prio, (protocol, version, match) in enumerate((("ip", 4, "ip"), ("ipv6", 6, "ip6")), start=1):
        networks: list[str | None] = list(scope.networks(version))
        if not networks:
            if scope.cidrs:
                continue  # only CIDRs of the other family: nothing of this family matches
            networks = [None]
        ports: list[int | None] = list(scope.ports) or [None]
        for network in networks:
            for port in ports:
                matches: list[str] = []
                if network is not None:
                    matches += ["match", match, "dst", network]
                if port is not None:
                    matches += ["match", match, "dport", str(port), "0xffff"]
                where = ["dev", interface, "parent", handle, "protocol", protocol, "prio", str(prio)]
                out.append(["tc", "filter", "add", *where, "u32", *matches, "flowid", f"{handle}1"])
    return out


def _tc_apply(qdisc: list[str], scope: TrafficScope, handle: str) -> list[list[str]]:
    dev = ["dev", scope.interface]
    if not scope.filtered:
        return [["tc", "qdisc", "add", *dev, "root", "handle", handle, *qdisc]]
    return [
        ["tc", "qdisc", "add", *dev, "root", "handle", handle, "htb", "default", "0", "direct_qlen", _DIRECT_QLEN],
        ["tc", "class", "add", *dev, "parent", handle, "classid", f"{handle}1", "htb", *_UNSHAPED_CLASS],
        ["tc", "qdisc", "add", *dev, "parent", f"{handle}1", *qdisc],
        *_u32_filters(scope.interface, handle, scope),
    ]


def _nft_rules(table: str, scope: TrafficScope, verdict: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    directions = ("egress", "ingress") if scope.direction == "both" else (scope.direction,)
    for direction in directions:
        chain, ifname, addr, port = (
            ("output", "oifname", "daddr", "dport") if direction == "egress" else ("input", "iifname", "saddr", "sport")
        )
        hook = ["{", "type", "filter", "hook", chain, "priority", "0", ";", "policy", "accept", ";", "}"]
        out.append(["nft", "add", "chain", "inet", table, chain, *hook])
        families: list[list[str]] = []
        for family, version in (("ip", 4), ("ip6", 6)):
            if networks := scope.networks(version):
                families.append([family, addr, "{", ", ".join(networks), "}"])
        ports = ["meta", "l4proto", "{ tcp, udp }", "th", port, "{", ", ".join(map(str, scope.ports)), "}"]
        for family_match in families or [[]]:
            out.append(
                ["nft", "add", "rule", "inet", table, chain, ifname, f'"{scope.interface}"', *family_match]
                + (ports if scope.ports else [])
                + verdict
            )
    return out


def _loss_verdict(percent: float) -> list[str]:
    # numgen's result is 0..mod-1, and nft refuses "< 100" against "mod 100" as out of range: 100 % is a plain drop.
    if percent >= 100:
        return ["counter", "drop"]
    if percent == int(percent):
        return ["numgen", "random", "mod", "100", "<", str(int(percent)), "counter", "drop"]
    return ["numgen", "random", "mod", "10000", "<", str(round(percent * 100)), "counter", "drop"]


def _uses_nftables(fault: InPodFault) -> bool:
    return isinstance(fault, NetworkPartition | HttpFault) or (
        isinstance(fault, NetworkLoss) and fault.mechanism == "nftables"
    )


def apply_commands(fault: InPodFault, fault_id: str, duration_seconds: int | None = None) -> list[list[str]]:
    """The argv lists that put ``fault`` in place, in order (none for the stress faults: they are a process).

    ``duration_seconds``: clock-skew's patch expires by itself a little after the hold (its dead man's switch).
    """
    if isinstance(fault, ClockSkew):
        if duration_seconds is None:
            raise ValueError("clock-skew: the apply commands need the duration (the patch's own deadline)")
        return clock_skew.apply_commands(fault, fault_id, duration_seconds)
    if isinstance(fault, NetworkLoss | NetworkPartition) and _uses_nftables(fault):
        table = nft_table(fault_id)
        verdict = _loss_verdict(fault.percent) if isinstance(fault, NetworkLoss) else ["counter", "drop"]
        return [["nft", "add", "table", "inet", table], *_nft_rules(table, fault.scope, verdict)]
    if isinstance(fault, NetworkDelay | NetworkDuplicate | NetworkCorrupt | NetworkLoss):
        return _tc_apply(_netem_args(fault), fault.scope, tc_handle(fault_id))
    if isinstance(fault, NetworkBandwidth):
        return _tc_apply(_tbf_args(fault), fault.scope, tc_handle(fault_id))
    if isinstance(fault, ContainerKill):
        return [["/bin/sh", "-c", container_kill_script(fault)]]
    if isinstance(fault, DnsFault):
        return dns.apply_commands(fault, nft_table(fault_id), fault_id)
    if isinstance(fault, HttpFault):
        return http.apply_commands(fault, fault_id, nft_table(fault_id))
    return []


def revert_commands(fault: InPodFault, fault_id: str) -> list[list[str]]:
    """The argv lists that remove everything ``apply_commands`` made (one command: the whole tree or table)."""
    if _uses_nftables(fault):
        return [["nft", "delete", "table", "inet", nft_table(fault_id)]]
    if isinstance(fault, DnsFault):
        return dns.revert_commands(nft_table(fault_id))
    if isinstance(fault, NetworkDelay | NetworkDuplicate | NetworkCorrupt | NetworkLoss | NetworkBandwidth):
        return [["tc", "qdisc", "del", "dev", fault.scope.interface, "root", "handle", tc_handle(fault_id)]]
    if isinstance(fault, ClockSkew):
        return clock_skew.revert_commands(fault, fault_id)
    return []


def hold_command(fault: InPodFault, duration_seconds: int) -> list[str] | None:
    """The process that is the fault (stress-ng), ending by itself after ``duration_seconds``; else None."""
    if isinstance(fault, ClockSkew):
        return clock_skew.hold_command(duration_seconds)
    timeout = ["--timeout", f"{duration_seconds}s"]
    if isinstance(fault, CpuStress):
        return ["stress-ng", "--cpu", str(fault.workers), "--cpu-load", str(fault.load_percent), *timeout]
    if isinstance(fault, MemoryStress):
        return ["stress-ng", "--vm", str(fault.workers), "--vm-bytes", fault.size, "--vm-keep", *timeout]
    if isinstance(fault, IoStress):
        return [
            "stress-ng",
            "--hdd",
            str(fault.workers),
            "--hdd-bytes",
            fault.size,
            "--temp-path",
            fault.path,
            *timeout,
        ]
    return None


def build_commands(fault: InPodFault, fault_id: str, duration_seconds: int) -> FaultCommands:
    """Everything the agent runs for ``fault``; ``fault_id`` names its nftables table and tc handle."""
    _check_id(fault_id)
    _positive(fault_name(fault), "duration_seconds", duration_seconds, 7 * 24 * 3600)
    return FaultCommands(
        fault=fault_name(fault),
        apply=apply_commands(fault, fault_id, duration_seconds),
        revert=revert_commands(fault, fault_id),
        hold=dns.hold_command(fault, fault_id, duration_seconds)
        if isinstance(fault, DnsFault)
        else http.hold_command(fault, fault_id, duration_seconds)
        if isinstance(fault, HttpFault)
        else hold_command(fault, duration_seconds),
        hold_first=isinstance(fault, DnsFault | HttpFault),
        ready_file=http.ready_file(fault_id) if isinstance(fault, HttpFault) else None,
    )


# Run by the agent as ``/bin/sh -c``; the variables are set in front of it. Exit 3: the signal cannot reach
# the process. When the signal ends a namespace's PID 1, the kernel kills every process left in that namespace,
# this script included: then the ephemeral container ends with 137 and the target container restarts.
_CONTAINER_KILL = r"""
say() { printf 'coordinator-agent: container-kill: %s\n' "$*" >&2; }
fail() {
  say "$*"
  if [ -w /dev/termination-log ]; then printf 'container-kill failed: %s\n' "$*" > /dev/termination-log; fi
  exit 3
}
status_field() {
  while read -r key value; do
    if [ "$key" = "$2:" ]; then printf '%s\n' "$value"; return 0; fi
  done < "$1"
  return 1
}
alive() {
  state=$(status_field "/proc/$1/status" State 2>/dev/null) || return 1
  case $state in Z*|X*) return 1 ;; esac
}
pid=1
case $(cat /proc/1/comm 2>/dev/null) in
  systemd|init) fail "PID 1 is the node's $(cat /proc/1/comm) (a hostPID pod?): refusing to signal it" ;;
esac
if [ "$(cat /proc/1/comm 2>/dev/null)" = pause ]; then
  # shareProcessNamespace: PID 1 is the sandbox's pause process; signalling it would end the whole pod.
  if [ -z "$container_id" ]; then
    fail "the pod shares one PID namespace (PID 1 is pause) and no container ID was given for $container"
  fi
  pid=
  for dir in /proc/[0-9]*; do
    [ "${dir#/proc/}" = "$$" ] && continue
    case $(cat "$dir/cgroup" 2>/dev/null) in *"$container_id"*) ;; *) continue ;; esac
    # The container's main process was started from outside the namespace: its parent is 0 here.
    [ "$(status_field "$dir/status" PPid 2>/dev/null)" = 0 ] || continue
    pid=${dir#/proc/}
    break
  done
  if [ -z "$pid" ]; then
    fail "no main process of container $container ($container_id) in this PID namespace"
  fi
else
  # PID 1 of a PID namespace gets a signal from inside the namespace only if it handles it.
  if [ "$signum" -eq 9 ]; then
    fail "SIGKILL cannot reach $container: its main process is PID 1 of its PID namespace, and the kernel never delivers SIGKILL to a namespace's PID 1 from inside it; use a signal the process handles (SIGTERM for most servers) or shareProcessNamespace: true"
  fi
  caught=$(status_field /proc/1/status SigCgt) || caught=0000000000000000
  low=${caught#"${caught%????????}"}
  if [ $(( (0x$low >> (signum - 1)) & 1 )) -eq 0 ]; then
    fail "SIG$signal cannot reach $container: its main process is PID 1 of its PID namespace and has no handler for SIG$signal (SigCgt $caught), so the kernel drops it"
  fi
fi
say "sending SIG$signal to $container (pid $pid: $(cat /proc/$pid/comm 2>/dev/null))"
if ! kill -s "$signal" "$pid"; then
  fail "kill -s $signal $pid failed"
fi
waited=0
while alive "$pid" && [ "$waited" -lt "$grace" ]; do
  sleep 1
  waited=$((waited + 1))
done
if alive "$pid"; then
  fail "$container (pid $pid) is still running ${grace}s after SIG$signal"
fi
say "$container (pid $pid) ended after SIG$signal"
"""


def container_kill_script(fault: ContainerKill) -> str:
    """The ``sh`` snippet that finds the container's main process and signals it (see ``ContainerKill``)."""
    variables = (
        f"signal={fault.signal_name} signum={SIGNALS[fault.signal_name]} container={fault.container} "
        f"container_id={fault.bare_container_id or ''} grace={fault.grace_seconds}"
    )
    return variables + _CONTAINER_KILL
