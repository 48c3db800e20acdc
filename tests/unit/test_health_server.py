"""/healthz, /readyz and /metrics over a real aiohttp server on a loopback port, with fake dependencies."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import kopf
import pytest

from coordinator import __version__
from coordinator.adapters.kube import ApiError
from coordinator.observability.server import HealthService, start_server
from coordinator.settings import Settings
from support.fake_kube import FakeKube

PAYLOAD_KEYS = {"status", "service", "instance", "version", "environment", "timestamp", "leader", "uptimeSeconds"}


class Pingable:
    def __init__(self, result: Any = True, error: Exception | None = None, sync: bool = False) -> None:
        self.result, self.error, self.sync = result, error, sync

    def ping(self) -> Any:
        if self.sync:
            return self._answer()

        async def later() -> Any:
            return self._answer()

        return later()

    def _answer(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    runners = []
    session = aiohttp.ClientSession()

    async def start(memo: Any = None, leading: bool = True, **settings: Any) -> tuple[FakeKube, str]:
        kube = FakeKube()
        service = HealthService(
            Settings(instance_name="shard-a", environment="staging", **settings),
            kube,  # type: ignore[arg-type]
            memo,
            leading=lambda: leading,
            check_timeout=0.3,
        )
        port = _port()
        runners.append(await start_server(service, "127.0.0.1", port))
        return kube, f"http://127.0.0.1:{port}"

    start.session = session  # type: ignore[attr-defined]
    yield start
    await session.close()
    for runner in runners:
        await runner.cleanup()


async def _get(serve: Serve, url: str) -> tuple[int, Any]:
    async with serve.session.get(url) as resp:  # type: ignore[attr-defined]
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def test_healthz_is_the_health_payload(serve: Serve) -> None:
    _, url = await serve(leading=False)
    status, body = await _get(serve, f"{url}/healthz")
    assert status == 200
    assert set(body) == PAYLOAD_KEYS
    assert body["status"] == "ok"
    assert body["service"] == "test-coordinator"
    assert body["instance"] == "shard-a"
    assert body["version"] == __version__
    assert body["environment"] == "staging"
    assert body["timestamp"].endswith("Z")
    assert body["leader"] is False, "a standby is alive too"


async def test_readyz_with_nothing_but_the_api_server(serve: Serve) -> None:
    _, url = await serve()
    status, body = await _get(serve, f"{url}/readyz")
    assert status == 200
    assert set(body) == PAYLOAD_KEYS | {"checks"}
    assert body["checks"] == {
        "kubernetes": {"status": "ok", "detail": "v1.33.0"},
        "database": {"status": "disabled"},
        "redis": {"status": "disabled"},
    }


async def test_readyz_pings_database_and_redis_from_the_memo(serve: Serve) -> None:
    memo = kopf.Memo(history=Pingable(), redis=Pingable(sync=True))
    _, url = await serve(memo=memo)
    status, body = await _get(serve, f"{url}/readyz")
    assert status == 200
    assert body["checks"]["database"] == {"status": "ok"}
    assert body["checks"]["redis"] == {"status": "ok"}


async def test_a_dependency_without_ping_is_reported_unchecked(serve: Serve) -> None:
    memo = kopf.Memo(history=object())
    _, url = await serve(memo=memo)
    status, body = await _get(serve, f"{url}/readyz")
    assert status == 200
    assert body["checks"]["database"] == {"status": "unchecked", "detail": "object has no ping()"}


@pytest.mark.parametrize(
    ("memo", "failing"),
    [
        (kopf.Memo(history=Pingable(error=ConnectionRefusedError("db down"))), "database"),
        (kopf.Memo(redis=Pingable(result=False)), "redis"),
        (kopf.Memo(redis=Pingable(error=OSError("no route"), sync=True)), "redis"),
    ],
)
async def test_a_failing_dependency_makes_readyz_503(serve: Serve, memo: kopf.Memo, failing: str) -> None:
    _, url = await serve(memo=memo)
    status, body = await _get(serve, f"{url}/readyz")
    assert status == 503
    assert body["status"] == "fail"
    assert body["checks"][failing]["status"] == "fail"
    assert body["checks"]["kubernetes"]["status"] == "ok"


async def test_an_unreachable_api_server_makes_readyz_503(serve: Serve) -> None:
    kube, url = await serve()
    kube.fail(ApiError(503, "ServiceUnavailable", "etcd is down"), path="/version", times=None)
    status, body = await _get(serve, f"{url}/readyz")
    assert status == 503
    assert "etcd is down" in body["checks"]["kubernetes"]["detail"]
    kube.recover()
    kube.latency = 5  # real seconds: the answer is awaited through a real HTTP server and client
    status, body = await _get(serve, f"{url}/readyz")
    assert status == 503
    assert body["checks"]["kubernetes"]["detail"] == "no answer within 0.3s"
    status, _ = await _get(serve, f"{url}/healthz")
    assert status == 200, "liveness does not depend on the API server"


async def test_metrics_are_prometheus_text(serve: Serve) -> None:
    _, url = await serve()
    async with serve.session.get(f"{url}/metrics") as resp:  # type: ignore[attr-defined]
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    assert "# TYPE coordinator_testruns_total counter" in text


async def test_a_taken_port_fails_at_start_up(serve: Serve) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        service = HealthService(Settings(), FakeKube())  # type: ignore[arg-type]
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await start_server(service, "127.0.0.1", port)
