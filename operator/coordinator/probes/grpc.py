"""grpc probes: ``grpc.health.v1.Health/Check`` against host:port, plaintext or TLS; latency recorded.

What the probe may reach is checked as for http probes (``probes/reach.py``), but grpcio resolves names and opens
sockets in its C core, where no Python resolver or socket factory can see them. So the probe resolves the name
itself, through the same guarded resolver, refuses it when any address is denied, and hands grpcio only the checked
IP addresses (an ``ipv4:``/``ipv6:`` target, which grpcio never resolves). The original name still goes to the
server as the ``:authority`` and, with TLS, as the server name the certificate is verified against. grpcio's HTTP
proxy support is switched off: a proxy would make the dialled address the proxy's. Each sample makes a new channel,
so it resolves, is checked and connects afresh, and its latency includes connecting (and the TLS handshake).

grpcio is imported when a grpc probe first samples, not with this module: it costs about 30 MiB resident, which
an operator whose scenarios probe no gRPC server should not pay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.api.probes import GrpcProbe, GrpcTls
from coordinator.domain.addresses import IPNetwork, denied_by
from coordinator.domain.samples import Sample
from coordinator.domain.tracing import traceparent
from coordinator.probes.base import ProbeRefused, excerpt, short
from coordinator.probes.http import CORRELATION_HEADER, TRACEPARENT_HEADER
from coordinator.probes.reach import AddressDenied, GuardedResolver

FIELD = "grpc.address"
HEALTH_METHOD = "grpc.health.v1.Health/Check"
SERVING = "SERVING"
# A health answer is a few bytes; anything much larger is not one, and is not read into memory.
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Address:
    """A probe's ``host:port``: ``host`` without brackets, and whether it is an IP literal."""

    host: str
    port: int

    @classmethod
    def parse(cls, address: str) -> Address:
        """``host:port``, ``[v6]:port``; ValueError when it is not (the models check it first)."""
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{excerpt(address)!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        elif ":" in host:
            raise ValueError(f"{excerpt(address)!r}: an IPv6 address goes in brackets, [{excerpt(host)}]:{port}")
        if not host:
            raise ValueError(f"{excerpt(address)!r} names no host")
        return cls(host, int(port))

    @property
    def literal(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def authority(self) -> str:
        """``host:port`` as HTTP/2's ``:authority`` spells it (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def refusal(address: str, denied: Sequence[IPNetwork], field: str = FIELD) -> ProbeRefused | None:
    """Pure: why ``address`` may not be dialled before anything is resolved: it is not host:port, or its host is
    a denied IP literal."""
    try:
        parsed = Address.parse(address)
    except ValueError as exc:
        return ProbeRefused(field, str(exc))
    literal = parsed.literal
    if literal is None:
        return None  # a name: its addresses are checked when it is resolved
    network = denied_by(literal, denied)
    if network is None:
        return None
    return ProbeRefused(field, str(AddressDenied(parsed.host, str(literal), network)))


def dial_targets(addresses: Sequence[str], port: int) -> list[str]:
    """Pure: grpcio targets that dial exactly ``addresses`` (IP literals, tried in order) and resolve nothing: one
    per address family (grpcio's ``ipv4:`` and ``ipv6:`` schemes), in the order the family first appears."""
    v4 = [a for a in addresses if ":" not in a]
    v6 = [a for a in addresses if ":" in a]
    targets = {
        "ipv4": "ipv4:" + ",".join(f"{a}:{port}" for a in v4) if v4 else "",
        "ipv6": "ipv6:" + ",".join(f"[{a}]:{port}" for a in v6) if v6 else "",
    }
    order = ["ipv6", "ipv4"] if addresses and ":" in addresses[0] else ["ipv4", "ipv6"]
    return [targets[family] for family in order if targets[family]]


def channel_options(address: Address, tls: GrpcTls | None) -> list[tuple[str, Any]]:
    """Pure: grpcio channel options: the original name as the authority (and TLS server name), no proxy, no
    retry within a sample, a bounded answer."""
    options: list[tuple[str, Any]] = [
        ("grpc.default_authority", address.authority),
        ("grpc.enable_http_proxy", 0),
        ("grpc.enable_retries", 0),
        ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
    ]
    if tls is not None and tls.enabled:
        options.append(("grpc.ssl_target_name_override", tls.serverName or address.host))
    return options


def judge(status: str, service: str) -> tuple[bool, str]:
    """Pure: whether a health answer passes (SERVING), and what the sample reports."""
    named = f"service {service!r}" if service else "the server"
    if status == SERVING:
        return True, SERVING
    return False, f"{named} is {status}, want {SERVING}"


_DIALLED = re.compile(r"^[A-Z_]+: ipv[46]:\S+: ")


def connect_error(details: str) -> str:
    """Pure: why grpcio could not connect, without its preamble (``failed to connect to all addresses; last
    error: UNKNOWN: ipv4:10.0.0.7:50051: ``), so that the cause fits in a sample's message."""
    cause = details.rpartition("last error: ")[2]
    return _DIALLED.sub("", cause) or details


def rpc_failure(code: str, details: str, address: str, service: str, limit_seconds: float) -> str:
    """Pure: a failed Check call (a gRPC status code and its details) as a sample's error."""
    if code == "DEADLINE_EXCEEDED":
        return f"{address}: no health answer within {limit_seconds:g}s"
    if code == "NOT_FOUND":
        return f"{address}: the server knows no service {service!r} (NOT_FOUND)"
    if code == "UNIMPLEMENTED":
        return f"{address}: the server does not serve {HEALTH_METHOD} (UNIMPLEMENTED)"
    if code == "UNAVAILABLE":
        return short(f"{address} unreachable: {connect_error(details)}")
    return short(f"{address}: {HEALTH_METHOD} failed: {code} {details}")


def correlation_metadata(correlation_id: str | None, parent_span: str | None = None) -> tuple[tuple[str, str], ...]:
    """The run's correlation ID as gRPC metadata, as http probes send it in headers (names in lower case, as
    HTTP/2 requires)."""
    if not correlation_id:
        return ()
    return (
        (TRACEPARENT_HEADER, traceparent(correlation_id, parent_span)),
        (CORRELATION_HEADER.lower(), correlation_id),
    )


async def resolve(address: Address, resolver: GuardedResolver) -> list[str]:
    """The addresses to dial: the literal itself, or what the guarded resolver answered for the name
    (AddressDenied when any is denied). OSError when the name does not resolve."""
    if address.literal is not None:
        return [address.host]
    answers = await resolver.resolve(address.host, address.port, socket.AF_UNSPEC)
    return [entry["host"] for entry in answers]


async def sample(
    spec: GrpcProbe,
    limit_seconds: float,
    resolver: GuardedResolver,
    correlation_id: str | None = None,
    parent_span: str | None = None,
) -> Sample:
    """One health check, with the run's correlation ID as metadata. ProbeRefused (not a failed sample) when an
    address is denied (``resolver.denied``), before anything is sent."""
    refused = refusal(spec.address, resolver.denied)
    if refused is not None:
        raise refused
    address = Address.parse(spec.address)
    started = time.time()
    clock = time.perf_counter()
    try:
        dialled = await asyncio.wait_for(resolve(address, resolver), limit_seconds)
    except TimeoutError:
        return _timed_out(spec, started, limit_seconds)
    except AddressDenied as exc:
        raise ProbeRefused(FIELD, str(exc)) from None
    except OSError as exc:
        return Sample(ok=False, at=started, error=short(f"{spec.address} unreachable: {address.host}: {exc}"))
    return await _check(
        spec, address, dialled, limit_seconds, correlation_metadata(correlation_id, parent_span), started, clock
    )


async def _check(
    spec: GrpcProbe,
    address: Address,
    dialled: list[str],
    limit_seconds: float,
    metadata: tuple[tuple[str, str], ...],
    started: float,
    clock: float,
) -> Sample:
    # Imported here, not at the top: see the module's docstring. grpcio's C core would also print its own lines
    # (a failed TLS handshake, at INFO) to stderr, past the operator's structured log: what went wrong is in the
    # sample's message already. An explicit GRPC_VERBOSITY still wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import grpc
    from grpc_health.v1 import health_pb2

    options = channel_options(address, spec.tls)
    tls = spec.tls is not None and spec.tls.enabled
    roots = spec.tls.caCert.encode() if spec.tls is not None and spec.tls.caCert else None
    failure = f"{spec.address} unreachable: {address.host} has no address"  # (getaddrinfo raises instead)
    # One family after the other (a name may have both, and a server listen on one): the next only when the
    # first could not be reached, within the one time limit.
    for target in dial_targets(dialled, address.port):
        remaining = limit_seconds - (time.perf_counter() - clock)
        if remaining <= 0:
            return _timed_out(spec, started, limit_seconds)
        if tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=roots)
            channel = grpc.aio.secure_channel(target, credentials, options)
        else:
            channel = grpc.aio.insecure_channel(target, options)
        try:
            async with channel:
                check = channel.unary_unary(
                    f"/{HEALTH_METHOD}",
                    request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                    response_deserializer=health_pb2.HealthCheckResponse.FromString,
                )
                answer = await check(
                    health_pb2.HealthCheckRequest(service=spec.service),
                    timeout=remaining,
                    metadata=metadata,
                )
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            failure = rpc_failure(code, exc.details() or "", spec.address, spec.service, limit_seconds)
            if code == "UNAVAILABLE":
                continue  # not connected: no latency to record
            # An answer, if not a health status: its latency counts; a timeout counts as the whole limit.
            latency = limit_seconds * 1000 if code == "DEADLINE_EXCEEDED" else (time.perf_counter() - clock) * 1000
            return Sample(ok=False, at=started, error=failure, latency_ms=latency)
        latency = (time.perf_counter() - clock) * 1000
        ok, observed = judge(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status), spec.service)
        return Sample(ok=ok, at=started, value=observed, error=None if ok else observed, latency_ms=latency)
    return Sample(ok=False, at=started, error=failure)


def _timed_out(spec: GrpcProbe, started: float, limit_seconds: float) -> Sample:
    error = rpc_failure("DEADLINE_EXCEEDED", "", spec.address, spec.service, limit_seconds)
    return Sample(ok=False, at=started, error=error, latency_ms=limit_seconds * 1000)
