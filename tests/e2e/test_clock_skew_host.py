"""clock-skew on this machine: the tracer built from hack/agent/clock-skew/clock-skew.c, run by the agent script that
``coordinator.faults.inpod`` renders, against a Python process that prints ``time.time()`` (CLOCK_REALTIME through
the vDSO). The target sits in a cgroup the test creates, named after a made-up container ID, which is how the
tracer finds a container's processes in a pod. Needs root, gcc and a cgroup hierarchy it may create a group in.
"""

from __future__ import annotations

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

from coordinator.faults.inpod import ClockSkew, agent_script, revert_script
from coordinator.faults.inpod.clock_skew import TRACER
from coordinator.testing.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "hack" / "agent" / "clock-skew" / "clock-skew.c"
TICKER = "import time\nwhile True:\n    print(f'{time.time():.3f}', flush=True)\n    time.sleep(0.1)\n"
FID = "c10c5e3e00"


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert os.geteuid() == 0, "ptrace of another process and a cgroup of its own need root"
    assert shutil.which("gcc"), "gcc builds the tracer (the Dockerfile's clock-skew-build stage does the same)"
    assert os.uname().machine == "x86_64", "the tracer patches x86-64 code"
    bin_dir = tmp_path_factory.mktemp("clock-skew-bin")
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-static", "-o", str(bin_dir / TRACER), str(SOURCE)],
        check=True,
        capture_output=True,
        text=True,
    )
    return bin_dir


@dataclass
class Target:
    container_id: str
    proc: subprocess.Popen[str]
    output: Path

    def offset(self) -> float:
        """How far the target's latest printed time is from ours."""
        lines = self.output.read_text().split()
        before = len(lines)
        wait_for(lambda: len(self.output.read_text().split()) > before, timeout=5, description="a new tick")
        return float(self.output.read_text().split()[-1]) - time.time()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    v1 = Path("/sys/fs/cgroup/pids")
    group = (v1 if v1.is_dir() else Path("/sys/fs/cgroup")) / f"ctest-{container_id}"
    group.mkdir()
    output = tmp_path / "ticks"
    with output.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-c", TICKER], stdout=out, text=True)
    try:
        (group / "cgroup.procs").write_text(str(proc.pid))
        wait_for(lambda: output.read_text().strip(), timeout=10, description="the target's first tick")
        yield Target(container_id, proc, output)
    finally:
        proc.kill()
        proc.wait()
        wait_for(lambda: not (group / "cgroup.procs").read_text().strip(), timeout=10, description="empty group")
        group.rmdir()


def _agent(tools: Path, script: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    with log.open("w") as err:
        return subprocess.Popen(["/bin/sh", "-c", script], stderr=err, env=env, start_new_session=True)


def test_the_agent_skews_the_running_process_then_restores_it(tools: Path, target: Target, tmp_path: Path) -> None:
    assert abs(target.offset()) < 1
    log = tmp_path / "agent.log"
    agent = _agent(tools, agent_script(ClockSkew("app", 3600, target.container_id), 3, fault_id=FID), log)
    wait_for(lambda: "coordinator-agent: holding" in log.read_text(), timeout=10, description="the agent holding")
    held = target.offset()
    assert abs(held - 3600) < 1, f"+3600 s asked, the target reads {held:+.1f} s"
    assert agent.wait(timeout=15) == 0, log.read_text()
    after = target.offset()
    assert abs(after) < 1, f"after the revert the target reads {after:+.1f} s"
    text = log.read_text()
    assert "skewed 1 processes by +3600s" in text, text
    assert f"pid {target.proc.pid} " in text
    assert "original (restored, verified)" in text, text


def test_a_killed_agent_leaves_a_skew_that_ends_at_its_deadline(tools: Path, target: Target, tmp_path: Path) -> None:
    fault = ClockSkew("app", -86400, target.container_id)
    log = tmp_path / "agent.log"
    agent = _agent(tools, agent_script(fault, 1, fault_id=FID), log)
    wait_for(lambda: "coordinator-agent: holding" in log.read_text(), timeout=10, description="the agent holding")
    applied = time.time()
    os.killpg(agent.pid, signal.SIGKILL)
    agent.wait()
    assert abs(target.offset() + 86400) < 1, "the skew outlives the agent"
    # The patch's own deadline: 1 s of hold + 5 s after the tracer ran.
    cleared = wait_for(
        lambda: time.time() if abs(target.offset()) < 1 else None, timeout=15, description="the skew's end"
    )
    assert 5 <= cleared - applied <= 7.5, f"the skew ended {cleared - applied:.1f} s after the apply"
    assert "reverted:" not in log.read_text(), "nothing reverted it: the agent was killed"
    # A revert long after (the operator's revert container) finds the expired patch and removes it.
    revert = subprocess.run(
        ["/bin/sh", "-c", revert_script(fault, fault_id=FID)],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"},
        timeout=30,
    )
    assert revert.returncode == 0, revert.stderr
    assert "original (restored, verified)" in revert.stderr
    # Another fault's id restores nothing of this one (and says so).
    again = _agent(tools, agent_script(fault, 30, fault_id=FID), tmp_path / "again.log")
    wait_for(lambda: "holding" in (tmp_path / "again.log").read_text(), timeout=10, description="holding again")
    other = subprocess.run(
        ["/bin/sh", "-c", revert_script(fault, fault_id="0000000000")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"},
        timeout=30,
    )
    assert "holds another fault's skew" in other.stderr, other.stderr
    assert abs(target.offset() + 86400) < 1, "another fault's revert left this skew in place"
    os.killpg(again.pid, signal.SIGTERM)
    assert again.wait(timeout=15) == 143
    assert abs(target.offset()) < 1, "SIGTERM reverted"


def test_no_process_of_the_container_is_not_applied(tools: Path, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    agent = _agent(tools, agent_script(ClockSkew("app", 60, "f" * 64), 5, fault_id=FID), log)
    assert agent.wait(timeout=15) == 2
    assert f"clock-skew not applied: coordinator-clock-skew: no process of container:{'f' * 64} to skew" in (
        log.read_text()
    )
