"""The HTTP side of the operator: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness).

Both health endpoints answer with the service's health payload::

    {"status": "ok", "service": "test-coordinator", "instance": "...", "version": "0.1.0",
     "environment": "production", "timestamp": "2025-01-01T00:00:00.000000Z", "leader": true, ...}

``/healthz`` only says the process and its event loop are alive (a restart would not help with anything else).
``/readyz`` also checks what the operator depends on: the Kubernetes API server, and the history database and
Redis when they are configured (``memo.history`` / ``memo.redis``, anything with a ``ping()``, sync or async; one
without ``ping()`` is reported ``unchecked``); it answers 503 when one of them fails. During a history outage
the database's detail explains it: refused (a person must fix the URL) or unreachable, since when, how many
finished runs wait, and when it is asked next (history/availability.py). A standby replica is ready too: it is healthy and takes over when the leader goes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from coordinator import __version__
from coordinator.adapters.kube import KubeClient
from coordinator.domain.timestamps import now_iso
from coordinator.observability import metrics
from coordinator.settings import Settings

CHECK_TIMEOUT = 2.0
DETAIL_LIMIT = 600  # characters of a failing check's detail (the history's explains cause, since, waiting runs)
# "disabled": a dependency that is not configured is neither healthy ("ok") nor broken.
OK, FAIL, NOT_CONFIGURED, UNCHECKED = "ok", "fail", "disabled", "unchecked"


class HealthService:
    """The three endpoints over the operator's state; ``leading`` tells whether this replica executes runs."""

    def __init__(
        self,
        settings: Settings,
        client: KubeClient,
        memo: Any = None,
        leading: Callable[[], bool] = lambda: True,
        check_timeout: float = CHECK_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.client = client
        self.memo = memo
        self.leading = leading
        self.check_timeout = check_timeout
        self.started = time.monotonic()

    def payload(self, status: str) -> dict[str, Any]:
        return {
            "status": status,
            "service": metrics.SERVICE,
            "instance": self.settings.instance_name,
            "version": __version__,
            "environment": self.settings.environment,
            "timestamp": now_iso(),
            "leader": self.leading(),
            "uptimeSeconds": round(time.monotonic() - self.started, 1),
        }

    async def _kubernetes(self) -> dict[str, str]:
        version = await self.client.get("/version")
        return {"status": OK, "detail": str(version.get("gitVersion", ""))}

    async def _ping(self, name: str) -> dict[str, str]:
        target = getattr(self.memo, name, None) if self.memo is not None else None
        if target is None:
            return {"status": NOT_CONFIGURED}
        ping = getattr(target, "ping", None)
        if not callable(ping):
            return {"status": UNCHECKED, "detail": f"{type(target).__name__} has no ping()"}
        result = ping()
        if inspect.isawaitable(result):
            result = await result
        if result is False:
            return {"status": FAIL, "detail": "ping returned false"}
        return {"status": OK}

    async def _check(self, probe: Callable[[], Any]) -> dict[str, str]:
        try:
            result: dict[str, str] = await asyncio.wait_for(probe(), timeout=self.check_timeout)
        except TimeoutError:
            return {"status": FAIL, "detail": f"no answer within {self.check_timeout:g}s"}
        except Exception as exc:  # any failure of a dependency is "not ready", never a 500
            return {"status": FAIL, "detail": f"{type(exc).__name__}: {exc}"[:DETAIL_LIMIT]}
        return result

    async def checks(self) -> dict[str, dict[str, str]]:
        names = ("kubernetes", "database", "redis")
        results = await asyncio.gather(
            self._check(self._kubernetes),
            self._check(lambda: self._ping("history")),
            self._check(lambda: self._ping("redis")),
        )
        return dict(zip(names, results, strict=True))

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response(self.payload(OK))

    async def readyz(self, _: web.Request) -> web.Response:
        checks = await self.checks()
        ready = all(check["status"] != FAIL for check in checks.values())
        body = {**self.payload(OK if ready else FAIL), "checks": checks}
        return web.json_response(body, status=200 if ready else 503)

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.CONTENT_TYPE})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        return app


async def start_server(service: HealthService, host: str, port: int) -> web.AppRunner:
    """Serve ``service`` on ``host:port``; the caller stops it with ``await runner.cleanup()``.

    A port that cannot be bound raises ``OSError`` here, at start-up, rather than leaving the operator unprobeable.
    """
    runner = web.AppRunner(service.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
