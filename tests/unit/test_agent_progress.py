"""An in-pod fault is applied only when its agent says so: the states read from the pod's status and the log."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.faults.ephemeral import AGENT_HOLDING, AgentState, agent_progress

AGENT = "coordinator-abc"


def _pod(agent_state: dict[str, Any] | None, restarts: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"containerStatuses": [{"name": "app", "restartCount": restarts}]}
    if agent_state is not None:
        status["ephemeralContainerStatuses"] = [{"name": AGENT, "image": "tools:1", "state": agent_state}]
    return {"status": status}


def test_no_status_yet_is_starting_never_applied() -> None:
    # kwok, or a kubelet that has not reported yet: nothing says the fault is there.
    assert agent_progress(_pod(None), AGENT, "").state == AgentState.STARTING


@pytest.mark.parametrize("reason", ["ErrImageNeverPull", "ImagePullBackOff", "CreateContainerError"])
def test_an_agent_that_cannot_start_fails_with_the_reason(reason: str) -> None:
    progress = agent_progress(_pod({"waiting": {"reason": reason, "message": "no such image"}}), AGENT, "")
    assert progress.state == AgentState.FAILED
    assert progress.cannot_start, "reported as AgentNotRunning, not AgentFailed"
    assert reason in progress.message
    assert "no such image" in progress.message
    assert "tools:1" in progress.message


def test_container_creating_is_still_starting() -> None:
    assert agent_progress(_pod({"waiting": {"reason": "ContainerCreating"}}), AGENT, "").state == AgentState.STARTING


def test_running_counts_only_once_the_log_says_holding() -> None:
    running = _pod({"running": {"startedAt": "2026-12-06T00:00:00Z"}})
    assert agent_progress(running, AGENT, "coordinator-agent: applied: nft ...\n").state == AgentState.STARTING
    log = f"coordinator-agent: applied: nft ...\n{AGENT_HOLDING}: sleep 10\n"
    assert agent_progress(running, AGENT, log).state == AgentState.HOLDING


def test_an_agent_that_exits_with_an_error_fails_with_its_termination_message() -> None:
    ended = _pod({"terminated": {"exitCode": 2, "message": "network-delay not applied: kernel lacks sch_netem\n"}})
    progress = agent_progress(ended, AGENT, "")
    assert progress.state == AgentState.FAILED
    assert not progress.cannot_start
    assert "kernel lacks sch_netem" in progress.message
    assert "status 2" in progress.message


def test_an_error_without_a_termination_message_uses_the_last_log_line() -> None:
    ended = _pod({"terminated": {"exitCode": 4, "reason": "Error"}})
    progress = agent_progress(ended, AGENT, "coordinator-agent: revert failed: tc qdisc del (busy)\n")
    assert "revert failed" in progress.message


def test_a_clean_exit_of_a_held_fault_is_done_but_not_without_the_hold() -> None:
    ended = _pod({"terminated": {"exitCode": 0}})
    assert agent_progress(ended, AGENT, f"{AGENT_HOLDING}: sleep 1\n").state == AgentState.DONE
    assert agent_progress(ended, AGENT, "").state == AgentState.FAILED


def test_container_kill_is_done_when_the_target_restarted() -> None:
    # The agent shares the target's PID namespace and dies with its PID 1 (SIGKILL, 137): the restart is the proof.
    not_yet = _pod({"terminated": {"exitCode": 137}}, restarts=0)
    waiting = agent_progress(not_yet, AGENT, "", one_shot=True, target_container="app", restarts_before=0)
    assert waiting.state == AgentState.STARTING, "the kubelet reports the restart a moment after the agent's end"
    killed = _pod({"terminated": {"exitCode": 137}}, restarts=1)
    progress = agent_progress(killed, AGENT, "", one_shot=True, target_container="app", restarts_before=0)
    assert progress.state == AgentState.DONE
    not_restarted = _pod({"terminated": {"exitCode": 3, "message": "signal not delivered"}}, restarts=0)
    failed = agent_progress(not_restarted, AGENT, "", one_shot=True, target_container="app", restarts_before=0)
    assert failed.state == AgentState.FAILED
    assert "signal not delivered" in failed.message
