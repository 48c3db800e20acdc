"""http-fault's agent on this machine: the script ``agent_script`` renders, with the real nftables redirect and the
real proxy, in two network namespaces the test makes (a "pod" running an HTTP server bound to its own address,
and a "client", joined by a veth pair).

The namespaces are held by ``unshare --net`` processes, never ``ip netns add`` (docs/real-node.md: that would turn
/run/netns into a bind mount under a running real node). The agent runs the proxy from this checkout with this
interpreter (which has h11) instead of the image's ``python3 /opt/coordinator-agent/http_fault.py``.
Needs root, nftables, iproute2 and util-linux (unshare, nsenter).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.faults.inpod import HttpFault
from coordinator.faults.inpod.agent import render_script
from coordinator.faults.inpod.commands import build_commands
from coordinator.faults.inpod.http import proxy_port
from coordinator.faults.inpod.programs import http_fault as program
from coordinator.testing.waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

PORT = 8080


@dataclass
class Pair:
    pod: int  # PIDs holding the namespaces
    client: int
    pod_ip: str

    def run(self, pid: int, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return proc

    def statuses(self, count: int, path: str = "/") -> list[str]:
        """``count`` GETs from the client, each on a new connection: the status, or "reset"/"error"."""
        code = (
            "import sys, urllib.request, urllib.error\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    try:\n"
            "        with urllib.request.urlopen(sys.argv[1], timeout=5) as r: r.read(); print(r.status)\n"
            "    except urllib.error.HTTPError as e: print(e.code)\n"
            "    except ConnectionResetError: print('reset')\n"
            "    except Exception as e: print('error', type(e).__name__)\n"
        )
        url = f"http://{self.pod_ip}:{PORT}{path}"
        return self.run(self.client, sys.executable, "-c", code, url, str(count)).stdout.split("\n")[:-1]

    def tables(self) -> str:
        return self.run(self.pod, "nft", "list", "tables").stdout


@pytest.fixture
def pair() -> Iterator[Pair]:
    missing = [tool for tool in ("nft", "ip", "unshare", "nsenter") if shutil.which(tool) is None]
    assert not missing, f"missing {', '.join(missing)}"
    holders = [subprocess.Popen(["unshare", "--net", "sleep", "600"]) for _ in range(2)]
    server: subprocess.Popen[bytes] | None = None
    try:
        pod, client = (h.pid for h in holders)
        tag = uuid.uuid4().hex[:6]
        subnet = int(tag[:2], 16)
        pod_ip, client_ip = f"10.201.{subnet}.1", f"10.201.{subnet}.2"
        for pid in (pod, client):  # the namespace exists once unshare has exec'd sleep
            wait_for(lambda p=pid: os.readlink(f"/proc/{p}/ns/net") != os.readlink("/proc/self/ns/net"), timeout=5)
        dev_pod, dev_client = f"hf{tag}p", f"hf{tag}c"
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                dev_pod,
                "netns",
                str(pod),
                "type",
                "veth",
                "peer",
                "name",
                dev_client,
                "netns",
                str(client),
            ],
            check=True,
        )
        result = Pair(pod, client, pod_ip)
        for pid, dev, addr in ((pod, dev_pod, pod_ip), (client, dev_client, client_ip)):
            result.run(pid, "ip", "addr", "add", f"{addr}/30", "dev", dev)
            result.run(pid, "ip", "link", "set", dev, "up")
            result.run(pid, "ip", "link", "set", "lo", "up")
        # The application listens on the pod's address only, as an app bound to its pod IP does.
        server = subprocess.Popen(
            ["nsenter", "-t", str(pod), "-n", sys.executable, "-m", "http.server", str(PORT), "--bind", pod_ip],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: result.statuses(1) == ["200"], timeout=10, description="the application answering")
        yield result
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for holder in holders:  # the namespaces, and the veth pair with them, go with their last process
            holder.kill()
            holder.wait()
        for ready in Path("/tmp").glob("coordinator-hfe2e*.ready"):  # the agents' ready files (the host's /tmp)
            ready.unlink()


def start_agent(pair: Pair, fault: HttpFault, duration: int, fault_id: str) -> subprocess.Popen[str]:
    commands = build_commands(fault, fault_id, duration)
    assert commands.hold is not None
    local = dataclasses.replace(commands, hold=[sys.executable, program.__file__, *commands.hold[2:]])
    script = render_script(local, duration)
    return subprocess.Popen(
        ["nsenter", "-t", str(pair.pod), "-n", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_holding(agent: subprocess.Popen[str]) -> list[str]:
    """The agent's lines up to "holding" (it says so once the proxy listens and the redirect is in place)."""
    assert agent.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = agent.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if line.startswith("coordinator-agent: holding"):
            return lines
    raise AssertionError("the agent never said it holds the fault:\n" + "\n".join(lines))


def finish(agent: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    out, _ = agent.communicate(timeout=timeout)
    return agent.returncode, out


def test_abort_holds_then_the_agent_removes_the_redirect_at_the_duration(pair: Pair) -> None:
    agent = start_agent(pair, HttpFault(PORT, {"abort": {"statusCode": 503}}, percent=50), 6, "hfe2e1")
    log = wait_holding(agent)
    assert "coordinator_hfe2e1" in pair.tables()
    assert any("listening on port" in line for line in log), "the proxy listened before the redirect was applied"
    statuses = pair.statuses(100)
    aborted = statuses.count("503")
    assert 30 <= aborted <= 70, f"50 % requested: {aborted} of 100"
    assert statuses.count("200") + aborted == 100, statuses
    code, out = finish(agent)
    assert code == 0, out
    assert "coordinator_hfe2e1" not in pair.tables()
    assert "100 requests, 100 matched" in out
    assert pair.statuses(20) == ["200"] * 20


def test_the_agent_reverts_on_sigterm_mid_hold(pair: Pair) -> None:
    agent = start_agent(pair, HttpFault(PORT, {"abort": {"reset": True}}), 120, "hfe2e2")
    wait_holding(agent)
    assert set(pair.statuses(5)) == {"reset"}
    agent.send_signal(signal.SIGTERM)
    code, out = finish(agent)
    assert code == 143, out
    assert "coordinator_hfe2e2" not in pair.tables()
    assert pair.statuses(5) == ["200"] * 5


def test_a_tls_handshake_ends_the_fault_with_a_reason(pair: Pair) -> None:
    agent = start_agent(pair, HttpFault(PORT, {"delay": {"delayMs": 10}}), 120, "hfe2e3")
    wait_holding(agent)
    hello = "import socket, sys; s = socket.create_connection((sys.argv[1], 8080)); s.sendall(b'\\x16\\x03\\x01\\x00\\x05hello'); s.recv(10)"
    pair.run(pair.client, sys.executable, "-c", hello, pair.pod_ip, check=False)
    code, out = finish(agent)
    assert code == 2, out
    assert "a TLS handshake arrived on port 8080" in out
    assert "coordinator_hfe2e3" not in pair.tables()
    assert pair.statuses(3) == ["200"] * 3


def test_a_proxy_that_cannot_listen_leaves_no_redirect(pair: Pair) -> None:
    taken = proxy_port("hfe2e4", PORT)
    blocker = subprocess.Popen(
        ["nsenter", "-t", str(pair.pod), "-n", sys.executable, "-m", "http.server", str(taken)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: f":{taken}" in pair.run(pair.pod, "ss", "-ltn", check=False).stdout,
            timeout=10,
            description="the proxy's port taken",
        )
        code, out = finish(start_agent(pair, HttpFault(PORT, {"abort": {"statusCode": 500}}), 30, "hfe2e4"))
    finally:
        blocker.kill()
        blocker.wait()
    assert code == 2, out
    assert f"cannot listen on port {taken}" in out
    assert "exited with status 2 before it was ready" in out
    assert "holding" not in out
    assert "coordinator_hfe2e4" not in pair.tables()
    assert not Path("/tmp/coordinator-hfe2e4.ready").exists()
