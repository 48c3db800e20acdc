"""A real webhook receiver: an aiohttp server on 127.0.0.1 (in a thread of its own) recording every POST."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class WebhookReceiver:
    """Answers POST /<anything> with the next status of ``answers[path]`` (the last one repeats; 200 when none)
    and records it. ``url(path)`` is where to send. Usable as a context manager (serving while inside)."""

    def __init__(self) -> None:
        self.answers: dict[str, list[int]] = {}
        self.received: list[Received] = []
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def on(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == f"/{path}"]

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.text() or "null")
        with self._lock:
            self.received.append(Received(request.path, dict(request.headers), body))
            count = sum(1 for r in self.received if r.path == request.path)
            answers = self.answers.get(request.path.lstrip("/")) or [200]
        return web.json_response({}, status=answers[min(count, len(answers)) - 1])

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
