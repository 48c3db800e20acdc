"""The in-pod faults' real effect, measured on this machine in network namespaces the tests create.

Every test makes its own namespaces (``ctest-<random>-a``/``-b``, joined by a veth pair with addresses from
10.200.x.0/30 that exist only inside them) and deletes them afterwards; traffic flows only between the two.
The command lines are the ones ``coordinator.faults.inpod`` builds, run with ``ip netns exec`` exactly as the
agent runs them in a pod's network namespace. Container kill is checked in a PID namespace made with
``unshare``, which is what an ephemeral container with ``targetContainerName`` shares.

Needs root and iproute2, nftables, iputils-ping and stress-ng (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.faults.inpod import (
    ContainerKill,
    CpuStress,
    InPodFault,
    MemoryStress,
    NetworkBandwidth,
    NetworkDelay,
    NetworkLoss,
    NetworkPartition,
    TrafficScope,
    agent_script,
    apply_commands,
    revert_commands,
)
from coordinator.testing.waiting import wait_for

TOOLS = ("ip", "tc", "nft", "ping", "stress-ng", "unshare", "nsenter")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network and PID namespaces need root")


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing {', '.join(missing)}: .ci/run installs iproute2, nftables, iputils-ping, stress-ng"


def sh(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc


@dataclass(frozen=True)
class NetPair:
    """Two namespaces joined by a veth pair: ``a`` (10.200.n.1, device ``dev_a``) and ``b`` (10.200.n.2)."""

    a: str
    b: str
    dev_a: str
    addr_a: str
    addr_b: str

    def run(self, ns: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv, check=check, timeout=timeout)

    def run_all(self, ns: str, commands: list[list[str]]) -> None:
        for argv in commands:
            self.run(ns, *argv)

    def scope(self, **kwargs: object) -> TrafficScope:
        return TrafficScope(interface=self.dev_a, **kwargs)  # type: ignore[arg-type]

    def state(self) -> str:
        """Everything a fault could leave behind in ``a``: its qdiscs, filters and nftables tables."""
        return "\n".join(
            [
                self.run(self.a, "tc", "qdisc", "show").stdout,
                self.run(self.a, "tc", "filter", "show", "dev", self.dev_a).stdout,
                self.run(self.a, "nft", "list", "tables").stdout,
            ]
        )


def _new_namespace(made: list[str], suffix: str) -> str:
    name = f"ctest-{uuid.uuid4().hex[:6]}-{suffix}"
    sh("ip", "netns", "add", name)
    made.append(name)
    return name


@pytest.fixture
def netpair() -> Iterator[NetPair]:
    made: list[str] = []
    try:
        a = _new_namespace(made, "a")
        b = _new_namespace(made, "b")
        tag = a.split("-")[1]
        dev_a, dev_b = f"ctest{tag}a", f"ctest{tag}b"
        subnet = int(tag[:2], 16)
        addr_a, addr_b = f"10.200.{subnet}.1", f"10.200.{subnet}.2"
        sh("ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", "name", dev_b, "netns", b)
        for ns, dev, addr in ((a, dev_a, addr_a), (b, dev_b, addr_b)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield NetPair(a=a, b=b, dev_a=dev_a, addr_a=addr_a, addr_b=addr_b)
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            sh("ip", "netns", "del", ns, check=False)


# --- measuring --------------------------------------------------------------------------------------------------

# Run with ``ip netns exec``: "recv ADDR PORT" prints "ready", then {"bytes", "seconds"} from the first byte
# to the sender's close; "send ADDR PORT SECONDS" sends as fast as TCP lets it. A small send buffer keeps what
# is still queued at the close (and so the tail of the measurement) short.
_TCP = r"""
import json, socket, sys, time
role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "recv":
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(1)
    srv.settimeout(20)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(20)
    total, first, last = 0, None, None
    while chunk := conn.recv(1 << 16):
        now = time.monotonic()
        first = first or now
        last = now
        total += len(chunk)
    print(json.dumps({"bytes": total, "seconds": (last - first) if first else 0.0}), flush=True)
else:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    sock.connect((addr, port))
    payload = b"x" * (1 << 16)
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:
        sock.send(payload)
    sock.close()
"""


def throughput_bits(pair: NetPair, port: int = 5201, seconds: float = 1.0) -> float:
    """TCP goodput from ``a`` to ``b`` in bits per second, measured at the receiver."""
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", pair.b, sys.executable, "-c", _TCP, "recv", pair.addr_b, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "ready", receiver.stderr.read() if receiver.stderr else ""
        pair.run(pair.a, sys.executable, "-c", _TCP, "send", pair.addr_b, str(port), str(seconds))
        out, err = receiver.communicate(timeout=20)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    result = json.loads(out)
    assert result["seconds"] > 0, f"nothing measured: {out} {err}"
    return float(result["bytes"] * 8 / result["seconds"])


def ping_loss(pair: NetPair, count: int, interval: float = 0.005) -> float:
    """Percent of ``count`` pings from ``a`` to ``b`` that got no reply."""
    proc = pair.run(
        pair.a, "ping", "-q", "-n", "-c", str(count), "-i", str(interval), "-W", "1", pair.addr_b, check=False
    )
    match = re.search(r"(\d+) packets transmitted, (\d+) received", proc.stdout)
    assert match, f"ping printed no summary: {proc.stdout} {proc.stderr}"
    sent, received = int(match[1]), int(match[2])
    assert sent == count
    return 100.0 * (sent - received) / sent


def ping_rtt_ms(pair: NetPair, count: int = 10) -> float:
    proc = pair.run(pair.a, "ping", "-q", "-n", "-c", str(count), "-i", "0.05", pair.addr_b)
    match = re.search(r"= [\d.]+/([\d.]+)/", proc.stdout)
    assert match, proc.stdout
    return float(match[1])


def report(capsys: pytest.CaptureFixture[str], message: str) -> None:
    """Shown in the test output even when pytest captures it: these figures are what the tests prove."""
    with capsys.disabled():
        print(f"\n    [{message}]", end="")


# --- tc tbf ------------------------------------------------------------------------------------------------------

RATE = "8mbit"
RATE_BITS = 8e6


def test_bandwidth_is_capped_by_tbf_and_restored(netpair: NetPair, capsys: pytest.CaptureFixture[str]) -> None:
    fault = NetworkBandwidth(rate=RATE, scope=netpair.scope())
    before = throughput_bits(netpair)
    netpair.run_all(netpair.a, apply_commands(fault, "bw1"))
    capped = throughput_bits(netpair)
    netpair.run_all(netpair.a, revert_commands(fault, "bw1"))
    after = throughput_bits(netpair)
    report(
        capsys, f"tbf {RATE}: uncapped {before / 1e6:.0f} Mbit/s, capped {capped / 1e6:.2f}, after {after / 1e6:.0f}"
    )
    assert before > 10 * RATE_BITS
    assert 0.7 * RATE_BITS <= capped <= 1.3 * RATE_BITS
    assert after > 10 * RATE_BITS
    assert "tbf" not in netpair.state()


def test_bandwidth_limited_to_a_port_leaves_other_traffic_alone(
    netpair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    fault = NetworkBandwidth(rate=RATE, scope=netpair.scope(cidrs=(f"{netpair.addr_b}/32",), ports=(5201,)))
    original = netpair.state()
    netpair.run_all(netpair.a, apply_commands(fault, "bw2"))
    capped = throughput_bits(netpair, port=5201)
    other = throughput_bits(netpair, port=5202)
    netpair.run_all(netpair.a, revert_commands(fault, "bw2"))
    report(capsys, f"htb+u32+tbf {RATE} on :5201: {capped / 1e6:.2f} Mbit/s; :5202 {other / 1e6:.0f} Mbit/s")
    assert 0.7 * RATE_BITS <= capped <= 1.3 * RATE_BITS
    assert other > 10 * RATE_BITS
    assert netpair.state() == original


# --- nftables ----------------------------------------------------------------------------------------------------

LOSS_PERCENT = 30
PINGS = 300
# 300 pings at p = 0.3: the standard deviation of the loss is sqrt(0.3 * 0.7 / 300) = 2.6 %; 10 % is ~3.8 of
# them, so a correct rule fails this less than once in 5000 runs.
LOSS_TOLERANCE = 10.0


def test_loss_drops_the_configured_share_and_none_after_revert(
    netpair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    fault = NetworkLoss(percent=LOSS_PERCENT, scope=netpair.scope())
    original = netpair.state()
    netpair.run_all(netpair.a, apply_commands(fault, "loss1"))
    lossy = ping_loss(netpair, PINGS)
    netpair.run_all(netpair.a, revert_commands(fault, "loss1"))
    clean = ping_loss(netpair, 100)
    report(capsys, f"nftables numgen {LOSS_PERCENT}%: {lossy:.1f}% of {PINGS} pings lost; after revert {clean:.0f}%")
    assert abs(lossy - LOSS_PERCENT) <= LOSS_TOLERANCE
    assert clean == 0
    assert netpair.state() == original


def test_partition_drops_everything_then_works_after_revert(
    netpair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    fault = NetworkPartition(scope=netpair.scope(direction="both"))
    original = netpair.state()
    assert ping_loss(netpair, 20) == 0
    netpair.run_all(netpair.a, apply_commands(fault, "part1"))
    cut = ping_loss(netpair, 50)
    # Ingress too: b's pings to a get no answer either.
    inbound = netpair.run(netpair.b, "ping", "-q", "-c", "5", "-i", "0.01", "-W", "1", netpair.addr_a, check=False)
    netpair.run_all(netpair.a, revert_commands(fault, "part1"))
    restored = ping_loss(netpair, 20)
    report(capsys, f"partition: {cut:.0f}% lost; after revert {restored:.0f}%")
    assert cut == 100
    assert " 0 received" in inbound.stdout
    assert restored == 0
    assert netpair.state() == original


# --- the agent script ---------------------------------------------------------------------------------------------


def start_agent(pair: NetPair, fault: InPodFault, duration: int, fault_id: str) -> subprocess.Popen[str]:
    # ip netns exec execs the shell, so the Popen's pid is the agent's: signals go straight to it.
    return subprocess.Popen(
        ["ip", "netns", "exec", pair.a, "/bin/sh", "-c", agent_script(fault, duration, fault_id=fault_id)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda pair: NetworkLoss(percent=50, scope=pair.scope()),
        lambda pair: NetworkBandwidth(rate="1mbit", scope=pair.scope(ports=(80,))),
    ],
    ids=["nftables-loss", "tc-bandwidth"],
)
def test_agent_reverts_on_sigterm_mid_hold(netpair: NetPair, make: Callable[[NetPair], InPodFault]) -> None:
    fault = make(netpair)
    original = netpair.state()
    agent = start_agent(netpair, fault, 60, "term1")
    try:
        wait_for(lambda: netpair.state() != original, timeout=10, description="the agent applied the fault")
        time.sleep(0.3)  # well into the hold
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=10)
        stopped_in = time.monotonic() - started
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert agent.returncode == 143, err
    assert stopped_in < 3, "the hold must not outlast a SIGTERM"
    assert "reverted:" in err
    assert netpair.state() == original


def test_agent_ends_by_itself_after_the_duration(netpair: NetPair, capsys: pytest.CaptureFixture[str]) -> None:
    fault = NetworkPartition(scope=netpair.scope())
    original = netpair.state()
    started = time.monotonic()
    # 5 s, not 2: on a loaded host starting ping in the namespace took long enough that a 2 s partition ended
    # while it still counted (90 % lost instead of 100).
    agent = start_agent(netpair, fault, 5, "dms1")
    try:
        wait_for(lambda: netpair.state() != original, timeout=10, description="the partition applied")
        during = ping_loss(netpair, 10)
        _, err = agent.communicate(timeout=15)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    took = time.monotonic() - started
    report(capsys, f"agent partition for 5s: {during:.0f}% lost during, ended by itself after {took:.1f}s")
    assert agent.returncode == 0, err
    assert during == 100
    assert 5 <= took < 10
    assert netpair.state() == original
    assert ping_loss(netpair, 10) == 0


def _kernel_has_netem() -> tuple[bool, str]:
    """Ask the kernel in a scratch namespace, the way the agent would find out."""
    made: list[str] = []
    try:
        ns = _new_namespace(made, "probe")
        proc = sh(
            "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False
        )
        return proc.returncode == 0, (proc.stderr or proc.stdout).strip()
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def test_netem_delay_works_or_fails_cleanly_on_this_kernel(
    netpair: NetPair, capsys: pytest.CaptureFixture[str]
) -> None:
    supported, answer = _kernel_has_netem()
    fault = NetworkDelay(latency_ms=100, scope=netpair.scope())
    original = netpair.state()
    kernel = platform.release()
    if not supported:
        # This machine: no sch_netem. The agent must refuse with the reason and leave nothing behind.
        agent = start_agent(netpair, fault, 30, "netem1")
        _, err = agent.communicate(timeout=15)
        report(capsys, f"kernel {kernel} lacks sch_netem ({answer}): asserted the agent's clean failure")
        assert agent.returncode == 2, err
        assert "network-delay not applied: kernel lacks sch_netem" in err
        assert netpair.state() == original
        return
    # A kernel with netem (kind nodes, GitHub runners): the delay is there, and gone after a SIGTERM.
    base = ping_rtt_ms(netpair)
    agent = start_agent(netpair, fault, 30, "netem1")
    try:
        wait_for(lambda: netpair.state() != original, timeout=10, description="netem applied")
        delayed = ping_rtt_ms(netpair)
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=10)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    report(capsys, f"kernel {kernel} has sch_netem: RTT {base:.2f} ms -> {delayed:.1f} ms with 100 ms delay")
    assert delayed - base >= 90
    assert agent.returncode == 143, err
    assert netpair.state() == original


# --- stress ----------------------------------------------------------------------------------------------------

# Runs the agent as a child of a fresh interpreter and prints that interpreter's RUSAGE_CHILDREN: the agent's,
# stress-ng's and its workers' CPU time and the largest resident set among them, and nothing else's.
_RUSAGE = r"""
import json, resource, subprocess, sys, time
started = time.monotonic()
proc = subprocess.run(["/bin/sh", "-c", sys.argv[1]], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": proc.returncode, "err": proc.stderr, "wall": time.monotonic() - started,
                  "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}))
"""


def run_measured(fault: InPodFault, duration: int) -> dict[str, object]:
    proc = sh(sys.executable, "-c", _RUSAGE, agent_script(fault, duration, fault_id="stress"), timeout=duration + 30)
    result: dict[str, object] = json.loads(proc.stdout)
    assert result["rc"] == 0, result["err"]
    return result


def test_cpu_stress_consumes_the_configured_cpu_then_exits(capsys: pytest.CaptureFixture[str]) -> None:
    duration, load = 3, 80
    result = run_measured(CpuStress(workers=1, load_percent=load), duration)
    cpu, wall = float(result["cpu"]), float(result["wall"])  # type: ignore[arg-type]
    expected = duration * load / 100
    report(
        capsys,
        f"cpu-stress 1 worker at {load}% for {duration}s: {cpu:.2f} CPU-s (expected {expected:.1f}), wall {wall:.1f}s",
    )
    # stress-ng paces its load by wall time, so a busy machine (other test sessions) gives it less than asked.
    assert 0.5 * expected <= cpu <= 1.3 * expected
    assert duration <= wall < duration + 4


def test_memory_stress_holds_the_configured_memory(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_measured(MemoryStress(size="64m", workers=1), 2)
    peak = int(result["maxrss_kib"]) / 1024  # type: ignore[call-overload]
    report(capsys, f"memory-stress 64m: largest resident set {peak:.0f} MiB")
    assert peak >= 60


# --- container kill ----------------------------------------------------------------------------------------------

# The target container's main process: PID 1 of a new PID namespace, as a container's is. With a TERM handler
# (as most servers have) or without one (a bare sleep).
HANDLES_TERM = "trap 'exit 0' TERM; sleep 30 & wait"


def handles(pid: int, signum: int) -> bool:
    """Whether ``pid`` has a handler for ``signum`` (its SigCgt mask), as the agent checks."""
    caught = re.search(r"^SigCgt:\s*([0-9a-f]+)", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return bool(caught and int(caught[1], 16) >> (signum - 1) & 1)


@pytest.fixture
def pid_namespace() -> Iterator[Callable[[str], int]]:
    """Start ``sh -c SCRIPT`` as PID 1 of a fresh PID namespace; yields a starter returning its host pid."""
    started: list[subprocess.Popen[bytes]] = []

    def start(script: str) -> int:
        proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script])
        started.append(proc)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        return int(wait_for(lambda: children.read_text().split()[0], timeout=5, description="the namespace's PID 1"))

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def run_agent_in(init_pid: int, fault: ContainerKill) -> subprocess.CompletedProcess[str]:
    """The agent in the target's PID (and so /proc) namespace, as ``targetContainerName`` places it."""
    script = agent_script(fault, 30, fault_id="kill")
    return sh("nsenter", "--target", str(init_pid), "--pid", "--mount", "/bin/sh", "-c", script, check=False)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_container_kill_ends_a_main_process_that_handles_the_signal(pid_namespace: Callable[[str], int]) -> None:
    init = pid_namespace(HANDLES_TERM)
    wait_for(lambda: handles(init, signal.SIGTERM), timeout=5, description="PID 1's TERM handler installed")
    proc = run_agent_in(init, ContainerKill(container="app", signal="SIGTERM", grace_seconds=5))
    # PID 1 ended, so the kernel ended the whole namespace, the agent included: exactly what happens to the
    # ephemeral container when the target container dies.
    assert proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), proc.stderr
    assert "sending SIGTERM to app (pid 1" in proc.stderr
    wait_for(lambda: not alive(init), timeout=5, description="the target's main process gone")


@pytest.mark.parametrize(
    ("script", "sig", "reason"),
    [
        (HANDLES_TERM, "SIGKILL", "SIGKILL cannot reach app: its main process is PID 1 of its PID namespace"),
        ("sleep 30", "SIGTERM", "has no handler for SIGTERM"),
    ],
    ids=["sigkill", "unhandled-sigterm"],
)
def test_container_kill_says_why_pid_1_cannot_get_the_signal(
    pid_namespace: Callable[[str], int], script: str, sig: str, reason: str
) -> None:
    init = pid_namespace(script)
    if script == HANDLES_TERM:
        wait_for(lambda: handles(init, signal.SIGTERM), timeout=5, description="PID 1's TERM handler installed")
    else:
        wait_for(lambda: alive(init), timeout=5, description="PID 1 running")
    proc = run_agent_in(init, ContainerKill(container="app", signal=sig, grace_seconds=2))
    assert proc.returncode == 3, proc.stderr
    assert reason in proc.stderr
    assert alive(init)


def _writable_cgroup_root() -> Path:
    for candidate in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids"):
        root = Path(candidate)
        if (root / "cgroup.procs").exists() and os.access(root, os.W_OK):
            return root
    raise AssertionError("no writable cgroup hierarchy to place the stand-in container in")


def test_container_kill_in_a_shared_pid_namespace_finds_the_container_by_id(
    pid_namespace: Callable[[str], int],
) -> None:
    """shareProcessNamespace: PID 1 is pause; the target's main process is found by its container ID."""
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    bindir = Path(f"/tmp/ctest-{container_id[:6]}")
    bindir.mkdir()
    cgroup = _writable_cgroup_root() / f"ctest-cri-containerd-{container_id}.scope"
    cgroup.mkdir()
    target: subprocess.Popen[bytes] | None = None
    try:
        shutil.copy(shutil.which("sleep") or "/bin/sleep", bindir / "pause")
        init = pid_namespace(f"exec {bindir}/pause 30")
        wait_for(lambda: Path(f"/proc/{init}/comm").read_text().strip() == "pause", timeout=5)
        # The container's main process joins the namespace from outside, as the runtime starts it.
        target = subprocess.Popen(
            [
                "nsenter",
                "--target",
                str(init),
                "--pid",
                "--mount",
                "sh",
                "-c",
                f"echo $$ > {cgroup}/cgroup.procs && exec sleep 30",
            ]
        )
        children = Path(f"/proc/{target.pid}/task/{target.pid}/children")
        main = int(wait_for(lambda: children.read_text().split()[0], timeout=5, description="the container's process"))
        wait_for(lambda: container_id in Path(f"/proc/{main}/cgroup").read_text(), timeout=5)
        proc = run_agent_in(
            init, ContainerKill(container="app", signal="SIGKILL", container_id=f"containerd://{container_id}")
        )
        assert proc.returncode == 0, proc.stderr
        assert "sending SIGKILL to app (pid" in proc.stderr
        assert target.wait(timeout=5) == -signal.SIGKILL or not alive(main)
        assert alive(init), "pause must never be signalled"
    finally:
        if target is not None and target.poll() is None:
            target.kill()
            target.wait()
        wait_for(lambda: not (cgroup / "cgroup.procs").read_text().strip(), timeout=5)
        cgroup.rmdir()
        shutil.rmtree(bindir)
