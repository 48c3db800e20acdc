"""What surrounds kopf in ``coordinator run``: health and metrics server, run observers, signals, leader election.

``run_operator`` uses it like this::

    async with Supervisor(settings, client, memo) as supervisor:
        if not await supervisor.lead():      # a standby waits here until it holds the lease (or is stopped)
            return supervisor.exit_code
        ...                                    # the sweeper and other leader-only tasks
        await kopf.operator(..., stop_flag=supervisor.stop_flag)
    return supervisor.exit_code

When leadership is lost, ``stop_flag`` is raised so kopf stops every daemon (the executor leaves a resumable
status), and the process exits with status 1 so Kubernetes restarts it as a standby. Should kopf not stop before
a standby may take the lease over, the process exits hard: the executor is crash-safe by design, two executors
on one run are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from types import TracebackType
from typing import Any

from aiohttp import web

from coordinator.adapters.kube import KubeClient
from coordinator.engine import observers
from coordinator.engine.leadership import LeaderElector
from coordinator.observability import metrics
from coordinator.observability.logs import RunLogger
from coordinator.observability.server import HealthService, start_server
from coordinator.observability.tracing import Tracing, start_tracing
from coordinator.settings import ConfigurationError, Settings

log = logging.getLogger("coordinator")


def default_identity() -> str:
    """This candidate's name in the Lease: the pod name in a cluster (hostname), plus a random suffix so that two
    processes on one machine never share an identity."""
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"


class Supervisor:
    """Owns the side services of one operator process; see the module docstring."""

    def __init__(self, settings: Settings, client: KubeClient, memo: Any = None, kubeconfig: str | None = None):
        self.settings = settings
        self.client = client
        self.memo = memo
        self.kubeconfig = kubeconfig
        self.stopping = asyncio.Event()  # SIGINT/SIGTERM while standing by
        self.stop_flag = asyncio.Event()  # tells kopf to stop (leadership lost)
        self.lost = False
        self.elector: LeaderElector | None = None
        self._election_client: KubeClient | None = None
        self._runner: web.AppRunner | None = None
        self._holder: asyncio.Task[None] | None = None
        self._observers: list[observers.RunObserver] = [metrics.MetricsObserver(), RunLogger()]
        self.tracing: Tracing | None = None

    @property
    def leading(self) -> bool:
        return self.elector.leader if self.elector is not None else not self.lost

    @property
    def exit_code(self) -> int:
        return 1 if self.lost else 0

    async def __aenter__(self) -> Supervisor:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        metrics.configure(instance=self.settings.instance_name)
        # OpenTelemetry's own variables (OTEL_EXPORTER_OTLP_ENDPOINT); unset, tracing is off and costs nothing.
        self.tracing = start_tracing(os.environ, self.settings.instance_name)
        for observer in self._observers:
            observers.register(observer)
        self._install_signals()
        if self.settings.metrics_port:
            address, port = self.settings.metrics_address, self.settings.metrics_port
            service = HealthService(self.settings, self.client, self.memo, leading=lambda: self.leading)
            try:
                self._runner = await start_server(service, address, port)
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot serve /metrics on {address}:{port} (COORDINATOR_METRICS_ADDRESS, "
                    f"COORDINATOR_METRICS_PORT): {exc.strerror or exc}"
                ) from exc
            log.info("serving /metrics, /healthz, /readyz on %s:%d", address, port)
        if self.settings.leader_election:
            # Its own connection: lease renewals never queue behind the executor's requests in the rate limiter.
            self._election_client = await KubeClient.connect(self.kubeconfig)
            self.elector = LeaderElector(
                self._election_client,
                namespace=self.settings.namespace,
                name=self.settings.lease_name,
                identity=self.settings.identity or default_identity(),
                lease_duration=self.settings.leader_election_lease_duration,
                renew_deadline=self.settings.leader_election_renew_deadline,
                retry_period=self.settings.leader_election_retry_period,
                on_change=metrics.set_leader,
            )
            metrics.set_leader(False)
        else:
            metrics.set_leader(True)

    async def lead(self) -> bool:
        """Return once this process may execute runs (True), or when it is stopped while standing by (False)."""
        if self.elector is None:
            return not self.stopping.is_set()
        if not await self.elector.acquire(self.stopping):
            return False
        self._holder = asyncio.create_task(self._hold(self.elector), name="leader-election")
        return True

    async def _hold(self, elector: LeaderElector) -> None:
        await elector.hold()
        self.lost = True
        self.stop_flag.set()
        # A standby may take over lease_duration after our last renewal; we noticed the loss renew_deadline after
        # it. Whatever still runs by then is cut off.
        grace = max(elector.lease_duration - elector.renew_deadline - elector.retry_period, 1.0)
        asyncio.get_running_loop().call_later(grace, _exit_hard)

    def operator_ready(self) -> None:
        """Call once kopf is ready. kopf replaced our SIGINT/SIGTERM handlers with its own when it started; take
        them back, so a signal stops kopf through ``stop_flag`` like a lost lease does (kopf otherwise leaves its
        stop-flag waiter hanging and spends 5 s waiting for it)."""
        self._install_signals()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        self.stopping.set()
        self.stop_flag.set()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._holder is not None:
            self._holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._holder
        if self.elector is not None and not self.lost:
            await self.elector.release()  # kopf has stopped: a standby may start at once
        if self._election_client is not None:
            await self._election_client.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.tracing is not None:
            await self.tracing.stop()
            self.tracing = None
        for observer in self._observers:
            observers.unregister(observer)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)


def _exit_hard() -> None:
    log.critical("leadership lost and the operator did not stop in time: exiting now")
    logging.shutdown()
    os._exit(1)
