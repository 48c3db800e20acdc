"""clock-skew: the offset, the options, the tracer's command lines and the agent script around them (pure)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from coordinator.api.inpod import clock_offset_seconds
from coordinator.api.models import Fault
from coordinator.faults.inpod import ClockSkew, agent_script, build_commands, revert_script
from coordinator.faults.inpod.clock_skew import ARCH_CHECK, TRACER, patch_tag
from coordinator.faults.inpod.commands import apply_commands

pytestmark = pytest.mark.unit

CID = "ab12" * 16
FID = "0f1e2d3c4b"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("-1h", -3600), ("+86400s", 86400), ("90m", 5400), ("1h30m", 5400), ("-1500ms1s", None), ("+2000ms", 2)],
)
def test_offsets_are_signed_whole_seconds(text: str, seconds: int | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError, match="not a whole number of seconds"):
            clock_offset_seconds(text)
    else:
        assert clock_offset_seconds(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0s", "is zero"),
        ("-0h", "is zero"),
        ("87601h", "more than 10 years"),
        ("1d", "not a signed duration"),
        ("--1h", "not a signed duration"),
        ("", "not a signed duration"),
        ("1.5h", "not a signed duration"),
    ],
)
def test_bad_offsets_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clock_offset_seconds(text)


def test_the_options_need_a_container_and_a_valid_offset() -> None:
    fault = Fault.model_validate({"type": "clock-skew", "clockSkew": {"containerName": "app", "offset": "-1h"}})
    assert fault.clockSkew is not None
    assert fault.clockSkew.offset_seconds == -3600
    with pytest.raises(ValidationError, match="more than 10 years"):
        Fault.model_validate({"type": "clock-skew", "clockSkew": {"containerName": "app", "offset": "99999h"}})
    with pytest.raises(ValidationError, match="containerName"):
        Fault.model_validate({"type": "clock-skew", "clockSkew": {"offset": "1h"}})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"container": "App", "offset_seconds": 1, "container_id": CID}, "not a container name"),
        ({"container": "app", "offset_seconds": 0, "container_id": CID}, "non-zero"),
        ({"container": "app", "offset_seconds": 1, "container_id": "xyz"}, "not a container ID"),
    ],
)
def test_the_agent_fault_checks_what_it_is_given(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClockSkew(**kwargs)  # type: ignore[arg-type]


def test_commands_check_the_machine_patch_with_a_deadline_and_restore_only_their_own_patch() -> None:
    fault = ClockSkew("app", -3600, f"containerd://{CID}")
    commands = build_commands(fault, FID, 30)
    tag = patch_tag(FID)
    assert commands.fault == "clock-skew"
    assert commands.apply == [
        ["/bin/sh", "-c", ARCH_CHECK],
        [TRACER, "apply", "-3600", "35", f"container:{CID}", tag],  # expires 5 s after the hold
    ]
    assert commands.revert == [[TRACER, "restore", f"container:{CID}", tag]]
    assert commands.hold == ["sleep", "30"], "the patch is in the target's memory: the agent only waits"
    assert len(tag) == 16
    assert int(tag, 16) >= 0
    assert patch_tag(FID) == tag
    assert patch_tag("0f1e2d3c4c") != tag, "another fault's revert leaves this one's skew alone"
    with pytest.raises(ValueError, match="need the duration"):
        apply_commands(fault, FID)


def _run_agent(script: str, tmp_path: Path, tools: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The agent script with stand-in tools first on PATH (the script's logic only; the host test runs the tracer)."""
    for name, body in tools.items():
        tool = tmp_path / name
        tool.write_text("#!/bin/sh\n" + body)
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, env=env, timeout=30)


def test_the_agent_refuses_a_node_that_is_not_x86_64(tmp_path: Path) -> None:
    script = agent_script(ClockSkew("app", 60, CID), 1, fault_id=FID)
    proc = _run_agent(script, tmp_path, {"uname": "echo aarch64\n", TRACER: "echo called >> $0.calls\n"})
    assert proc.returncode == 2
    assert "clock-skew not applied: clock-skew patches x86-64 machine code; this node is aarch64" in proc.stderr
    # The revert still runs (finding nothing is success); the apply never did.
    assert (tmp_path / f"{TRACER}.calls").read_text().count("called") == 1


def test_the_agent_reports_the_tracers_own_reason_and_count(tmp_path: Path) -> None:
    failing = 'echo "coordinator-clock-skew: no process of $4 to skew" >&2; exit 2\n'
    script = agent_script(ClockSkew("app", 60, CID), 1, fault_id=FID)
    proc = _run_agent(script, tmp_path, {"uname": "echo x86_64\n", TRACER: f'if [ "$1" = apply ]; then {failing}fi\n'})
    assert proc.returncode == 2
    assert f"clock-skew not applied: coordinator-clock-skew: no process of container:{CID} to skew" in proc.stderr

    working = 'echo "coordinator-clock-skew: skewed 2 processes by +60s until 1" >&2\n'
    proc = _run_agent(script, tmp_path, {TRACER: working})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert "coordinator-agent: coordinator-clock-skew: skewed 2 processes by +60s until 1" in lines
    assert lines.index("coordinator-agent: holding: sleep 1") > lines.index(
        "coordinator-agent: coordinator-clock-skew: skewed 2 processes by +60s until 1"
    ), "holding (what the operator waits for) only after the tracer confirmed"


def test_a_failed_restore_is_a_failed_revert(tmp_path: Path) -> None:
    script = revert_script(ClockSkew("app", 60, CID), fault_id=FID)
    proc = _run_agent(script, tmp_path, {TRACER: "echo 'coordinator-clock-skew: pid 7: still differs' >&2; exit 4\n"})
    assert proc.returncode == 4
    assert "revert failed" in proc.stderr
