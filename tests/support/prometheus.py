"""A real Prometheus (Debian's package) on 127.0.0.1, scraping a test target, for prometheus probes."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

from coordinator.testing.process import free_port
from coordinator.testing.waiting import wait_for


class PrometheusServer:
    def __init__(self, workdir: Path, scrape_target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus); .ci/run installs it")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.target = scrape_target  # host:port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> dict[str, object]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own loopback server
            result: dict[str, object] = json.loads(resp.read())
        return result

    def __enter__(self) -> PrometheusServer:
        config = self.workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: ['{self.target}']\n"
        )
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: self.query('up{job="test"}').get("data", {}).get("result"),  # type: ignore[union-attr]
            timeout=60,
            description="Prometheus scraping the test target",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
