"""The sample web workload (image test-coordinator-web): a standard-library HTTP server that remembers what it served.

    GET  /                   200, this pod's host name: which replica answered
    GET  /healthz            200 while the process runs (liveness)
    GET  /readyz             200 while ready; 503 after POST /fail-readiness and from SIGTERM on
    POST /fail-readiness     readiness fails until POST /restore-readiness
    GET  /served             JSON {"hostname", "count", "requests"}: how many requests were served and the last
                             SERVED_HISTORY of them, oldest first, each {"method", "path", "client", "port",
                             "status", "time"}; a read of /served is itself not counted
    GET  /bytes?n=N          N bytes (at most 1 GiB), streamed: a bandwidth probe
    GET  /metrics            Prometheus text: web_requests_served_total, web_ready (not counted as served)
    GET  /time               this process's clock: time.time() as text (the clock-skew fault's real-node test; not
                             counted as served)

Environment: PORT (8080), SERVED_HISTORY (1000), SHUTDOWN_DELAY (seconds to keep serving after SIGTERM, 0).
SIGTERM and SIGINT stop it within SHUTDOWN_DELAY plus a fraction of a second, exit status 0.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BYTES = 1 << 30
CHUNK = bytes(64 * 1024)


class Served:
    """What the server has answered: a count and the most recent requests, shared by the handler threads."""

    def __init__(self, history: int) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._recent: deque[dict[str, Any]] = deque(maxlen=history)
        self.ready = True

    def record(self, method: str, path: str, client: tuple[str, int], status: int) -> None:
        entry = {
            "method": method,
            "path": path,
            "client": client[0],
            "port": client[1],
            "status": status,
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        with self._lock:
            self._count += 1
            self._recent.append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"hostname": socket.gethostname(), "count": self._count, "requests": list(self._recent)}


class WebServer(ThreadingHTTPServer):
    daemon_threads = True  # open keep-alive connections must not hold the process after SIGTERM
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], served: Served) -> None:
        super().__init__(address, Handler)
        self.served = served


class Handler(BaseHTTPRequestHandler):
    server_version = "test-coordinator-web/0.1"
    protocol_version = "HTTP/1.1"

    @property
    def served(self) -> Served:
        assert isinstance(self.server, WebServer)
        return self.server.served

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._reply(HTTPStatus.OK, socket.gethostname() + "\n")
        elif url.path == "/healthz":
            self._reply(HTTPStatus.OK, "ok\n")
        elif url.path == "/readyz":
            ready = self.served.ready
            self._reply(
                HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, "ready\n" if ready else "not ready\n"
            )
        elif url.path == "/served":
            self._reply(HTTPStatus.OK, json.dumps(self.served.snapshot()) + "\n", "application/json", record=False)
        elif url.path == "/bytes":
            self._stream_bytes(parse_qs(url.query).get("n", ["0"])[0])
        elif url.path == "/time":
            # time.time() reads CLOCK_REALTIME through the vDSO: what a clock-skew fault shifts in this process.
            self._reply(HTTPStatus.OK, f"{time.time():.3f}\n", record=False)
        elif url.path == "/metrics":
            self._reply(HTTPStatus.OK, self._metrics(), "text/plain; version=0.0.4", record=False)
        else:
            self._reply(HTTPStatus.NOT_FOUND, "not found\n")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path = urlsplit(self.path).path
        if path in ("/fail-readiness", "/restore-readiness"):
            self.served.ready = path == "/restore-readiness"
            self._reply(HTTPStatus.OK, "ready\n" if self.served.ready else "not ready\n")
        else:
            self._reply(HTTPStatus.NOT_FOUND, "not found\n")

    def _metrics(self) -> str:
        """Prometheus text format: what a prometheus probe reads from a real pod."""
        snapshot = self.served.snapshot()
        return (
            "# HELP web_requests_served_total Requests this server answered (reads of /served and /metrics excluded).\n"
            "# TYPE web_requests_served_total counter\n"
            f"web_requests_served_total {snapshot['count']}\n"
            "# HELP web_ready Whether /readyz answers 200.\n"
            "# TYPE web_ready gauge\n"
            f"web_ready {1 if self.served.ready else 0}\n"
        )

    def _reply(self, status: HTTPStatus, body: str, content_type: str = "text/plain", *, record: bool = True) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if record:
            self.served.record(self.command, self.path, self.client_address, status)

    def _stream_bytes(self, raw: str) -> None:
        try:
            total = int(raw)
        except ValueError:
            total = -1
        if not 0 <= total <= MAX_BYTES:
            self._reply(HTTPStatus.BAD_REQUEST, f"n must be an integer from 0 to {MAX_BYTES}\n")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(total))
        self.end_headers()
        left = total
        try:
            while left > 0:
                self.wfile.write(CHUNK[: min(left, len(CHUNK))])
                left -= len(CHUNK)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        self.served.record(self.command, self.path, self.client_address, HTTPStatus.OK)

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.address_string()} {format % args}", flush=True)


def main() -> int:
    port = int(os.environ.get("PORT", "8080"))
    delay = float(os.environ.get("SHUTDOWN_DELAY", "0"))
    served = Served(int(os.environ.get("SERVED_HISTORY", "1000")))
    server = WebServer(("0.0.0.0", port), served)  # noqa: S104 - a pod serves on all its interfaces

    def stop(signum: int, _frame: FrameType | None) -> None:
        served.ready = False
        print(f"signal {signal.Signals(signum).name}: stopping in {delay:g}s", flush=True)

        def shut_down() -> None:
            time.sleep(delay)
            server.shutdown()

        threading.Thread(target=shut_down, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"serving on :{port} as {socket.gethostname()} (uid {os.getuid()})", flush=True)
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
