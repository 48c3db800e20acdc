"""The dashboard as a process (``coordinator dashboard``) and Debian's Chromium driven by Playwright, for the
browser tests. Screenshots go to .test-logs/screenshots/ (the test artefacts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coordinator.testing.process import free_port

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".test-logs" / "screenshots"
# As the machine's notes say: without the background-networking flags Chromium keeps dialling hosts this closed
# network refuses. Root needs --no-sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed (apt-get install chromium); make test installs it as root"
    return found


class DashboardProcess:
    """``coordinator dashboard`` on a free loopback port, with a kubeconfig and a history store."""

    def __init__(
        self, kubeconfig: Path, env: dict[str, str] | None = None, log: Path | None = None, args: Sequence[str] = ()
    ) -> None:
        self.kubeconfig = kubeconfig
        self.args = list(args)  # more options of `coordinator dashboard`, e.g. --token-login
        self.port = free_port()
        self.env = env or {}
        self.log = log or (REPO / ".test-logs" / f"dashboard-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator"), **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "coordinator.cli.main",
                    "dashboard",
                    "--port",
                    str(self.port),
                    "--kubeconfig",
                    str(self.kubeconfig),
                    *self.args,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the dashboard exited with {self.proc.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:  # noqa: S310 (loopback)
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the dashboard did not answer within {timeout}s: see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium under Playwright (sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot, kept as a test artefact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
