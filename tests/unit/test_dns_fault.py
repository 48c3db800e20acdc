"""dns-fault: the patterns, the options, the agent's command lines, and the resolver's answers.

The resolver (faults/inpod/programs/dns_fault.py) is run here on 127.0.0.1 in front of a tiny upstream on
loopback (tests/support/dns_server.py), with real UDP and TCP sockets; only the nftables redirect is left to the
network-namespace prototype and the real tier.
"""

from __future__ import annotations

import ipaddress
import random
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from pydantic import ValidationError

from coordinator.api.dns_fault import DNS_PATTERN, DnsFaultOptions
from coordinator.api.models import Fault
from coordinator.faults import DRIVERS
from coordinator.faults.ephemeral import InPodFault
from coordinator.faults.inpod import agent_script, build_commands, revert_script
from coordinator.faults.inpod.dns import BYPASS_MARK, PROGRAM, DnsFault, resolver_port
from coordinator.faults.inpod.programs import dns_fault as program
from support.dns_server import Server

SH = shutil.which("dash") or shutil.which("sh") or "/bin/sh"
FID = "a1b2c3d4e5"
RECORDS = {"web.test": "10.1.2.3", "api.example.com": "10.1.2.4", "example.com": "10.1.2.5"}


# --- patterns ----------------------------------------------------------------------------------------------------


def test_the_crd_and_the_resolver_read_one_pattern_syntax() -> None:
    assert DNS_PATTERN == program.PATTERN_SYNTAX


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.COM.", True),
        ("API.example.com.", "api.example.com", True),
        ("api.example.com", "xapi.example.com", False),
        ("api.example.com", "api.example.com.evil", False),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "a.b.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "notexample.com", False),
        ("db-*.example.com", "db-1.example.com", True),
        ("db-*.example.com", "db-.example.com", True),
        ("db-*.example.com", "db-1.x.example.com", False),
        ("a.*.example.com", "a.b.example.com", True),
        ("a.*.example.com", "a.b.c.example.com", False),
        ("*", "anything.at.all", True),
        ("*", "localhost", True),
        ("web_1.test", "web_1.test", True),
    ],
)
def test_pattern_matching(pattern: str, name: str, matches: bool) -> None:
    assert program.NameMatcher((pattern,)).matches(name) is matches
    assert DnsFault((pattern,), "error").matches(name) is matches


@pytest.mark.parametrize("pattern", ["", ".", "a..b", "http://x/", "a b.com", "ä.example.com", "x" * 64 + ".com"])
def test_bad_patterns_are_refused_by_name(pattern: str) -> None:
    with pytest.raises(ValueError, match=f'dns-fault: pattern "{pattern}" is not a DNS name'):
        DnsFault((pattern,), "error")
    with pytest.raises(ValidationError):
        DnsFaultOptions.model_validate({"patterns": [pattern], "error": {}})


def test_a_pattern_longer_than_a_name_is_refused() -> None:
    name = ".".join(["a" * 63] * 4)  # 255 characters
    with pytest.raises(ValueError, match="is not a DNS name"):
        program.check_pattern(name)


# --- options -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "actions",
    [{}, {"error": {}, "random": {}}, {"error": {}, "delay": {"duration": "1s"}}],
    ids=["none", "error-and-random", "error-and-delay"],
)
def test_exactly_one_action(actions: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of error, random and delay is required"):
        DnsFaultOptions.model_validate({"patterns": ["a.test"], **actions})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"error": {}}, DnsFault(("*.example.com",), "error", rcode="NXDOMAIN")),
        ({"error": {"rcode": "SERVFAIL"}}, DnsFault(("*.example.com",), "error", rcode="SERVFAIL")),
        ({"random": {}}, DnsFault(("*.example.com",), "random")),
        ({"delay": {"duration": "1.5s"}}, DnsFault(("*.example.com",), "delay", delay_ms=1500)),
        ({"delay": {"duration": "20ms"}}, DnsFault(("*.example.com",), "delay", delay_ms=20)),
    ],
)
def test_options_map_onto_the_agents_fault(options: dict[str, Any], expected: DnsFault) -> None:
    fault = Fault.model_validate({"type": "dns-fault", "dnsFault": {"patterns": ["*.example.com"], **options}})
    driver = DRIVERS["dns-fault"]
    assert isinstance(driver, InPodFault)
    assert driver.agent_fault(fault, {}) == expected


@pytest.mark.parametrize("duration", ["0s", "61s", "2m"])
def test_a_delay_out_of_range_is_refused(duration: str) -> None:
    with pytest.raises(ValidationError, match="between 1ms and 60s"):
        DnsFaultOptions.model_validate({"patterns": ["a.test"], "delay": {"duration": duration}})


def test_the_agent_fault_refuses_what_the_resolver_would() -> None:
    with pytest.raises(ValueError, match='dns-fault: rcode must be NXDOMAIN or SERVFAIL, got "REFUSED"'):
        DnsFault(("a.test",), "error", rcode="REFUSED")
    with pytest.raises(ValueError, match="dns-fault: delay must be above 0"):
        DnsFault(("a.test",), "delay", delay_ms=0)
    with pytest.raises(ValueError, match="at least one pattern"):
        DnsFault((), "random")


# --- the agent's command lines -----------------------------------------------------------------------------------


def test_the_commands_redirect_dns_to_the_resolver_and_check_it() -> None:
    port = resolver_port(FID)
    assert 20000 <= port < 30000
    assert resolver_port(FID) == port != resolver_port("other")
    commands = build_commands(DnsFault(("*.example.com", "db.test"), "error", rcode="SERVFAIL"), FID, 30)
    table = f"coordinator_{FID}"
    assert commands.hold_first
    chain = "dns_redirect"
    assert [shlex.join(argv) for argv in commands.apply] == [
        f"python3 {PROGRAM} alone --id {FID}",
        f"nft add table inet {table}",
        f"nft add chain inet {table} {chain} '{{' type nat hook output priority -100 ';' policy accept ';' '}}'",
        f"nft add rule inet {table} {chain} meta mark 0x636f6f72 return",
        f"nft add rule inet {table} {chain} meta l4proto '{{ tcp, udp }}' th dport 53 counter redirect to :{port}",
        f"python3 {PROGRAM} check --id {FID}",
    ]
    assert commands.revert == [["nft", "delete", "table", "inet", table]]
    assert commands.hold is not None
    assert shlex.join(commands.hold) == (
        f"python3 {PROGRAM} serve --id {FID} --port {port} --mark {hex(BYPASS_MARK)} --duration 30 "
        "--pattern '*.example.com' --pattern db.test --action error --rcode SERVFAIL"
    )
    delay = build_commands(DnsFault(("a.test",), "delay", delay_ms=250), FID, 5).hold
    assert delay is not None
    assert delay[-4:] == ["--action", "delay", "--delay-ms", "250"]


def test_the_program_parses_the_hold_command() -> None:
    hold = build_commands(DnsFault(("*.example.com",), "delay", delay_ms=250), FID, 30).hold
    assert hold is not None
    args = program.parser().parse_args(hold[2:])
    assert (args.command, args.port, args.mark, args.duration) == ("serve", resolver_port(FID), BYPASS_MARK, 30)
    assert (args.pattern, args.action, args.delay_ms) == (["*.example.com"], "delay", 250)


def test_the_agent_starts_the_resolver_before_the_redirect_and_holds_only_once_checked() -> None:
    script = agent_script(DnsFault(("*.example.com",), "error"), 30, fault_id=FID)
    assert subprocess.run([SH, "-n", "-c", script], capture_output=True, text=True).returncode == 0
    (background,) = [line for line in script.splitlines() if line.endswith(" &")]
    assert background.startswith(f"python3 {PROGRAM} serve --id {FID}")
    started = script.index(background)
    trap = script.index("trap 'finish 143' TERM")
    guard = script.index("out=$(python3 /opt/coordinator-agent/dns_fault.py alone")
    redirect = script.index("out=$(nft add table")
    check = script.index("out=$(python3 /opt/coordinator-agent/dns_fault.py check")
    holding = script.index("say 'holding: ")
    waits = script.index('wait "$hold_pid"; rc=$?')
    assert trap < started < guard < redirect < check < holding < waits
    # The check's own last line is the reason the operator reports.
    assert 'why="$(printf \'%s\\n\' "$out" | tail -n 1)"' in script
    assert "kernel lacks nft_redir (nf_nat)" in script
    assert f"nft delete table inet coordinator_{FID}" in revert_script(DnsFault(("a.test",), "error"), fault_id=FID)


# --- the resolver on loopback ------------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[Server]:
    server = Server(RECORDS)
    yield server
    server.close()


def free_port() -> int:
    """A loopback port free for both UDP and TCP (as the resolver needs it)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no loopback port free for both UDP and TCP")


class Running:
    def __init__(self, resolver: program.Resolver, port: int) -> None:
        self.resolver = resolver
        self.port = port
        self.servers = program.listen(resolver, port, ("127.0.0.1",))
        for server in self.servers:
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def ask(self, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 3.0) -> DNSRecord:
        reply = DNSRecord.question(name, qtype).send("127.0.0.1", self.port, tcp=tcp, timeout=timeout)
        return DNSRecord.parse(reply)

    def close(self) -> None:
        self.resolver.stopping.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()


def running(upstream: Server, fault: DnsFault) -> Running:
    matcher = program.NameMatcher(fault.patterns)
    action = program.Action(fault.action, fault.rcode, fault.delay_ms / 1000)
    forward = program.Upstream([("127.0.0.1", upstream.port)], mark=0, timeout=1.0)
    return Running(program.Resolver(matcher, action, forward, FID, rng=random.Random(7)), free_port())


@pytest.fixture
def resolver_for(upstream: Server) -> Iterator[Any]:
    started: list[Running] = []

    def start(fault: DnsFault) -> Running:
        started.append(running(upstream, fault))
        return started[-1]

    yield start
    for item in started:
        item.close()


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("rcode", ["NXDOMAIN", "SERVFAIL"])
def test_error_answers_matched_names_and_forwards_the_others(resolver_for: Any, tcp: bool, rcode: str) -> None:
    resolver = resolver_for(DnsFault(("*.example.com",), "error", rcode=rcode))
    failed = resolver.ask("API.example.com", tcp=tcp)
    assert failed.header.rcode == getattr(RCODE, rcode)
    assert failed.rr == []
    assert str(failed.q.qname) == "API.example.com."
    assert addresses(resolver.ask("web.test", tcp=tcp)) == ["10.1.2.3"]
    assert addresses(resolver.ask("example.com", tcp=tcp)) == ["10.1.2.5"], "*.example.com leaves example.com"
    assert resolver.ask("missing.test", tcp=tcp).header.rcode == RCODE.NXDOMAIN, "the upstream's own answer"
    stats = resolver.resolver.stats
    assert (stats.matched, stats.forwarded, stats.unanswered) == (1, 3, 0)


def test_forwarded_queries_reach_the_upstream_unchanged(resolver_for: Any, upstream: Server) -> None:
    resolver = resolver_for(DnsFault(("*.example.com",), "error"))
    query = DNSRecord.question("web.test", "A")
    query.header.id = 4242
    query.add_ar(EDNS0(udp_len=1232))  # an additional section the resolver must not touch
    reply = DNSRecord.parse(query.send("127.0.0.1", resolver.port, timeout=3))
    assert reply.header.id == 4242
    assert upstream.queries == [("udp", query.pack())]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_random_answers_addresses_that_lead_nowhere(resolver_for: Any, tcp: bool) -> None:
    resolver = resolver_for(DnsFault(("api.example.com",), "random"))
    documentation_v4 = [ipaddress.ip_network(n) for n in program.RANDOM_V4]
    seen = set()
    for _ in range(5):
        (v4,) = addresses(resolver.ask("api.example.com", "A", tcp=tcp))
        assert any(ipaddress.ip_address(v4) in net for net in documentation_v4), v4
        seen.add(v4)
        (v6,) = addresses(resolver.ask("api.example.com", "AAAA", tcp=tcp))
        assert ipaddress.ip_address(v6) in ipaddress.ip_network(program.RANDOM_V6), v6
    assert len(seen) > 1, "random, not fixed"
    mx = resolver.ask("api.example.com", "MX", tcp=tcp)
    assert (mx.header.rcode, mx.rr) == (RCODE.NOERROR, [])
    assert all(rr.ttl == program.ANSWER_TTL for rr in resolver.ask("api.example.com").rr)
    assert addresses(resolver.ask("web.test", tcp=tcp)) == ["10.1.2.3"]


def test_delay_holds_matched_queries_then_forwards_them(resolver_for: Any) -> None:
    resolver = resolver_for(DnsFault(("web.test",), "delay", delay_ms=400))
    started = time.monotonic()
    assert addresses(resolver.ask("web.test")) == ["10.1.2.3"]
    delayed = time.monotonic() - started
    started = time.monotonic()
    assert addresses(resolver.ask("example.com")) == ["10.1.2.5"]
    direct = time.monotonic() - started
    assert delayed >= 0.4
    assert direct < 0.3


def test_no_upstream_answer_means_no_answer(upstream: Server) -> None:
    resolver = running(upstream, DnsFault(("a.test",), "error"))
    upstream.close()
    try:
        with pytest.raises(socket.timeout):
            resolver.ask("web.test", timeout=1.5)
        assert resolver.resolver.stats.unanswered == 1
        assert resolver.ask("a.test").header.rcode == RCODE.NXDOMAIN, "matched names need no upstream"
    finally:
        resolver.close()


def test_the_probe_name_is_answered_only_by_this_faults_resolver(resolver_for: Any, upstream: Server) -> None:
    resolver = resolver_for(DnsFault(("*",), "error"))
    reply = resolver.ask(program.probe_name(FID), "TXT")
    assert [str(rr.rdata).strip('"') for rr in reply.rr if rr.rtype == QTYPE.TXT] == [FID]
    assert resolver.ask(program.probe_name("another")).header.rcode == RCODE.NXDOMAIN, "* matches it: the fault"


def test_check_passes_against_the_resolver_and_names_what_answered_otherwise(
    resolver_for: Any, upstream: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resolver = resolver_for(DnsFault(("a.test",), "error"))
    conf = tmp_path / "resolv.conf"
    conf.write_text("search default.svc.cluster.local\nnameserver 127.0.0.1 # the pod's\noptions ndots:5\n")
    base = ["check", "--id", FID, "--resolv-conf", str(conf), "--timeout", "2"]
    assert program.main([*base, "--port", str(resolver.port)]) == 0
    assert program.main([*base, "--port", str(upstream.port)]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"queries to 127.0.0.1 port {upstream.port} over udp do not reach this fault's resolver")
    assert "(answered NXDOMAIN by another server)" in last


def test_a_second_dns_fault_is_found_by_its_redirect_chain() -> None:
    listing = """table inet coordinator_aaaa {
	chain output {
		type filter hook output priority filter; policy accept;
	}
}
table ip nat {
	chain dns_redirect_not {
	}
}
table inet coordinator_bbbb {
	chain dns_redirect {
		type nat hook output priority dstnat; policy accept;
	}
}
"""
    assert program.redirect_tables(listing) == ["inet coordinator_bbbb"]
    assert program.redirect_tables("table inet coordinator_aaaa {\n\tchain output {\n\t}\n}\n") == []


def test_nameservers_are_read_like_glibc_reads_them(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "; comment\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver not-an-address\n"
        "nameserver 10.0.0.2 # trailing\nnameserver 10.0.0.3\nsearch a b\n"
    )
    assert program.read_nameservers(str(conf)) == ["10.96.0.10", "fe80::1%eth0", "10.0.0.2"]
    conf.write_text("search only\n")
    assert program.read_nameservers(str(conf)) == ["127.0.0.1"]
    assert program.read_nameservers(str(tmp_path / "absent")) == ["127.0.0.1"]


# --- the resolver as the agent runs it -----------------------------------------------------------------------------


def serve(upstream: Server, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    command = [sys.executable, str(Path(program.__file__)), "serve", "--id", FID, "--port", str(free_port())]
    command += ["--listen", "127.0.0.1", "--resolv-conf", str(conf), "--upstream-port", str(upstream.port)]
    return subprocess.Popen([*command, *extra], stderr=subprocess.PIPE, text=True)


def test_the_resolver_ends_by_itself_at_its_duration(upstream: Server, tmp_path: Path) -> None:
    started = time.monotonic()
    proc = serve(upstream, tmp_path, "--duration", "1", "--pattern", "a.test", "--action", "error")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert 1 <= time.monotonic() - started < 15
    assert "resolver listening on 127.0.0.1 port" in err
    assert "duration over: 0 matched queries answered with error NXDOMAIN" in err


def test_the_resolver_stops_on_sigterm(upstream: Server, tmp_path: Path) -> None:
    proc = serve(upstream, tmp_path, "--duration", "600", "--pattern", "a.test", "--action", "random")
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "resolver listening" in line
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "stopped: 0 matched queries" in err


def test_the_resolver_refuses_a_port_it_cannot_have(upstream: Server, tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = str(taken.getsockname()[1])
        conf = tmp_path / "resolv.conf"
        conf.write_text("nameserver 127.0.0.1\n")
        args = f"serve --id {FID} --port {port} --listen 127.0.0.1 --resolv-conf {conf} --duration 5"
        code = program.main([*args.split(), "--pattern", "a.test", "--action", "error"])
    assert code == 2


def test_the_resolver_refuses_a_bad_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    code = program.main(
        ["serve", "--id", FID, "--port", "1", "--duration", "5", "--pattern", "a b", "--action", "random"]
    )
    assert code == 2
    assert 'pattern "a b" is not a DNS name' in capsys.readouterr().err
