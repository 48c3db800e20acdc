"""prometheus probes: a PromQL instant query whose single value is compared with a threshold."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from coordinator.api.probes import PrometheusProbe
from coordinator.domain.addresses import IPNetwork
from coordinator.domain.samples import ProbeError, Sample, compare
from coordinator.probes import http
from coordinator.probes.base import ProbeRefused, short
from coordinator.probes.reach import AddressDenied


def query_value(payload: dict[str, Any]) -> float:
    """Pure: the one number an instant query returned; ProbeError when it returned none, several, or an error."""
    if payload.get("status") != "success":
        raise ProbeError(f"query failed: {payload.get('errorType', '')} {payload.get('error', payload)}".strip())
    data = payload.get("data", {})
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return float(result[1])
    if data.get("resultType") == "vector":
        if not result:
            raise ProbeError("query returned no series")
        if len(result) > 1:
            raise ProbeError(f"query returned {len(result)} series; aggregate it to one (e.g. sum(...))")
        return float(result[0]["value"][1])
    raise ProbeError(f"unsupported result type {data.get('resultType')!r}")


async def sample(
    session: aiohttp.ClientSession,
    spec: PrometheusProbe,
    endpoint: str | None,
    limit_seconds: float,
    denied: Sequence[IPNetwork] = (),
) -> Sample:
    """One query. ProbeRefused (not a failed sample) when the endpoint's address is denied."""
    started = time.time()
    base = spec.endpoint or endpoint
    if not base:
        return Sample(
            ok=False, at=started, error="no Prometheus endpoint: set prometheus.endpoint or COORDINATOR_PROMETHEUS_URL"
        )
    field = "prometheus.endpoint" if spec.endpoint else "prometheus.endpoint (COORDINATOR_PROMETHEUS_URL)"
    refused = http.refusal(base, denied, field)
    if refused is not None:
        raise refused
    try:
        async with session.get(
            f"{base.rstrip('/')}/api/v1/query",
            params={"query": spec.query},
            timeout=aiohttp.ClientTimeout(total=limit_seconds),
        ) as resp:
            payload = await resp.json(content_type=None)
        value = query_value(payload)
    except AddressDenied as exc:
        raise ProbeRefused(field, str(exc)) from None
    except TimeoutError:
        return Sample(ok=False, at=started, error=f"timed out after {limit_seconds:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Sample(ok=False, at=started, error=short(f"{base} unreachable or not Prometheus: {exc}"))
    except ProbeError as exc:
        return Sample(ok=False, at=started, error=short(str(exc)))
    ok = compare(value, spec.operator, spec.threshold)
    observed = f"{value:g}"
    return Sample(
        ok=ok, at=started, value=observed, error=None if ok else f"{observed}, want {spec.operator} {spec.threshold:g}"
    )
