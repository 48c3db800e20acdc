"""http probes: a request, its status code, body pattern or JSON value; latency recorded for every sample."""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp

from coordinator.api.probes import HttpProbe
from coordinator.probes.base import ProbeError, Sample, compare, lookup, short


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
        if not compare(actual, spec.operator, spec.value):
            return False, f"{spec.jsonPath}={short(actual, 60)}, want {spec.operator} {spec.value}"
    return True, f"status {status}"


async def sample(session: aiohttp.ClientSession, spec: HttpProbe, limit_seconds: float) -> Sample:
    started = time.time()
    clock = time.perf_counter()
    try:
        async with session.request(
            spec.method,
            spec.url,
            headers=spec.headers,
            data=spec.body,
            timeout=aiohttp.ClientTimeout(total=limit_seconds),
            allow_redirects=False,
        ) as resp:
            body = await resp.text(errors="replace")
            latency = (time.perf_counter() - clock) * 1000
            ok, observed = check_response(spec, resp.status, body)
    except TimeoutError:
        return Sample(
            ok=False, at=started, error=f"timed out after {limit_seconds:g}s", latency_ms=limit_seconds * 1000
        )
    except (aiohttp.ClientError, OSError, asyncio.CancelledError) as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        return Sample(ok=False, at=started, error=short(f"{spec.url} unreachable: {exc}"))
    except ProbeError as exc:
        return Sample(ok=False, at=started, error=short(str(exc)))
    return Sample(ok=ok, at=started, value=observed, error=None if ok else observed, latency_ms=latency)
