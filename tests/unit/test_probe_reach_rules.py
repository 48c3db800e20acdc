"""Probe reach (issue 18, item 3): denied address ranges, the guarded HTTP session, header and URL checks in the
models and the CRD, k8s probes that never read Secrets or protected namespaces, and bounded or hidden values."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiohttp
import celpy
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from celpy.adapter import json_to_cel
from pydantic import ValidationError

from coordinator.adapters.kube import KubeClient
from coordinator.api.crd import build_crd
from coordinator.api.probes import HttpProbe, K8sProbe, Probe, ProbeMode
from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, denied_by, parse_cidrs
from coordinator.domain.samples import ProbeError
from coordinator.engine.probing import ProbeReach, ProbeSession
from coordinator.probes import http as http_probe
from coordinator.probes import k8s as k8s_probe
from coordinator.probes.base import EXCERPT_LIMIT, ProbeRefused, excerpt
from coordinator.probes.reach import AddressDenied, guarded_session
from coordinator.settings import ConfigurationError, get_settings, load_settings
from support.http_target import RecordingServer, recording_server

DEFAULT = parse_cidrs(DEFAULT_DENIED_CIDRS)
PROTECTED = frozenset({"kube-system", "test-coordinator"})

# --- denied ranges --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("169.254.169.254", "169.254.0.0/16"),
        ("169.254.170.2", "169.254.0.0/16"),
        ("::ffff:169.254.169.254", "169.254.0.0/16"),  # IPv4-mapped: the same host
        ("fe80::1", "fe80::/10"),
        ("fe80::1%eth0", "fe80::/10"),
        ("fd00:ec2::254", "fd00:ec2::254/128"),
        ("100.100.100.200", "100.100.100.200/32"),
    ],
)
def test_link_local_and_metadata_addresses_are_denied_by_default(address: str, network: str) -> None:
    assert denied_by(address, DEFAULT) == ipaddress.ip_network(network)


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.0.0.1", "192.168.1.10", "8.8.8.8", "fd00::1", "not-ip"])
def test_loopback_and_ordinary_addresses_are_allowed_by_default(address: str) -> None:
    assert denied_by(address, DEFAULT) is None


def test_cidrs_parse_from_a_comma_separated_list() -> None:
    assert parse_cidrs(" 10.0.0.0/8, ::1 ,, 192.168.1.7/24") == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("192.168.1.0/24"),
    )
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a CIDR"):
        parse_cidrs("10.0.0.0/8,10.0.0.0/33")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COORDINATOR_PROBE_DENY_CIDRS", raising=False)
    get_settings.cache_clear()


@pytest.mark.usefixtures("clean_env")
def test_the_setting_defaults_to_the_documented_ranges_and_can_be_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().probe_deny_cidrs == DEFAULT
    monkeypatch.setenv("COORDINATOR_PROBE_DENY_CIDRS", "127.0.0.0/8,169.254.0.0/16")
    assert load_settings().probe_deny_cidrs == parse_cidrs("127.0.0.0/8,169.254.0.0/16")
    monkeypatch.setenv("COORDINATOR_PROBE_DENY_CIDRS", "")
    assert load_settings().probe_deny_cidrs == ()
    monkeypatch.setenv("COORDINATOR_PROBE_DENY_CIDRS", "169.254.0.0/16,metadata")
    with pytest.raises(ConfigurationError, match=r"COORDINATOR_PROBE_DENY_CIDRS: .*'metadata' is not a CIDR"):
        load_settings()


# --- headers and URLs: the model and the CRD agree ------------------------------------------------------------

GOOD_URLS = [
    "http://127.0.0.1:8080/health",
    "https://web.shop.svc.cluster.local/ready?x=1#top",
    "http://localhost",
    "http://[::1]:9090/",
    "http://[::1:bad]/",  # well formed: b, a and d are hex digits
    "http://[::ffff:169.254.169.254]/",  # well formed (and denied when dialled)
    "http://web-0.web:65535/",
    "http://{{ params.host }}/health",
]
BAD_URLS = [
    "http://[::1:zz]/",
    "http://[1:2:3:4:5:6:7:8:9]/",
    "http://[::1/",
    "http://999.1.1.1/",
    "http://host:99999/",
    "http://host:0/",
    "http://exa mple.com/",
    "http://user:password@host/",
    "http://host/a b",
    "http://host/\r\nX-Injected: 1",
    "http://host/\n",
    "http:///path",
    "ftp://host/",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_well_formed_urls_are_accepted(url: str) -> None:
    HttpProbe(url=url)


@pytest.mark.parametrize("url", BAD_URLS)
def test_malformed_urls_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        HttpProbe(url=url)
    assert caught.value.errors()[0]["loc"] == ("url",)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "a\r\nX-Injected: 1"},
        {"X-Token": "a\nb"},
        {"X-Token": "a\x00b"},
        {"X-Token": "a\x7fb"},
        {"X-Token\r\nX-Injected": "1"},
        {"X Token": "1"},
        {"": "1"},
        {"X-Tökén": "1"},
    ],
)
def test_header_injection_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as caught:
        HttpProbe(url="http://127.0.0.1/", headers=headers)
    assert caught.value.errors()[0]["loc"][0] == "headers"


def test_ordinary_headers_are_accepted() -> None:
    headers = {"Authorization": "Bearer abc.def", "X-Trace_Id!": "a\tb", "Accept": "*/*; q=0.5"}
    assert HttpProbe(url="http://127.0.0.1/", headers=headers).headers == headers


def _http_schema() -> dict[str, Any]:
    spec = build_crd("ChaosScenario")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    http: dict[str, Any] = spec["properties"]["steadyState"]["properties"]["probes"]["items"]["properties"]["http"]
    return http


def _cel(rule: str, value: Any) -> bool:
    env = celpy.Environment()
    return bool(env.program(env.compile(rule)).evaluate({"self": json_to_cel(value)}))


# Not "http://host/\n": cel-python's matches() searches like Python's re, whose "$" also matches before a final
# newline; the API server's RE2 does not (and the model refuses it, as test_malformed_urls_are_refused shows).
@pytest.mark.parametrize("url", [u for u in GOOD_URLS + BAD_URLS if not u.endswith("\n")])
def test_the_crd_rule_for_urls_agrees_with_the_model(url: str) -> None:
    (rule,) = _http_schema()["properties"]["url"]["x-kubernetes-validations"]
    try:
        HttpProbe(url=url)
        model_accepts = True
    except ValidationError:
        model_accepts = False
    assert _cel(rule["rule"], url) == model_accepts


@pytest.mark.parametrize(
    ("headers", "accepted"),
    [({"X-Token": "1", "Accept": "*/*"}, True), ({"X Token": "1"}, False), ({"X-Token\r\nX-Injected": "1"}, False)],
)
def test_the_crd_rule_for_header_names_agrees_with_the_model(headers: dict[str, str], accepted: bool) -> None:
    (rule,) = _http_schema()["x-kubernetes-validations"]
    assert rule["fieldPath"] == ".headers"
    assert _cel(rule["rule"], {"url": "http://x/", "headers": headers}) == accepted
    schema = _http_schema()["properties"]["headers"]
    assert schema["additionalProperties"]["pattern"] == "^[^\\x00-\\x08\\x0a-\\x1f\\x7f]*$"
    assert schema["maxProperties"] == 32


# --- k8s probes: what they may read, what their messages show --------------------------------------------------


def _k8s(**fields: Any) -> K8sProbe:
    return K8sProbe(**{"name": "x", "fieldPath": "data.password", **fields})


@pytest.mark.parametrize("kind", ["Secret", "secret", "SECRET"])
def test_k8s_probes_never_read_secrets(kind: str) -> None:
    refused = k8s_probe.refusal(_k8s(apiVersion="v1", kind=kind), "shop", PROTECTED)
    assert refused is not None
    assert refused.field == "k8s.kind"
    assert "Secrets" in refused.reason


@pytest.mark.parametrize(
    ("probe", "namespace", "why"),
    [
        (_k8s(kind="Deployment", namespace="kube-system"), "shop", "'kube-system' is protected"),
        (_k8s(kind="Deployment"), "kube-system", "'kube-system' (the scenario's own namespace) is protected"),
        (_k8s(apiVersion="v1", kind="ConfigMap", namespace="test-coordinator"), "shop", "'test-coordinator'"),
    ],
)
def test_k8s_probes_never_read_protected_namespaces(probe: K8sProbe, namespace: str, why: str) -> None:
    refused = k8s_probe.refusal(probe, namespace, PROTECTED)
    assert refused is not None
    assert refused.field == "k8s.namespace"
    assert why in refused.reason


def test_ordinary_objects_and_cluster_scoped_kinds_may_be_read() -> None:
    assert k8s_probe.refusal(_k8s(kind="Deployment"), "shop", PROTECTED) is None
    assert k8s_probe.refusal(_k8s(apiVersion="v1", kind="ConfigMap"), "shop", PROTECTED) is None
    assert k8s_probe.refusal(_k8s(apiVersion="v1", kind="Node", namespace="kube-system"), "shop", PROTECTED) is None
    # A Secret kind of some other API group is not a core Secret.
    assert k8s_probe.refusal(_k8s(apiVersion="example.com/v1", kind="Secret"), "shop", PROTECTED) is None


def test_path_segments_that_escaped_the_model_are_refused_where_the_path_is_built() -> None:
    sneaky = K8sProbe.model_construct(apiVersion="v1", kind="Pod", name="../secrets/db", fieldPath="data")
    refused = k8s_probe.refusal(sneaky, "shop", PROTECTED)
    assert refused is not None
    assert refused.field == "k8s.name"


def _configmap(value: str) -> dict[str, Any]:
    return {"metadata": {"name": "settings"}, "data": {"password": value, "limit": "3"}}


def test_configmap_values_are_never_shown() -> None:
    secret = "s3cr3t-value"
    probe = _k8s(apiVersion="v1", kind="ConfigMap", name="settings", operator="==", value="x")
    ok, observed = k8s_probe.evaluate(probe, [_configmap(secret)])
    assert not ok
    assert secret not in observed
    assert "data.password=(hidden)" in observed
    # The other field it is compared with is hidden too; the probe's own value is the author's, and shown.
    probe = _k8s(apiVersion="v1", kind="ConfigMap", name="settings", operator="==", valueFromPath="data.limit")
    ok, observed = k8s_probe.evaluate(probe, [_configmap(secret)])
    assert not ok
    assert secret not in observed
    assert "3" not in observed.replace("ConfigMap", "")
    # An impossible comparison says so without the value.
    probe = _k8s(apiVersion="v1", kind="ConfigMap", name="settings", operator=">", value=1)
    with pytest.raises(ProbeError) as caught:
        k8s_probe.evaluate(probe, [_configmap(secret)])
    assert secret not in str(caught.value)


def test_other_values_are_shown_as_a_bounded_excerpt() -> None:
    long = "x" * 5000
    probe = _k8s(kind="Deployment", name="web", fieldPath="metadata.annotations.note", operator="==", value="y")
    ok, observed = k8s_probe.evaluate(probe, [{"metadata": {"name": "web", "annotations": {"note": long}}}])
    assert not ok
    assert "xxx..." in observed
    assert len(observed) < EXCERPT_LIMIT + 100


def test_an_excerpt_is_short_and_on_one_line() -> None:
    assert excerpt("a\r\nb") == "a  b"
    assert len(excerpt("y" * 1000)) == EXCERPT_LIMIT
    assert excerpt({"k": "v"}) == "{'k': 'v'}"


def test_an_http_value_that_cannot_be_compared_is_bounded() -> None:
    spec = HttpProbe(url="http://127.0.0.1/", jsonPath="v", operator=">", value=1)
    ok, message = http_probe.check_response(spec, 200, '{"v": "' + "z" * 5000 + '"}')
    assert not ok
    assert len(message) < EXCERPT_LIMIT + 100


# --- the guarded HTTP session against a real server on loopback -----------------------------------------------


@pytest.fixture
async def server() -> AsyncIterator[RecordingServer]:
    async with recording_server() as found:
        yield found


class MapResolver(AbstractResolver):
    """Names to addresses, as a DNS server under a test's control would answer; ``answers`` may change per call."""

    def __init__(self, answers: Callable[[str, int], list[str]]) -> None:
        self.answers = answers
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        return [
            ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)
            for address in self.answers(host, self.calls)
        ]

    async def close(self) -> None:
        return None


async def _get(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return resp.status


async def test_a_name_is_dialled_at_the_address_it_was_checked_at(server: RecordingServer) -> None:
    # svc.test exists only in this resolver: the request can reach the server only through the checked answer.
    resolver = MapResolver(lambda host, call: ["127.0.0.1"])
    async with guarded_session(DEFAULT, resolver) as session:
        assert await _get(session, f"http://svc.test:{server.port}/") == 200
    assert resolver.calls == 1
    assert server.requests == 1


async def test_a_name_with_any_denied_address_is_refused_before_connecting(server: RecordingServer) -> None:
    resolver = MapResolver(lambda host, call: ["127.0.0.1", "169.254.169.254"])
    async with guarded_session(DEFAULT, resolver) as session:
        with pytest.raises(AddressDenied, match=r"svc.test resolves to 169.254.169.254, which is in the denied"):
            await _get(session, f"http://svc.test:{server.port}/")
    assert server.requests == 0


async def test_rebinding_cannot_slip_past(server: RecordingServer) -> None:
    """The answer changes between requests (allowed, then denied): each request resolves once and is checked."""
    resolver = MapResolver(lambda host, call: ["127.0.0.1"] if call == 1 else ["169.254.169.254"])
    async with guarded_session(DEFAULT, resolver) as session:
        assert await _get(session, f"http://rebind.test:{server.port}/") == 200
        with pytest.raises(AddressDenied):
            await _get(session, f"http://rebind.test:{server.port}/")
    assert resolver.calls == 2
    assert server.requests == 1


async def test_an_ip_literal_is_checked_at_the_socket(server: RecordingServer) -> None:
    """aiohttp never resolves an IP literal: the socket factory is what sees its address, before connecting."""
    async with guarded_session(parse_cidrs("127.0.0.0/8")) as session:
        with pytest.raises(AddressDenied, match=r"127\.0\.0\.1 is in the denied range 127\.0\.0\.0/8"):
            await _get(session, f"http://127.0.0.1:{server.port}/")
    assert server.requests == 0


async def test_the_system_resolver_is_checked_too(server: RecordingServer) -> None:
    async with guarded_session(parse_cidrs("127.0.0.0/8,::1/128")) as session:
        with pytest.raises(AddressDenied, match="localhost resolves to"):
            await _get(session, f"http://localhost:{server.port}/")
    assert server.requests == 0


# --- a refusal ends the run: ProbeRefused names the probe's field ---------------------------------------------

NO_CLIENT = cast(KubeClient, None)


def _probe(index_name: str, **fields: Any) -> Probe:
    return Probe.model_validate({"name": index_name, "mode": "before", **fields})


def _session(*probes: Probe, reach: ProbeReach | None = None) -> ProbeSession:
    return ProbeSession(
        NO_CLIENT, list(probes), "shop", reach=reach or ProbeReach(PROTECTED, DEFAULT), owner="ChaosScenario shop/s"
    )


def test_a_refusal_known_from_the_spec_is_raised_when_the_probes_open() -> None:
    ok = _probe("ok", type="http", http={"url": "http://127.0.0.1/"})
    secret = _probe("db", type="k8s", k8s={"apiVersion": "v1", "kind": "Secret", "name": "db", "fieldPath": "data"})
    with pytest.raises(ProbeRefused) as caught:
        _session(ok, secret)
    assert str(caught.value).startswith("ChaosScenario shop/s: spec.steadyState.probes[1].k8s.kind: ")
    metadata = _probe("meta", type="http", http={"url": "http://169.254.169.254/latest/meta-data/"})
    with pytest.raises(ProbeRefused) as caught:
        _session(metadata)
    assert str(caught.value) == (
        "ChaosScenario shop/s: spec.steadyState.probes[0].http.url: 169.254.169.254 is in the denied range "
        "169.254.0.0/16 (COORDINATOR_PROBE_DENY_CIDRS)"
    )
    prometheus = _probe(
        "prom", type="prometheus", prometheus={"endpoint": "http://[fe80::1]:9090", "query": "up", "threshold": 1}
    )
    with pytest.raises(ProbeRefused, match=r"probes\[0\].prometheus.endpoint: fe80::1 is in the denied range"):
        _session(prometheus)


def test_a_malformed_prometheus_url_from_the_settings_is_a_refusal_not_a_crash() -> None:
    probe = _probe("prom", type="prometheus", prometheus={"query": "up", "threshold": 1})
    with pytest.raises(ProbeRefused, match=r"probes\[0\]\.prometheus\.endpoint: 'http://\[::1' is not a URL"):
        ProbeSession(NO_CLIENT, [probe], "shop", "http://[::1", reach=ProbeReach(PROTECTED, DEFAULT))


async def test_a_name_resolving_to_a_denied_address_is_refused_from_a_sample(server: RecordingServer) -> None:
    resolver = MapResolver(lambda host, call: ["169.254.169.254"])
    probe = _probe("api", type="http", http={"url": f"http://metadata.test:{server.port}/"})
    session = _session(probe, reach=ProbeReach(PROTECTED, DEFAULT, resolver))
    try:
        with pytest.raises(ProbeRefused) as caught:
            await session.sample(probe)
    finally:
        await session.close()
    assert str(caught.value) == (
        "ChaosScenario shop/s: spec.steadyState.probes[0].http.url: metadata.test resolves to 169.254.169.254, "
        "which is in the denied range 169.254.0.0/16 (COORDINATOR_PROBE_DENY_CIDRS)"
    )
    assert server.requests == 0


class SplitResolver(MapResolver):
    """metadata.test answers at once with a denied address; slow.test never answers (and notes its cancellation)."""

    def __init__(self) -> None:
        super().__init__(lambda host, call: ["169.254.169.254"])
        self.cancelled = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host == "slow.test":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return await super().resolve(host, port, family)


async def test_a_refusal_cancels_the_other_samples_at_once() -> None:
    resolver = SplitResolver()
    slow = _probe("slow", type="http", timeout="10m", http={"url": "http://slow.test/"})
    denied = _probe("meta", type="http", http={"url": "http://metadata.test/"})
    session = _session(slow, denied, reach=ProbeReach(PROTECTED, DEFAULT, resolver))
    try:
        with pytest.raises(ProbeRefused, match=r"probes\[1\]\.http\.url: metadata.test resolves to"):
            await asyncio.wait_for(session.point_check({ProbeMode.BEFORE}), 5)
        await asyncio.sleep(0)
        assert resolver.cancelled, "the other probe's sample went on after the run was refused"
    finally:
        await session.close()


async def test_a_header_the_client_will_not_send_is_a_refusal_not_a_retry(server: RecordingServer) -> None:
    """A spec that skipped admission (an older CRD) once raised ValueError from every sample: a retry loop."""
    http = HttpProbe.model_construct(
        url=f"http://127.0.0.1:{server.port}/",
        method="GET",
        headers={"X-Token": "a\r\nX-Injected: 1"},
        body=None,
        expectedStatus=[200],
        bodyRegex=None,
        jsonPath=None,
        operator="==",
        value=None,
    )
    probe = Probe.model_construct(**{**_probe("api", type="http", http={"url": "http://x/"}).__dict__, "http": http})
    session = _session(probe)
    try:
        with pytest.raises(ProbeRefused, match=r"probes\[0\].http: the request cannot be sent"):
            await session.sample(probe)
    finally:
        await session.close()
    assert server.requests == 0


async def test_loopback_stays_reachable_by_default(server: RecordingServer) -> None:
    probe = _probe("api", type="http", http={"url": f"http://localhost:{server.port}/", "headers": {"X-A": "1"}})
    session = _session(probe)
    try:
        sample = await session.sample(probe)
    finally:
        await session.close()
    assert sample.ok, sample.error
    assert server.headers[0]["X-A"] == "1"
