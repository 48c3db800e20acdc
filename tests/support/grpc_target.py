"""A real gRPC server on 127.0.0.1 serving grpcio's standard health service (grpc.health.v1), plaintext or TLS with
a CA made for the test; a test switches each service between SERVING and NOT_SERVING and reads what was asked."""

from __future__ import annotations

import threading
import uuid
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from coordinator.adapters.certificates import KeyPair, issue_serving, new_authority

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class RecordingHealth(health.HealthServicer):
    """The standard health servicer, counting the Check calls and keeping each one's metadata."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.metadata: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> Any:
        with self._lock:
            self.checks += 1
            self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        return super().Check(request, context)


class GrpcTarget:
    """Serves until the block ends. ``hosts``: the names and addresses its certificate covers (with ``tls``)."""

    def __init__(self, *, tls: bool = False, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> None:
        self.health = RecordingHealth()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.authority: KeyPair | None = None
        if tls:
            now = datetime.now(UTC)
            self.authority = new_authority(f"grpc-target-test-ca-{uuid.uuid4().hex[:8]}", now)
            pair = issue_serving(self.authority, list(hosts), now)
            credentials = grpc.ssl_server_credentials([(pair.key, pair.cert)])
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        else:
            self.port = self.server.add_insecure_port("127.0.0.1:0")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_cert(self) -> str:
        assert self.authority is not None, "a plaintext target has no CA"
        return self.authority.cert.decode()

    def set(self, service: str, status: Any) -> None:
        """The status Check answers for ``service`` ("" is the server as a whole)."""
        self.health.set(service, status)

    def __enter__(self) -> GrpcTarget:
        self.server.start()
        self.set("", SERVING)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(grace=None)
