"""A real HTTP server on 127.0.0.1 whose behaviour a test switches: healthy, failing, flapping, slow."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiohttp import web


class HttpTarget:
    """``mode``: "ok" (200), "fail" (500), "flap" (alternating 200/500), "slow" (200 after ``delay`` seconds)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.2
        self.requests = 0
        self.failing_since: float | None = None
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with target._lock:
                    target.requests += 1
                    count = target.requests
                    mode = target.mode
                if self.path == "/metrics":
                    body = f"test_up 1\ntest_requests_total {count}\n".encode()
                    status = 200
                elif mode == "fail" or (mode == "flap" and count % 2 == 0):
                    body, status = b'{"ok": false}', 500
                else:
                    if mode == "slow":
                        time.sleep(target.delay)
                    body, status = b'{"ok": true, "items": [{"name": "a"}]}', 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self.mode = mode
            self.failing_since = time.time() if mode == "fail" else None

    def __enter__(self) -> HttpTarget:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class RecordingServer:
    """An aiohttp server on 127.0.0.1 (a free port) that answers GET / with 200 and records each request's
    headers; each response closes its connection, so every request resolves and dials anew (no pooling)."""

    def __init__(self) -> None:
        self.requests = 0
        self.headers: list[dict[str, str]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.headers.append(dict(request.headers))
        return web.json_response({"ok": True}, headers={"Connection": "close"})


@contextlib.asynccontextmanager
async def recording_server() -> AsyncIterator[RecordingServer]:
    """A :class:`RecordingServer`, serving until the block ends."""
    found = RecordingServer()
    app = web.Application()
    app.router.add_get("/", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    try:
        yield found
    finally:
        await runner.cleanup()
