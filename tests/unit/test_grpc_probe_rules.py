"""grpc probes (issue 23, item 5): the address and TLS options in the models and the CRD, the pure parts of the
probe (address, dial targets, channel options, verdicts, messages), and the probe against a real gRPC health
server on loopback: SERVING, NOT_SERVING, an unknown service, unreachable, TLS with a CA made here, and the reach
rules (a denied address is refused before anything is sent)."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import celpy
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from celpy.adapter import json_to_cel
from pydantic import ValidationError

from coordinator.adapters.kube import KubeClient
from coordinator.api.crd import build_crd
from coordinator.api.probes import GrpcProbe, GrpcTls, Probe
from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, parse_cidrs
from coordinator.domain.tracing import trace_id
from coordinator.engine.probing import ProbeReach, ProbeSession
from coordinator.probes import grpc as grpc_probe
from coordinator.probes.base import ProbeRefused
from coordinator.probes.http import CORRELATION_HEADER
from coordinator.probes.reach import GuardedResolver
from support.grpc_target import NOT_SERVING, SERVING, GrpcTarget

DEFAULT = parse_cidrs(DEFAULT_DENIED_CIDRS)
PROTECTED = frozenset({"kube-system"})
RUN_UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"

# --- the address and TLS options: the model and the CRD agree --------------------------------------------------

GOOD_ADDRESSES = [
    "127.0.0.1:50051",
    "cart.shop.svc.cluster.local:50051",
    "cart:1",
    "localhost:65535",
    "[::1]:50051",
    "[fd00::1]:443",
    "[::ffff:169.254.169.254]:80",  # well formed (and denied when dialled)
    "{{ params.cart }}:50051",
]
BAD_ADDRESSES = [
    "cart",
    "cart:",
    "cart:0",
    "cart:65536",
    "::1:50051",
    "[::1]",
    "[::zz]:50051",
    "999.1.1.1:50051",
    "http://cart:50051",
    "user@cart:50051",
    "ca rt:50051",
    "cart:50051/x",
    "cart:50051\r\n",
]


@pytest.mark.parametrize("address", GOOD_ADDRESSES)
def test_host_and_port_addresses_are_accepted(address: str) -> None:
    assert GrpcProbe(address=address).address == address


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_malformed_addresses_are_refused_naming_the_field(address: str) -> None:
    with pytest.raises(ValidationError) as caught:
        GrpcProbe(address=address)
    assert caught.value.errors()[0]["loc"] == ("address",)


def _schema() -> dict[str, Any]:
    spec = build_crd("ChaosScenario")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    probe = spec["properties"]["steadyState"]["properties"]["probes"]["items"]
    return cast(dict[str, Any], probe)


def _cel(rule: str, value: Any) -> bool:
    env = celpy.Environment()
    return bool(env.program(env.compile(rule)).evaluate({"self": json_to_cel(value)}))


# Not the one ending in CR LF: cel-python's matches() searches like Python's re, whose "$" also matches before a
# final newline; the API server's RE2 does not (and the model refuses it, as the test above shows).
@pytest.mark.parametrize("address", [a for a in GOOD_ADDRESSES + BAD_ADDRESSES if not a.endswith("\n")])
def test_the_crd_rule_for_addresses_agrees_with_the_model(address: str) -> None:
    (rule,) = _schema()["properties"]["grpc"]["properties"]["address"]["x-kubernetes-validations"]
    try:
        GrpcProbe(address=address)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert _cel(rule["rule"], address) == model_accepts


def test_a_grpc_probe_needs_grpc_options_in_the_crd() -> None:
    rules = {r["message"]: r for r in _schema()["x-kubernetes-validations"]}
    rule = rules["a grpc probe needs grpc options"]
    assert rule["fieldPath"] == ".grpc"
    assert not _cel(rule["rule"], {"name": "p", "type": "grpc"})
    assert _cel(rule["rule"], {"name": "p", "type": "grpc", "grpc": {"address": "cart:50051"}})


@pytest.mark.parametrize(
    ("tls", "accepted"),
    [
        ({}, True),
        ({"enabled": True, "serverName": "cart.shop"}, True),
        ({"enabled": False}, True),
        ({"enabled": False, "serverName": "cart.shop"}, False),
        ({"enabled": False, "caCert": "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"}, False),
    ],
)
def test_tls_options_need_tls_enabled(tls: dict[str, Any], accepted: bool) -> None:
    (rule,) = _schema()["properties"]["grpc"]["properties"]["tls"]["x-kubernetes-validations"]
    assert _cel(rule["rule"], tls) == accepted


def test_a_ca_certificate_must_be_pem_and_a_server_name_a_dns_name() -> None:
    GrpcTls(caCert="-----BEGIN CERTIFICATE-----\nMIIB+zCC\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValidationError, match="caCert"):
        GrpcTls(caCert="-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValidationError, match="serverName"):
        GrpcTls(serverName="cart shop")


def test_a_service_name_holds_no_control_character() -> None:
    assert GrpcProbe(address="cart:1", service="shop.v1.Cart").service == "shop.v1.Cart"
    with pytest.raises(ValidationError, match="service"):
        GrpcProbe(address="cart:1", service="shop\nCart")


# --- the pure parts of the probe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "host", "port", "authority"),
    [
        ("cart.shop:50051", "cart.shop", 50051, "cart.shop:50051"),
        ("10.0.0.7:1", "10.0.0.7", 1, "10.0.0.7:1"),
        ("[fd00::1]:443", "fd00::1", 443, "[fd00::1]:443"),
    ],
)
def test_an_address_is_split_into_host_and_port(address: str, host: str, port: int, authority: str) -> None:
    parsed = grpc_probe.Address.parse(address)
    assert (parsed.host, parsed.port, parsed.authority) == (host, port, authority)


@pytest.mark.parametrize("address", ["cart", "cart:x", "cart:0", "::1:80", ":80"])
def test_what_is_not_host_and_port_is_a_refusal(address: str) -> None:
    refused = grpc_probe.refusal(address, DEFAULT)
    assert refused is not None
    assert refused.field == "grpc.address"


def test_a_denied_ip_literal_is_refused_before_anything_is_resolved() -> None:
    refused = grpc_probe.refusal("169.254.169.254:50051", DEFAULT)
    assert refused is not None
    assert str(refused) == (
        "grpc.address: 169.254.169.254 is in the denied range 169.254.0.0/16 (COORDINATOR_PROBE_DENY_CIDRS)"
    )
    mapped = grpc_probe.refusal("[::ffff:169.254.169.254]:50051", DEFAULT)
    assert mapped is not None
    assert "169.254.0.0/16" in mapped.reason
    assert grpc_probe.refusal("metadata.test:80", DEFAULT) is None, "a name is checked when it is resolved"
    assert grpc_probe.refusal("127.0.0.1:50051", DEFAULT) is None


def test_dial_targets_hold_only_ip_addresses_one_family_each_in_the_resolvers_order() -> None:
    assert grpc_probe.dial_targets(["10.0.0.7", "10.0.0.8"], 50051) == ["ipv4:10.0.0.7:50051,10.0.0.8:50051"]
    assert grpc_probe.dial_targets(["::1", "127.0.0.1"], 80) == ["ipv6:[::1]:80", "ipv4:127.0.0.1:80"]
    assert grpc_probe.dial_targets(["127.0.0.1", "::1"], 80) == ["ipv4:127.0.0.1:80", "ipv6:[::1]:80"]
    assert grpc_probe.dial_targets([], 80) == []


def test_the_channel_keeps_the_name_dials_no_proxy_and_never_retries() -> None:
    address = grpc_probe.Address.parse("cart.shop:50051")
    plain = dict(grpc_probe.channel_options(address, None))
    assert plain["grpc.default_authority"] == "cart.shop:50051"
    assert plain["grpc.enable_http_proxy"] == 0
    assert plain["grpc.enable_retries"] == 0
    assert "grpc.ssl_target_name_override" not in plain
    assert "grpc.ssl_target_name_override" not in dict(grpc_probe.channel_options(address, GrpcTls(enabled=False)))
    tls = dict(grpc_probe.channel_options(address, GrpcTls()))
    assert tls["grpc.ssl_target_name_override"] == "cart.shop"
    named = dict(grpc_probe.channel_options(address, GrpcTls(serverName="cart.example.com")))
    assert named["grpc.ssl_target_name_override"] == "cart.example.com"


def test_only_serving_passes() -> None:
    assert grpc_probe.judge("SERVING", "") == (True, "SERVING")
    assert grpc_probe.judge("NOT_SERVING", "") == (False, "the server is NOT_SERVING, want SERVING")
    assert grpc_probe.judge("SERVICE_UNKNOWN", "shop.Cart") == (
        False,
        "service 'shop.Cart' is SERVICE_UNKNOWN, want SERVING",
    )
    assert grpc_probe.judge("UNKNOWN", "")[0] is False


def test_a_failed_call_reads_as_what_went_wrong() -> None:
    def failure(code: str, details: str = "") -> str:
        return grpc_probe.rpc_failure(code, details, "cart:50051", "shop.Cart", 2)

    assert failure("DEADLINE_EXCEEDED") == "cart:50051: no health answer within 2s"
    assert failure("NOT_FOUND") == "cart:50051: the server knows no service 'shop.Cart' (NOT_FOUND)"
    assert "does not serve grpc.health.v1.Health/Check" in failure("UNIMPLEMENTED")
    refused = "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.7:50051: Connection refused"
    assert failure("UNAVAILABLE", refused) == "cart:50051 unreachable: Connection refused"
    assert failure("UNAVAILABLE", "Socket closed") == "cart:50051 unreachable: Socket closed"
    assert failure("PERMISSION_DENIED", "no") == "cart:50051: grpc.health.v1.Health/Check failed: PERMISSION_DENIED no"
    assert len(failure("UNAVAILABLE", "x" * 5000)) <= 200


def test_the_run_is_named_in_the_metadata_as_http_probes_name_it_in_headers() -> None:
    assert grpc_probe.correlation_metadata(None) == ()
    metadata = dict(grpc_probe.correlation_metadata(RUN_UID))
    assert metadata[CORRELATION_HEADER.lower()] == RUN_UID
    assert metadata["traceparent"].split("-")[1] == trace_id(RUN_UID)
    assert all(name == name.lower() for name in metadata), "HTTP/2 header names are lower case"


def test_importing_the_probe_does_not_load_grpcio() -> None:
    """grpcio costs about 30 MiB resident: only an operator that runs a grpc probe pays for it."""
    import subprocess

    code = "import sys, coordinator.engine.probing; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_grpcio_prints_nothing_past_the_operators_log() -> None:
    """A failed TLS handshake made grpcio's C core print to stderr; the sample's message says it already. The
    probe runs in a process of its own that has not loaded grpcio (the server runs here)."""
    import subprocess

    code = """
import asyncio, sys
from coordinator.api.probes import GrpcProbe, GrpcTls
from coordinator.probes import grpc as grpc_probe
from coordinator.probes.reach import GuardedResolver

async def main() -> None:
    probe = GrpcProbe(address=sys.argv[1], tls=GrpcTls(serverName="elsewhere.test"))
    print((await grpc_probe.sample(probe, 5, GuardedResolver(()))).error)

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    with GrpcTarget(tls=True) as server:
        done = subprocess.run(
            [sys.executable, "-c", code, server.address], capture_output=True, text=True, check=True, env=env
        )
    assert "handshake failed" in done.stdout.lower(), done.stdout
    assert done.stderr == ""


# --- against a real health server on loopback ----------------------------------------------------------------


class AnswerResolver(AbstractResolver):
    """Names to addresses, as a DNS server under the test's control would answer."""

    def __init__(self, answers: Callable[[str], list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in self.answers(host)
        ]

    async def close(self) -> None:
        return None


@pytest.fixture
def target() -> Iterator[GrpcTarget]:
    with GrpcTarget() as server:
        yield server


@pytest.fixture
def tls_target() -> Iterator[GrpcTarget]:
    with GrpcTarget(tls=True, hosts=("cart.test", "127.0.0.1")) as server:
        yield server


@pytest.fixture
async def resolver() -> AsyncIterator[GuardedResolver]:
    guard = GuardedResolver(DEFAULT)
    yield guard
    await guard.close()


async def test_serving_passes_with_its_latency(target: GrpcTarget, resolver: GuardedResolver) -> None:
    sample = await grpc_probe.sample(GrpcProbe(address=target.address), 5, resolver, RUN_UID)
    assert sample.ok, sample.error
    assert sample.value == "SERVING"
    assert sample.latency_ms is not None
    assert 0 < sample.latency_ms < 5000
    assert target.health.checks == 1
    assert target.health.metadata[0]["x-correlation-id"] == RUN_UID


async def test_not_serving_fails_saying_so(target: GrpcTarget, resolver: GuardedResolver) -> None:
    target.set("", NOT_SERVING)
    sample = await grpc_probe.sample(GrpcProbe(address=target.address), 5, resolver)
    assert not sample.ok
    assert sample.error == "the server is NOT_SERVING, want SERVING"
    assert sample.latency_ms is not None, "an answer's latency counts, whatever it says"


async def test_a_named_service_is_asked_for(target: GrpcTarget, resolver: GuardedResolver) -> None:
    target.set("shop.Cart", SERVING)
    target.set("", NOT_SERVING)
    assert (await grpc_probe.sample(GrpcProbe(address=target.address, service="shop.Cart"), 5, resolver)).ok
    unknown = await grpc_probe.sample(GrpcProbe(address=target.address, service="shop.Other"), 5, resolver)
    assert not unknown.ok
    assert unknown.error == f"{target.address}: the server knows no service 'shop.Other' (NOT_FOUND)"


async def test_an_unreachable_server_fails_without_a_latency(resolver: GuardedResolver) -> None:
    with GrpcTarget() as gone:
        address = gone.address
    sample = await grpc_probe.sample(GrpcProbe(address=address), 5, resolver)
    assert not sample.ok
    assert sample.error is not None
    assert sample.error.startswith(f"{address} unreachable: ")
    assert "refused" in sample.error.lower(), sample.error
    assert sample.latency_ms is None


async def test_a_name_that_does_not_resolve_fails(resolver: GuardedResolver) -> None:
    sample = await grpc_probe.sample(GrpcProbe(address="nothing.invalid:50051"), 5, resolver)
    assert not sample.ok
    assert sample.error is not None
    assert sample.error.startswith("nothing.invalid:50051 unreachable: nothing.invalid: ")


async def test_tls_with_the_servers_ca_passes(tls_target: GrpcTarget, resolver: GuardedResolver) -> None:
    probe = GrpcProbe(address=tls_target.address, tls=GrpcTls(caCert=tls_target.ca_cert))
    sample = await grpc_probe.sample(probe, 5, resolver)
    assert sample.ok, sample.error


async def test_tls_verifies_the_name_it_dials_by(tls_target: GrpcTarget) -> None:
    """cart.test resolves (here) to loopback: the certificate is checked against cart.test, not the address."""
    guard = GuardedResolver(DEFAULT, AnswerResolver(lambda host: ["127.0.0.1"]))
    named = GrpcProbe(address=f"cart.test:{tls_target.port}", tls=GrpcTls(caCert=tls_target.ca_cert))
    assert (await grpc_probe.sample(named, 5, guard)).ok
    other = GrpcProbe(address=tls_target.address, tls=GrpcTls(caCert=tls_target.ca_cert, serverName="elsewhere.test"))
    sample = await grpc_probe.sample(other, 5, guard)
    assert not sample.ok
    assert sample.error is not None
    assert "unreachable" in sample.error


async def test_tls_fails_against_an_unknown_ca_and_in_plaintext(
    tls_target: GrpcTarget, resolver: GuardedResolver
) -> None:
    with GrpcTarget(tls=True) as stranger:
        wrong_ca = GrpcProbe(address=tls_target.address, tls=GrpcTls(caCert=stranger.ca_cert))
        sample = await grpc_probe.sample(wrong_ca, 5, resolver)
    assert not sample.ok
    assert sample.error is not None
    assert "handshake failed" in sample.error.lower(), sample.error
    plaintext = await grpc_probe.sample(GrpcProbe(address=tls_target.address), 5, resolver)
    assert not plaintext.ok
    assert tls_target.health.checks == 0


async def test_a_server_that_never_answers_times_out(resolver: GuardedResolver) -> None:
    """A listening socket that never speaks HTTP/2: the check ends at the probe's time limit."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        sample = await grpc_probe.sample(GrpcProbe(address=address), 0.5, resolver)
    finally:
        silent.close()
    assert not sample.ok
    assert sample.error == f"{address}: no health answer within 0.5s"
    assert sample.latency_ms == 500


# --- reach: a denied address is refused before anything is sent ---------------------------------------------


async def test_a_name_is_dialled_at_the_address_it_was_checked_at(target: GrpcTarget) -> None:
    # svc.test exists only in this resolver: the check can reach the server only through the checked answer.
    answers = AnswerResolver(lambda host: ["127.0.0.1"])
    guard = GuardedResolver(DEFAULT, answers)
    assert (await grpc_probe.sample(GrpcProbe(address=f"svc.test:{target.port}"), 5, guard)).ok
    assert answers.calls == 1
    assert target.health.checks == 1


async def test_a_name_with_any_denied_address_is_refused_before_connecting(target: GrpcTarget) -> None:
    guard = GuardedResolver(DEFAULT, AnswerResolver(lambda host: ["127.0.0.1", "169.254.169.254"]))
    with pytest.raises(ProbeRefused) as caught:
        await grpc_probe.sample(GrpcProbe(address=f"svc.test:{target.port}"), 5, guard)
    assert str(caught.value) == (
        "grpc.address: svc.test resolves to 169.254.169.254, which is in the denied range 169.254.0.0/16 "
        "(COORDINATOR_PROBE_DENY_CIDRS)"
    )
    assert target.health.checks == 0


async def test_the_system_resolver_is_checked_too(target: GrpcTarget) -> None:
    guard = GuardedResolver(parse_cidrs("127.0.0.0/8,::1/128"))
    try:
        with pytest.raises(ProbeRefused, match="localhost resolves to"):
            await grpc_probe.sample(GrpcProbe(address=f"localhost:{target.port}"), 5, guard)
        with pytest.raises(ProbeRefused, match=r"127\.0\.0\.1 is in the denied range 127\.0\.0\.0/8"):
            await grpc_probe.sample(GrpcProbe(address=target.address), 5, guard)
    finally:
        await guard.close()
    assert target.health.checks == 0


NO_CLIENT = cast(KubeClient, None)


def _probe(**grpc: Any) -> Probe:
    return Probe.model_validate({"name": "cart", "type": "grpc", "mode": "before", "grpc": grpc})


def _session(probe: Probe, reach: ProbeReach) -> ProbeSession:
    return ProbeSession(NO_CLIENT, [probe], "shop", reach=reach, owner="ChaosScenario shop/s", correlation_id=RUN_UID)


def test_a_denied_literal_is_refused_when_the_probes_open() -> None:
    with pytest.raises(ProbeRefused) as caught:
        _session(_probe(address="[fe80::1]:50051"), ProbeReach(PROTECTED, DEFAULT))
    assert str(caught.value) == (
        "ChaosScenario shop/s: spec.steadyState.probes[0].grpc.address: fe80::1 is in the denied range fe80::/10 "
        "(COORDINATOR_PROBE_DENY_CIDRS)"
    )


async def test_the_run_samples_grpc_probes_and_locates_a_refusal(target: GrpcTarget) -> None:
    answers = AnswerResolver(lambda host: ["127.0.0.1"] if host == "cart.test" else ["169.254.169.254"])
    reach = ProbeReach(PROTECTED, DEFAULT, answers)
    session = _session(_probe(address=f"cart.test:{target.port}"), reach)
    try:
        sample = await session.sample(session.probes[0])
    finally:
        await session.close()
    assert sample.ok, sample.error
    assert target.health.metadata[0]["x-correlation-id"] == RUN_UID
    session = _session(_probe(address=f"metadata.test:{target.port}"), reach)
    try:
        with pytest.raises(
            ProbeRefused, match=r"^ChaosScenario shop/s: spec\.steadyState\.probes\[0\]\.grpc\.address: "
        ):
            await session.sample(session.probes[0])
    finally:
        await session.close()
    assert target.health.checks == 1
