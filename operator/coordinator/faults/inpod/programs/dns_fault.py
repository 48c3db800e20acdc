"""The dns-fault resolver: run by the in-pod agent as ``python3 /opt/coordinator-agent/dns_fault.py``.

The agent's nftables rules redirect the pod's outbound DNS (UDP and TCP port 53) to this resolver, listening on
127.0.0.1 and ::1. Queries for names that match the fault's patterns get the fault's answer; every other query
is forwarded, byte for byte, to the pod's real nameservers (``/etc/resolv.conf``: kubelet bind-mounts the pod
sandbox's file into every container, the agent's ephemeral container included), and their reply is returned
unchanged. The resolver's own upstream sockets carry a firewall mark (``SO_MARK``, which needs NET_ADMIN) that
the redirect rule lets pass, so forwarding never loops back here.

Two commands:

``serve``  the resolver, the agent's hold process: it ends by itself after ``--duration`` seconds (its own dead
           man's switch, like stress-ng's ``--timeout``) or on SIGTERM/SIGINT, printing what it answered.
``alone``  exit 0 when no other dns-fault redirects this pod's DNS (no nftables chain named ``dns_redirect``):
           of two nat chains the kernel runs the newer first, so a second dns-fault would silently take the
           pod's DNS from the first one.
``check``  asks every nameserver of resolv.conf, over UDP and TCP on port 53, for this fault's probe name; exit 0
           only when this fault's resolver answered each (the redirect is in place and the resolver listens).
The last line ``alone`` and ``check`` print on failure is the reason.

Patterns (case-insensitive, a trailing dot ignored): an exact name (``api.example.com``); a leading ``*.`` label
matching one or more labels (``*.example.com``: ``a.example.com``, ``a.b.example.com``, not ``example.com``);
``*`` inside a label matching any characters within that label (``db-*.example.com``); ``*`` alone matching
every name.

Only the standard library and Debian's ``python3-dnslib`` (imported where packets are read or built, so the
operator can import the pattern rules without it).
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import re
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

# One label of a pattern: DNS name characters and the wildcard. The CRD carries the same expression
# (coordinator.api.dns_fault.DNS_PATTERN); a unit test keeps them equal.
PATTERN_SYNTAX = r"^[A-Za-z0-9_*-]{1,63}(\.[A-Za-z0-9_*-]{1,63})*\.?$"
_PATTERN = re.compile(PATTERN_SYNTAX)
MAX_NAME_LENGTH = 253
RCODES = {"NXDOMAIN": 3, "SERVFAIL": 2}
# Answers of the random action come from the documentation ranges (RFC 5737, RFC 3849): addresses that are never
# assigned to a host, so a client that connects to one reaches nothing, as with a stale or poisoned record.
RANDOM_V4 = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
RANDOM_V6 = "2001:db8::/32"
ANSWER_TTL = 1  # seconds: a cache in the pod keeps a fault's answer no longer than this after the fault ends
UPSTREAM_TIMEOUT = 2.0  # per nameserver; a pod's resolver library waits 5 s per try (resolv.conf's default)
SO_MARK = getattr(socket, "SO_MARK", 36)
REDIRECT_CHAIN = "dns_redirect"  # the nat chain of every dns-fault's table
DNS_PORT = 53
LOG_NAMES = 20  # distinct matched names logged one by one; the rest are counted


def say(message: str) -> None:
    print(f"coordinator-agent: dns-fault: {message}", file=sys.stderr, flush=True)


def check_pattern(pattern: str) -> str:
    """The pattern, lower-cased without its trailing dot; ValueError naming it when it is not one."""
    name = pattern.lower().rstrip(".")
    if not _PATTERN.match(pattern) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f'pattern "{pattern}" is not a DNS name with optional * wildcards (such as api.example.com, '
            "*.example.com or db-*.example.com)"
        )
    return name


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression a query name (lower case, no trailing dot) must match in full."""
    labels = check_pattern(pattern).split(".")
    parts: list[str] = []
    for index, label in enumerate(labels):
        if label == "*":
            parts.append(r"(?:[^.]+\.)*[^.]+" if index == 0 else r"[^.]+")
        else:
            parts.append("[^.]*".join(re.escape(piece) for piece in label.split("*")))
    return re.compile(r"\.".join(parts))


@dataclass(frozen=True)
class NameMatcher:
    patterns: tuple[str, ...]
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.patterns:
            raise ValueError("at least one pattern is needed")
        object.__setattr__(self, "_compiled", tuple(compile_pattern(p) for p in self.patterns))

    def matches(self, name: str) -> bool:
        """Whether a query name (any case, with or without its trailing dot) matches one of the patterns."""
        bare = name.lower().rstrip(".")
        return any(p.fullmatch(bare) for p in self._compiled)


def read_nameservers(path: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf, in order (at most 3, as glibc reads); 127.0.0.1 when none,
    as glibc assumes."""
    found: list[str] = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                words = re.split(r"[#;]", line, maxsplit=1)[0].split()
                if len(words) >= 2 and words[0] == "nameserver":
                    try:
                        ipaddress.ip_address(words[1].split("%", 1)[0])
                    except ValueError:
                        continue
                    found.append(words[1])
    except FileNotFoundError:
        pass
    return found[:3] or ["127.0.0.1"]


def probe_name(fault_id: str) -> str:
    """The name ``check`` asks for: answered only by the resolver of this fault (``.invalid`` never resolves)."""
    return f"coordinator-check-{fault_id}.dns-fault.invalid"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _marked(sock: socket.socket, mark: int) -> socket.socket:
    if mark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    return sock


def _read_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


@dataclass
class Upstream:
    """The pod's real nameservers, asked in order like a resolver library would; sockets marked with ``mark``."""

    servers: Sequence[tuple[str, int]]
    mark: int = 0
    timeout: float = UPSTREAM_TIMEOUT

    def ask_udp(self, query: bytes) -> bytes | None:
        for host, port in self.servers:
            try:
                with _marked(socket.socket(_family(host), socket.SOCK_DGRAM), self.mark) as sock:
                    sock.settimeout(self.timeout)
                    sock.connect((host, port))
                    sock.send(query)
                    while True:
                        reply = sock.recv(65535)
                        if reply[:2] == query[:2]:  # the same message ID
                            return reply
            except OSError:
                continue
        return None

    def ask_tcp(self, query: bytes) -> bytes | None:
        for host, port in self.servers:
            try:
                with _marked(socket.socket(_family(host), socket.SOCK_STREAM), self.mark) as sock:
                    sock.settimeout(self.timeout)
                    sock.connect((host, port))
                    sock.sendall(struct.pack("!H", len(query)) + query)
                    (size,) = struct.unpack("!H", _read_exact(sock, 2))
                    return _read_exact(sock, size)
            except (OSError, ConnectionError):
                continue
        return None


@dataclass(frozen=True)
class Action:
    """What a matched query gets: ``error`` (an rcode), ``random`` (an address) or ``delay`` (then forwarded)."""

    kind: str
    rcode: str = "NXDOMAIN"
    delay_seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("error", "random", "delay"):
            raise ValueError(f'action must be error, random or delay, got "{self.kind}"')
        if self.kind == "error" and self.rcode not in RCODES:
            raise ValueError(f'rcode must be NXDOMAIN or SERVFAIL, got "{self.rcode}"')
        if self.kind == "delay" and not 0 < self.delay_seconds <= 60:
            raise ValueError(f"delay must be above 0 and at most 60 s, got {self.delay_seconds:g} s")

    def describe(self) -> str:
        if self.kind == "error":
            return f"error {self.rcode}"
        if self.kind == "delay":
            return f"delay {self.delay_seconds:g}s"
        return "random addresses"


def random_address(version: int, rng: random.Random) -> str:
    """An address from the documentation ranges (never a real host's)."""
    network = ipaddress.ip_network(rng.choice(RANDOM_V4) if version == 4 else RANDOM_V6)
    offset = rng.randrange(1, network.num_addresses - 1)
    return str(network.network_address + offset)


@dataclass
class Stats:
    matched: int = 0
    forwarded: int = 0
    unanswered: int = 0
    names: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Resolver:
    """Answers one DNS message (wire format in, wire format out); None: no reply (the client's timeout follows)."""

    def __init__(
        self,
        matcher: NameMatcher,
        action: Action,
        upstream: Upstream,
        fault_id: str,
        stopping: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.matcher = matcher
        self.action = action
        self.upstream = upstream
        self.probe = probe_name(fault_id)
        self.fault_id = fault_id
        self.stopping = stopping or threading.Event()
        self.rng = rng or random.Random()  # noqa: S311 - a fault's answers, not secrets
        self.stats = Stats()

    def answer(self, data: bytes, forward: Callable[[bytes], bytes | None]) -> bytes | None:
        from dnslib import AAAA, QTYPE, RR, TXT, A, DNSError, DNSRecord

        try:
            request = DNSRecord.parse(data)
        except (DNSError, struct.error, IndexError, ValueError):
            return self._forward(data, forward)  # not ours to judge: pass it on as it came
        if request.header.qr or not request.questions:
            return self._forward(data, forward)
        question = request.q
        name = str(question.qname).lower().rstrip(".")
        if name == self.probe:
            reply = request.reply()
            reply.add_answer(RR(question.qname, QTYPE.TXT, rdata=TXT(self.fault_id), ttl=0))
            return bytes(reply.pack())
        if not self.matcher.matches(name):
            return self._forward(data, forward)
        self._count_match(name, QTYPE.get(question.qtype, str(question.qtype)))
        if self.action.kind == "delay":
            if self.stopping.wait(self.action.delay_seconds):
                return None
            return self._forward(data, forward)
        reply = request.reply()
        reply.header.aa = 0
        if self.action.kind == "error":
            reply.header.rcode = RCODES[self.action.rcode]
        elif question.qtype == QTYPE.A:
            reply.add_answer(RR(question.qname, QTYPE.A, rdata=A(random_address(4, self.rng)), ttl=ANSWER_TTL))
        elif question.qtype == QTYPE.AAAA:
            address = random_address(6, self.rng)
            reply.add_answer(RR(question.qname, QTYPE.AAAA, rdata=AAAA(address), ttl=ANSWER_TTL))
        # Any other type of a matched name: NOERROR without records (the name exists, with no such data).
        return bytes(reply.pack())

    def _forward(self, data: bytes, forward: Callable[[bytes], bytes | None]) -> bytes | None:
        reply = forward(data)
        with self.stats.lock:
            if reply is None:
                self.stats.unanswered += 1
            else:
                self.stats.forwarded += 1
        return reply

    def _count_match(self, name: str, qtype: str) -> None:
        with self.stats.lock:
            self.stats.matched += 1
            first = name not in self.stats.names and len(self.stats.names) < LOG_NAMES
            self.stats.names.add(name)
        if first:
            say(f"matched {name} ({qtype}): {self.action.describe()}")

    def summary(self) -> str:
        with self.stats.lock:
            s = self.stats
            return (
                f"{s.matched} matched queries answered with {self.action.describe()} "
                f"({len(s.names)} names), {s.forwarded} forwarded, {s.unanswered} without an upstream answer"
            )


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _UdpServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.resolver.answer(data, self.server.resolver.upstream.ask_udp)
        if reply is not None:
            sock.sendto(reply, self.client_address)


class _TcpHandler(socketserver.BaseRequestHandler):
    server: _TcpServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(10)
        try:
            while not self.server.resolver.stopping.is_set():
                (size,) = struct.unpack("!H", _read_exact(sock, 2))
                reply = self.server.resolver.answer(_read_exact(sock, size), self.server.resolver.upstream.ask_tcp)
                if reply is None:
                    return
                sock.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, ConnectionError, struct.error):
            return


class _UdpServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], resolver: Resolver, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.resolver = resolver
        super().__init__(address, _UdpHandler)


class _TcpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], resolver: Resolver, family: socket.AddressFamily) -> None:
        self.address_family = family
        self.resolver = resolver
        super().__init__(address, _TcpHandler)


def listen(resolver: Resolver, port: int, hosts: Sequence[str] = ("127.0.0.1", "::1")) -> list[socketserver.BaseServer]:
    """UDP and TCP servers on ``port`` of each host that exists (``::1`` is skipped where IPv6 is off)."""
    servers: list[socketserver.BaseServer] = []
    for host in hosts:
        family = _family(host)
        try:
            servers.append(_UdpServer((host, port), resolver, family))
            servers.append(_TcpServer((host, port), resolver, family))
        except OSError as exc:
            if host == hosts[0]:
                for server in servers:
                    server.server_close()
                raise OSError(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from exc
            say(f"not listening on {host} ({exc.strerror or exc})")
    return servers


def serve(args: argparse.Namespace) -> int:
    try:
        matcher = NameMatcher(tuple(args.pattern))
        action = Action(args.action, args.rcode, args.delay_ms / 1000)
    except ValueError as exc:
        say(str(exc))
        return 2
    nameservers = read_nameservers(args.resolv_conf)
    upstream = Upstream([(host, args.upstream_port) for host in nameservers], args.mark)
    if args.mark:
        try:
            _marked(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), args.mark).close()
        except OSError as exc:
            say(f"cannot mark the resolver's upstream queries (SO_MARK needs NET_ADMIN): {exc.strerror or exc}")
            return 2
    stopping = threading.Event()
    resolver = Resolver(matcher, action, upstream, args.id, stopping)
    try:
        servers = listen(resolver, args.port, args.listen)
    except OSError as exc:
        say(str(exc))
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    bound = dict.fromkeys(str(s.socket.getsockname()[0]) for s in servers if isinstance(s, socketserver.TCPServer))
    hosts = ", ".join(f"[{h}]" if ":" in h else h for h in bound)
    say(
        f"resolver listening on {hosts} port {args.port} (udp, tcp) for {args.duration}s; "
        f"{' '.join(args.pattern)}: {action.describe()}; other names forwarded to "
        f"{', '.join(nameservers)} port {args.upstream_port} (from {args.resolv_conf})"
    )
    ended = stopping.wait(args.duration)
    for server in servers:
        server.shutdown()
        server.server_close()
    say(f"{'stopped' if ended else 'duration over'}: {resolver.summary()}")
    return 0


def _ask(server: str, port: int, query: bytes, transport: str, timeout: float) -> bytes:
    with socket.socket(_family(server), socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((server, port))
        if transport == "udp":
            sock.send(query)
            return sock.recv(65535)
        sock.sendall(struct.pack("!H", len(query)) + query)
        (size,) = struct.unpack("!H", _read_exact(sock, 2))
        return _read_exact(sock, size)


def check(args: argparse.Namespace) -> int:
    from dnslib import QTYPE, RCODE, DNSRecord

    name = probe_name(args.id)
    nameservers = read_nameservers(args.resolv_conf)
    deadline = time.monotonic() + args.timeout
    for server in nameservers:
        for transport in ("udp", "tcp"):
            last = "no answer"
            while True:
                query = DNSRecord.question(name, "TXT")
                try:
                    reply = DNSRecord.parse(_ask(server, args.port, query.pack(), transport, 1.0))
                    texts = [str(rr.rdata).strip('"') for rr in reply.rr if rr.rtype == QTYPE.TXT]
                    if args.id in texts:
                        break
                    last = f"answered {RCODE.get(reply.header.rcode)} by another server"
                except (OSError, ConnectionError, struct.error, ValueError) as exc:
                    last = f"no answer ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})"
                if time.monotonic() >= deadline:
                    print(
                        f"queries to {server} port {args.port} over {transport} do not reach this fault's resolver "
                        f"({last}): the redirect is not in place, or another dns-fault's resolver holds this pod",
                        file=sys.stderr,
                    )
                    return 1
                time.sleep(0.1)
    say(f"queries to {', '.join(nameservers)} port {args.port} (udp, tcp) reach the resolver")
    return 0


def redirect_tables(listing: str) -> list[str]:
    """The tables of an ``nft list chains`` listing that hold a dns-fault redirect chain."""
    tables: list[str] = []
    table = ""
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["table"] and len(words) >= 3:
            table = f"{words[1]} {words[2]}"
        elif words[:2] == ["chain", REDIRECT_CHAIN]:
            tables.append(table)
    return tables


def alone(args: argparse.Namespace) -> int:
    listing = subprocess.run(["nft", "list", "chains"], capture_output=True, text=True, check=False)
    if listing.returncode != 0:
        print(f"nft list chains failed: {listing.stderr.strip()}", file=sys.stderr)
        return 1
    others = redirect_tables(listing.stdout)
    if others:
        print(
            f"another dns-fault already redirects this pod's DNS (table {', '.join(others)}): "
            "one dns-fault per pod at a time",
            file=sys.stderr,
        )
        return 1
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dns_fault.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    commands = top.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--id", required=True, help="the fault's id (its probe name)")
    common.add_argument("--resolv-conf", default="/etc/resolv.conf")
    run = commands.add_parser("serve", parents=[common])
    run.add_argument("--port", type=int, required=True, help="where the redirect sends the pod's DNS")
    run.add_argument("--listen", nargs="+", default=["127.0.0.1", "::1"])
    run.add_argument("--upstream-port", type=int, default=DNS_PORT)
    run.add_argument("--mark", type=lambda v: int(v, 0), default=0, help="SO_MARK of the upstream sockets")
    run.add_argument("--duration", type=float, required=True, help="seconds; the resolver ends by itself then")
    run.add_argument("--pattern", action="append", required=True)
    run.add_argument("--action", choices=("error", "random", "delay"), required=True)
    run.add_argument("--rcode", choices=tuple(RCODES), default="NXDOMAIN")
    run.add_argument("--delay-ms", type=int, default=0)
    commands.add_parser("alone", parents=[common])
    probe = commands.add_parser("check", parents=[common])
    probe.add_argument("--port", type=int, default=DNS_PORT)
    probe.add_argument("--timeout", type=float, default=10.0)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = {"serve": serve, "alone": alone, "check": check}[args.command]
    return command(args)


if __name__ == "__main__":
    sys.exit(main())
