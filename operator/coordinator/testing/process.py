"""The operator as a real process (``coordinator run``): tests SIGKILL and restart it like a crash, the demo and
the benchmarks run it as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from coordinator.testing.waiting import wait_for

READY_TEXT = "operator ready"  # what `coordinator run` logs once it serves (cli/run.py)

# The test tiers' intervals: what a test waits for (a sweep, a poll of a run's progress) comes within seconds. The
# demo and the benchmarks run with the operator's defaults, as a user would.
TEST_INTERVALS = {"COORDINATOR_SWEEP_INTERVAL": "2", "COORDINATOR_POLL_INTERVAL": "0.2"}


def webhook_port_for(kubeconfig: Path) -> int:
    """The admission webhook port of every operator process run against the cluster of ``kubeconfig``: its API
    server's port - 7000 (9443, the default, for the default cluster at 16443; clusters side by side differ by
    their port offset).

    One port per cluster, shared by all its local operator processes of the default namespace (kopf listens with
    SO_REUSEPORT), which also share one certificate and one webhook configuration (per operator namespace): the
    configuration left by an operator that has stopped still reaches one that runs.
    """
    config = yaml.safe_load(kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    port = server.port or 443
    return port - 7000 if port > 8000 else free_port()


class OperatorExited(RuntimeError):
    """The operator process ended when it should be running; the message ends with its log's last lines."""


class OperatorProcess:
    """One ``coordinator run`` process with its log in a file: start, kill -9, stop, restart.

    The process gets this process's environment, then ``KUBECONFIG``, a metrics server on a free loopback port
    (``metrics_url``), ``intervals`` (the test tiers' :data:`TEST_INTERVALS` unless given; ``{}`` runs with the
    operator's defaults) and ``env``; ``namespaces`` and ``args`` go on its command line. Each start writes a log
    of its own in ``log_dir``: ``<name>.log``, then ``<name>-2.log`` after a restart.
    """

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        namespaces: Sequence[str] | None = None,
        args: Sequence[str] | None = None,
        name: str = "operator",
        ready_text: str = READY_TEXT,
        intervals: Mapping[str, str] = TEST_INTERVALS,
    ) -> None:
        """``ready_text``: the log text ``start`` waits for (a standby replica never logs "operator ready")."""
        self.kubeconfig = kubeconfig
        self.namespaces = list(namespaces or [])
        self.log_dir = log_dir
        self.env = dict(env or {})
        self.args = list(args or [])
        self.name = name
        self.ready_text = ready_text
        self.intervals = dict(intervals)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = 0
        # The operators of the default namespace share one webhook port and certificate; one in a namespace of
        # its own has its own certificate, so it gets a port of its own.
        shared = self.env.get("COORDINATOR_NAMESPACE", "test-coordinator") == "test-coordinator"
        default_port = webhook_port_for(kubeconfig) if shared else free_port()
        self.webhook_port = int(self.env.get("COORDINATOR_WEBHOOK_PORT") or default_port)

    @property
    def log_path(self) -> Path:
        return self.log_dir / (f"{self.name}.log" if self.starts <= 1 else f"{self.name}-{self.starts}.log")

    @property
    def metrics_url(self) -> str:
        """Base URL of the process's /metrics, /healthz and /readyz (a free loopback port per start)."""
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout: float = 30) -> None:
        """Start the process and wait (up to ``timeout`` seconds) until its log shows ``ready_text``.

        Raises:
            OperatorExited: the process ended before it was ready.
            WaitTimeout: it was not ready in time.
        """
        self.starts += 1
        self.metrics_port = int(self.env.get("COORDINATOR_METRICS_PORT") or free_port())
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "COORDINATOR_METRICS_ADDRESS": "127.0.0.1",
            "COORDINATOR_METRICS_PORT": str(self.metrics_port),
            "COORDINATOR_WEBHOOK_PORT": str(self.webhook_port),
            **self.intervals,
            **self.env,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "coordinator.cli.main",
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    *(f"--namespace={ns}" for ns in self.namespaces),
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        wait_for(self._ready, timeout=timeout, description=f"the operator to log {self.ready_text!r}")

    def _ready(self) -> bool:
        self.check_alive()
        return self.ready_text in self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise :class:`OperatorExited` if the process has ended."""
        if self.proc is not None and self.proc.poll() is not None:
            raise OperatorExited(
                f"the operator exited with code {self.proc.returncode}; its log ends:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful stop — what a crash or an OOM kill looks like."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        """SIGINT (kopf's graceful stop), then SIGKILL if it does not exit within 20 s; the exit code (None when
        it was never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def restart_after_crash(self) -> None:
        """SIGKILL, then start at once: the new process must cope with whatever state is left."""
        self.kill()
        self.start()


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick) on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
