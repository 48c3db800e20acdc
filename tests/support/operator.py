"""The operator as a real process (``coordinator run``), so tests can SIGKILL and restart it like a crash."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from support.waiting import wait_for


class OperatorProcess:
    """One ``coordinator run`` process with its log in a file; start, kill -9, stop, restart."""

    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        env: dict[str, str] | None = None,
        namespaces: list[str] | None = None,
        args: list[str] | None = None,
        name: str = "operator",
        ready_text: str = "operator ready",
    ) -> None:
        """``ready_text``: the log text ``start`` waits for (a standby replica never logs "operator ready")."""
        self.kubeconfig = kubeconfig
        self.namespaces = namespaces or []
        self.log_dir = log_dir
        self.env = env or {}
        self.args = args or []
        self.name = name
        self.ready_text = ready_text
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    @property
    def metrics_url(self) -> str:
        """Base URL of the process's /metrics, /healthz and /readyz (a free loopback port per start)."""
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self) -> None:
        self.starts += 1
        self.metrics_port = int(self.env.get("COORDINATOR_METRICS_PORT") or _free_port())
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "COORDINATOR_SWEEP_INTERVAL": "2",
            "COORDINATOR_POLL_INTERVAL": "0.2",
            "COORDINATOR_METRICS_ADDRESS": "127.0.0.1",
            "COORDINATOR_METRICS_PORT": str(self.metrics_port),
            **self.env,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
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
        wait_for(self._watching, timeout=30, description="the operator to start watching")

    def _watching(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"operator exited with {self.proc.returncode}:\n{self.log_tail()}")
        text = self.log_path.read_text(errors="replace")
        return self.ready_text in text

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

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def restart_after_crash(self) -> None:
        self.kill()
        time.sleep(0)  # nothing to wait for: the new process must cope with whatever state is left
        self.start()


def _free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick), for the operator's metrics server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
