"""http probes: a request, its status code, body pattern or JSON value; latency recorded for every sample.

Each request carries the run's correlation ID, so the system under test can tie what it logs and traces to the run
that probed it: ``X-Correlation-ID: <TestRun UID>`` and a W3C ``traceparent`` whose trace ID is the UID (its 32 hex
digits) and whose parent ID is new for every request (each request is a span of the run's trace). Headers the
probe sets itself win: a user who sends their own ``traceparent`` (to join a trace of theirs) or correlation header
means it, and the probe never rewrites a request the user spelled out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
from collections.abc import Mapping, Sequence

import aiohttp
from yarl import URL

from coordinator.api.probes import HttpProbe
from coordinator.domain.addresses import IPNetwork, denied_by
from coordinator.domain.samples import ProbeError, Sample, compare
from coordinator.domain.tracing import traceparent
from coordinator.probes.base import ProbeRefused, excerpt, lookup, short
from coordinator.probes.reach import AddressDenied


def check_response(spec: HttpProbe, status: int, body: str) -> tuple[bool, str]:
    """Pure: whether a response satisfies the probe, and why not."""
    if status not in spec.expectedStatus:
        return False, f"status {status}, want {spec.expectedStatus}"
    if spec.bodyRegex and not re.search(spec.bodyRegex, body):
        return False, f"body does not match {spec.bodyRegex!r}"
    if spec.jsonPath:
        try:
            actual = lookup(json.loads(body), spec.jsonPath)
        except (ValueError, KeyError):
            return False, f"no JSON value at {spec.jsonPath}"
        try:
            ok = compare(actual, spec.operator, spec.value)
        except ProbeError:
            return False, f"{spec.jsonPath}={excerpt(actual)} cannot be compared {spec.operator} {spec.value}"
        if not ok:
            return False, f"{spec.jsonPath}={excerpt(actual)}, want {spec.operator} {spec.value}"
    return True, f"status {status}"


CORRELATION_HEADER = "X-Correlation-ID"
TRACEPARENT_HEADER = "traceparent"


def request_headers(
    headers: Mapping[str, str], correlation_id: str | None, parent_span: str | None = None
) -> dict[str, str]:
    """The probe's headers plus the correlation headers of the run, unless the probe sets a header of that name
    (compared case-insensitively, as HTTP does); ``parent_span`` (the probe check's span, with tracing on) is the
    parent ID in ``traceparent``."""
    merged = dict(headers)
    if not correlation_id:
        return merged
    taken = {name.lower() for name in headers}
    if TRACEPARENT_HEADER not in taken:
        merged[TRACEPARENT_HEADER] = traceparent(correlation_id, parent_span)
    if CORRELATION_HEADER.lower() not in taken:
        merged[CORRELATION_HEADER] = correlation_id
    return merged


def refusal(url: str, denied: Sequence[IPNetwork], field: str = "http.url") -> ProbeRefused | None:
    """Pure: why a URL may not be requested before anything is resolved: its host is a denied IP literal."""
    try:
        host = URL(url).raw_host or ""
    except ValueError:  # COORDINATOR_PROMETHEUS_URL is the one URL no model has checked
        return ProbeRefused(field, f"{excerpt(url)!r} is not a URL")
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None  # a name: its addresses are checked when it is resolved
    network = denied_by(address, denied)
    if network is None:
        return None
    return ProbeRefused(field, str(AddressDenied(host, str(address), network)))


async def sample(
    session: aiohttp.ClientSession,
    spec: HttpProbe,
    limit_seconds: float,
    denied: Sequence[IPNetwork] = (),
    correlation_id: str | None = None,
    parent_span: str | None = None,
) -> Sample:
    """One request, with the correlation headers of the run ``correlation_id`` (see ``request_headers``).
    ProbeRefused (not a failed sample) when the address is denied or the request cannot be sent."""
    refused = refusal(spec.url, denied)
    if refused is not None:
        raise refused
    started = time.time()
    clock = time.perf_counter()
    try:
        async with session.request(
            spec.method,
            spec.url,
            headers=request_headers(spec.headers, correlation_id, parent_span),
            data=spec.body,
            timeout=aiohttp.ClientTimeout(total=limit_seconds, sock_connect=limit_seconds),
            allow_redirects=False,
        ) as resp:
            body = await resp.text(errors="replace")
            latency = (time.perf_counter() - clock) * 1000
            ok, observed = check_response(spec, resp.status, body)
    except AddressDenied as exc:
        raise ProbeRefused("http.url", str(exc)) from None
    except aiohttp.ConnectionTimeoutError:
        host = URL(spec.url)
        return Sample(
            ok=False,
            at=started,
            error=short(
                f"{spec.url} unreachable: no connection to {host.raw_host} port {host.port} within {limit_seconds:g}s"
            ),
            latency_ms=limit_seconds * 1000,
        )
    except TimeoutError:
        return Sample(
            ok=False, at=started, error=f"timed out after {limit_seconds:g}s", latency_ms=limit_seconds * 1000
        )
    except aiohttp.InvalidURL as exc:
        raise ProbeRefused("http.url", f"not a URL aiohttp can request: {short(str(exc), 120)}") from None
    except (aiohttp.ClientError, OSError, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        return Sample(ok=False, at=started, error=short(f"{spec.url} unreachable: {exc}"))
    except ValueError as exc:
        # The client refuses to build the request (a header it will not send): it never will, so no retry.
        raise ProbeRefused("http", f"the request cannot be sent: {short(str(exc), 120)}") from None
    except ProbeError as exc:
        return Sample(ok=False, at=started, error=short(str(exc)))
    return Sample(ok=ok, at=started, value=observed, error=None if ok else observed, latency_ms=latency)
