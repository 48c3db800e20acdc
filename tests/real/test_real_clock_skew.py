"""clock-skew on real containers: the web server's own running process reports its clock (``GET /time``, which is
``time.time()``, so ``clock_gettime`` through the vDSO) while a fresh process in the same container reads the real
time; the difference is the skew. A new process (``kubectl exec … date``) is never skewed: the patch reaches the
processes that run when the fault starts (docs/inpod-faults.md "clock-skew")."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from coordinator.faults.inpod import fault_id_for, revert_agent_command
from coordinator.faults.inpod.clock_skew import ClockSkew
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.realnode import (
    WEB_PORT,
    EffectLog,
    kubectl,
    on_real_node,
    pod_container_ids,
    timestamp,
    wait_ready,
    web_container,
)

OFFSET = 3600
TOLERANCE = 2.0
# Samples, from inside the target container, of (the server's clock - this new process's clock, this one's clock).
SAMPLE = """
import json, sys, time, urllib.request
url, count, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
for _ in range(count):
    before = time.time()
    with urllib.request.urlopen(url, timeout=2) as resp:
        served = float(resp.read())
    after = time.time()
    print(json.dumps({"skew": served - (before + after) / 2, "own": (before + after) / 2}), flush=True)
    time.sleep(interval)
"""


def _web(apps: client.AppsV1Api, core: client.CoreV1Api, ns: str, seccomp: str | None) -> str:
    labels = {"app": "web"}
    spec = on_real_node(client.V1PodSpec(containers=[web_container()], termination_grace_period_seconds=2))
    if seccomp is not None:
        # Pod level: the target container and every ephemeral container (the agent) run under it.
        spec.security_context = client.V1PodSecurityContext(seccomp_profile=client.V1SeccompProfile(type=seccomp))
    apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web", labels=labels),
            spec=client.V1DeploymentSpec(
                replicas=1,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=spec),
            ),
        ),
    )
    (pod,) = wait_ready(core, ns, "web", 1)
    return str(pod.metadata.name)


def _samples(kubeconfig: Path, ns: str, pod: str, count: int = 3, interval: float = 0.2) -> list[dict[str, float]]:
    url = f"http://127.0.0.1:{WEB_PORT}/time"
    proc = kubectl(
        kubeconfig, "exec", "-n", ns, pod, "-c", "app", "--", "python3", "-c", SAMPLE, url, str(count), str(interval),
        timeout=count * (interval + 3) + 60,
    )  # fmt: skip
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _skew(kubeconfig: Path, ns: str, pod: str) -> float:
    """The server's skew (median of three samples); the sampling process itself must read the host's time."""
    samples = _samples(kubeconfig, ns, pod)
    for sample in samples:
        assert abs(sample["own"] - time.time()) < 30, "a new process in the container reads the real time"
    return sorted(s["skew"] for s in samples)[len(samples) // 2]


def _scenario(offset: str, duration: str) -> dict[str, Any]:
    fault = {"type": "clock-skew", "clockSkew": {"containerName": "app", "offset": offset}}
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "all",
        "steps": [{"name": "s", "duration": duration, "faults": [fault]}],
    }


def _agent_log(kubeconfig: Path, ns: str, pod: str, agent: str) -> str:
    return kubectl(kubeconfig, "logs", "-n", ns, pod, "-c", agent).stdout


def _agent_name(core: client.CoreV1Api, ns: str, pod: str) -> str:
    def named() -> str | None:
        spec = core.read_namespaced_pod(pod, ns).spec
        names = [c.name for c in spec.ephemeral_containers or []]
        return names[0] if names else None

    return wait_for(named, timeout=30, description="the agent container in the pod spec")


@pytest.mark.parametrize("seccomp", [None, "RuntimeDefault"], ids=["unconfined", "runtime-default-seccomp"])
def test_clock_skew_shifts_the_running_process_and_the_revert_brings_it_back(
    chaos: Chaos,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    kubeconfig: Path,
    effects: EffectLog,
    seccomp: str | None,
) -> None:
    ns = chaos.namespace
    pod = _web(apps, core, ns, seccomp)
    before = _skew(kubeconfig, ns, pod)
    assert abs(before) < TOLERANCE, f"the server reads the real time before the fault ({before:+.1f} s)"
    chaos.scenario("skew", _scenario(f"+{OFFSET // 3600}h", "20s"))
    run = chaos.run("skew")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    held = _skew(kubeconfig, ns, pod)
    assert abs(held - OFFSET) < TOLERANCE, f"+1h asked, the server's clock is {held:+.1f} s off"
    agent = _agent_name(core, ns, pod)
    log = _agent_log(kubeconfig, ns, pod, agent)
    assert "skewed 1 processes by +3600s" in log, log
    status = chaos.wait_phase(run, "Passed", timeout=90)
    after = _skew(kubeconfig, ns, pod)
    assert abs(after) < TOLERANCE, f"after the revert the server's clock is {after:+.1f} s off"
    log = _agent_log(kubeconfig, ns, pod, agent)
    assert "original (restored, verified)" in log, log
    reverted = timestamp(status["steps"][0]["revertedAt"])
    effects.record(
        "clock-skew" + (f" (seccomp {seccomp})" if seccomp else ""),
        f"+1h requested: the server's own process read {held:+.1f} s (a new process in the container, as "
        f"kubectl exec date would be, read the real time)",
        f"{after:+.1f} s after the revert ({time.time() - reverted:.0f} s after revertedAt, when measured)",
    )


def _kill_container_processes(container_id: str) -> int:
    """SIGKILL every host process of a container (found by its ID in /proc/PID/cgroup), as an OOM kill would.

    Stopped first, all of them: the agent's shell must not see its sleep die and run the revert."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and container_id in Path(f"/proc/{entry}/cgroup").read_text():
                pids.append(int(entry))
        except OSError:
            continue
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    return len(pids)


def test_the_skew_ends_at_its_own_deadline_with_the_agent_and_operator_killed(
    chaos: Chaos,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    kubeconfig: Path,
    running_operator: OperatorProcess,
    effects: EffectLog,
) -> None:
    """SIGKILL the operator and the agent while -1h holds: no revert runs, and the patch stops adding the offset
    5 s after the hold's end by itself. Then the operator's revert container removes the expired patch."""
    ns = chaos.namespace
    pod = _web(apps, core, ns, None)
    chaos.scenario("dms", _scenario("-1h", "10s"))
    run = chaos.run("dms")
    status = chaos.wait_step(run, 0, "Injected", timeout=60)
    ends_at = timestamp(status["steps"][0]["endsAt"])
    injection_id = status["injections"][0]["id"]
    running_operator.kill()
    agent = _agent_name(core, ns, pod)
    agent_id = pod_container_ids(core, ns, pod)[agent]
    assert _kill_container_processes(agent_id) >= 1, "the agent's processes were found on this host"
    assert time.time() < ends_at, "the agent was killed before its hold ended"
    # The tracer's own report: "skewed 1 processes by -3600s until <the patch's deadline, epoch seconds>".
    reported = re.search(r"skewed 1 processes by -3600s until (\d+)", _agent_log(kubeconfig, ns, pod, agent))
    assert reported, "the agent confirmed the skew before it was killed"
    deadline = int(reported[1])
    assert 0 <= deadline - ends_at <= 9, "the patch expires 5 s after the agent's hold, which ends with the step"
    samples = _samples(kubeconfig, ns, pod, count=int(ends_at + 12 - time.time()) * 4, interval=0.25)
    skewed = [s for s in samples if abs(s["skew"] + OFFSET) < TOLERANCE]
    real = [s for s in samples if abs(s["skew"]) < TOLERANCE]
    assert skewed, f"the skew held after the agent was killed: {samples[:3]}"
    assert real, f"the skew never ended: {samples[-3:]}"
    assert len(skewed) + len(real) == len(samples), "every sample is either skewed or real"
    assert max(s["own"] for s in skewed) < min(s["own"] for s in real), "once ended, it stays ended"
    cleared = min(s["own"] for s in real)
    assert -0.5 <= cleared - deadline <= 1.5, f"the skew ended {cleared - deadline:+.1f} s from the patch's deadline"
    lag = cleared - ends_at
    log = _agent_log(kubeconfig, ns, pod, agent)
    assert "reverted:" not in log, "the agent never reverted: it was killed"

    # The operator's revert container: the same image and rights, only the revert (no saved state needed).
    agent_spec = next(c for c in core.read_namespaced_pod(pod, ns).spec.ephemeral_containers if c.name == agent)
    app_id = pod_container_ids(core, ns, pod)["app"]
    fault = ClockSkew("app", -OFFSET, app_id)
    revert = {
        "name": f"{agent}-revert",
        "image": agent_spec.image,
        "command": revert_agent_command(fault, fault_id=fault_id_for(injection_id)),
        "targetContainerName": "app",
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["SYS_PTRACE"]},
        },
    }
    core.patch_namespaced_pod_ephemeralcontainers(
        pod, ns, {"spec": {"ephemeralContainers": [revert]}}, _content_type="application/strategic-merge-patch+json"
    )

    def revert_exit() -> str | None:  # a string: exit code 0 must count as an answer
        for cs in core.read_namespaced_pod(pod, ns).status.ephemeral_container_statuses or []:
            if cs.name == revert["name"] and cs.state.terminated is not None:
                return str(cs.state.terminated.exit_code)
        return None

    assert wait_for(revert_exit, timeout=60, description="the revert container's exit") == "0"
    revert_log = _agent_log(kubeconfig, ns, pod, str(revert["name"]))
    assert "original (restored, verified)" in revert_log, revert_log
    running_operator.start()
    chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=120)
    effects.record(
        "clock-skew dead man's switch",
        f"operator and agent SIGKILLed while -1h held: {len(skewed)} samples skewed, then real time "
        f"{cleared - deadline:+.1f} s from the patch's own deadline ({lag:+.1f} s from the step's end), no revert",
        "a later revert container found the expired patch and restored the original code",
    )
