"""In-pod faults on real containers: the agent runs as an ephemeral container in the target pod, and its effect is
measured from outside the agent (another pod's traffic, the container's cgroup on this host)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.realnode import (
    WEB_PORT,
    EffectLog,
    cgroup_of,
    client_pod,
    cpu_seconds,
    download_rate,
    memory_bytes,
    netem_available,
    one_web_pod,
    pod_container_ids,
    pod_ip,
    timestamp,
    udp_delivery,
)


def _scenario(fault: dict[str, Any], duration: str) -> dict[str, Any]:
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "all",
        "steps": [{"name": "s", "duration": duration, "faults": [fault]}],
    }


def _one_web_pod(core: client.CoreV1Api, apps: client.AppsV1Api, ns: str) -> str:
    return str(one_web_pod(core, apps, ns).metadata.name)


def _agent_running(core: client.CoreV1Api, ns: str, pod: str) -> bool:
    statuses = core.read_namespaced_pod(pod, ns).status.ephemeral_container_statuses or []
    return any(s.state.running is not None for s in statuses)


def test_network_loss_drops_close_to_the_requested_share(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    peer = client_pod(core, ns)
    peer_ip = pod_ip(core, ns, peer)
    baseline = udp_delivery(kubeconfig, ns, pod, peer, peer_ip, 400)
    assert baseline > 0.98, f"without the fault {baseline:.1%} of datagrams arrive"
    chaos.scenario("loss", _scenario({"type": "network-loss", "networkLoss": {"percent": 30}}, "40s"))
    run = chaos.run("loss")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    delivered = udp_delivery(kubeconfig, ns, pod, peer, peer_ip, 1000)
    loss = 1 - delivered
    assert 0.24 <= loss <= 0.36, f"requested 30 %, measured {loss:.1%}"
    status = chaos.wait_phase(run, "Passed", timeout=90)
    reverted = timestamp(status["steps"][0]["revertedAt"])
    after = udp_delivery(kubeconfig, ns, pod, peer, peer_ip, 400)
    assert after > 0.98, f"after the revert {after:.1%} arrive"
    effects.record(
        "network-loss",
        f"30 % requested: {loss:.1%} of 1,000 UDP datagrams from the pod lost (baseline {1 - baseline:.1%})",
        f"{1 - after:.1%} loss once reverted ({time.time() - reverted:.1f} s after revertedAt, when measured)",
    )


def test_network_bandwidth_caps_throughput_near_the_rate(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    peer = client_pod(core, ns)
    url = f"http://{pod_ip(core, ns, pod)}:{WEB_PORT}/bytes?n=2000000"
    unshaped = download_rate(kubeconfig, ns, peer, url)
    rate = 4_000_000
    fault = {"type": "network-bandwidth", "networkBandwidth": {"rate": "4mbit"}}
    chaos.scenario("bw", _scenario(fault, "40s"))
    run = chaos.run("bw")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    shaped = download_rate(kubeconfig, ns, peer, url)
    assert abs(shaped - rate) <= 0.25 * rate, f"rate 4 Mbit/s, measured {shaped / 1e6:.2f} Mbit/s"
    assert unshaped > 2 * rate, f"the link itself is faster ({unshaped / 1e6:.0f} Mbit/s)"
    chaos.wait_phase(run, "Passed", timeout=90)
    after = download_rate(kubeconfig, ns, peer, url)
    assert after > 2 * rate
    effects.record(
        "network-bandwidth",
        f"4 Mbit/s requested: a 2 MB download ran at {shaped / 1e6:.2f} Mbit/s (unshaped {unshaped / 1e6:.0f} Mbit/s)",
        f"{after / 1e6:.0f} Mbit/s after the revert",
    )


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("network-delay", {"networkDelay": {"latencyMs": 100}}),
        ("network-duplicate", {"networkDuplicate": {"percent": 10}}),
        ("network-corrupt", {"networkCorrupt": {"percent": 10}}),
    ],
    ids=["delay", "duplicate", "corrupt"],
)
def test_netem_faults_need_the_kernel_module(
    chaos: Chaos,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    kubeconfig: Path,
    effects: EffectLog,
    fault: str,
    options: dict[str, Any],
) -> None:
    """Without sch_netem the run ends with an error naming the module; with it, the delay is measured."""
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    chaos.scenario("netem", _scenario({"type": fault, **options}, "10s"))
    run = chaos.run("netem")
    if not netem_available():
        status = chaos.wait_phase(run, {"Error", "Failed"}, timeout=90)
        text = f"{status.get('message')} {[i.get('message') for i in status.get('injections', [])]}"
        assert "sch_netem" in text, text
        assert status["reason"] == "AgentFailed", "the agent ran and the kernel refused"
        assert all(i["state"] in ("Failed", "Reverted") for i in status.get("injections", []))
        effects.record(
            fault, "kernel without sch_netem: the run ends " + status["phase"] + " naming netem", "nothing to revert"
        )
        return
    peer = client_pod(core, ns)
    chaos.wait_step(run, 0, "Injected", timeout=60)
    if fault == "network-delay":
        from support.realnode import fetch_from_pod

        result = fetch_from_pod(kubeconfig, ns, peer, f"http://{pod_ip(core, ns, pod)}:{WEB_PORT}/", count=5)
        assert min(result.seconds) >= 0.1
        effects.record(fault, f"100 ms requested: fastest request {min(result.seconds) * 1000:.0f} ms", "-")
    chaos.wait_phase(run, "Passed", timeout=90)


def _cpu_cores(cgroup: Path, seconds: float = 3.0) -> float:
    first = cpu_seconds(cgroup)
    started = time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(cgroup) - first) / (time.monotonic() - started)


def _agent_cgroup(core: client.CoreV1Api, ns: str, pod: str, controller: str) -> Path:
    ids = wait_for(
        lambda: {n: i for n, i in pod_container_ids(core, ns, pod).items() if n != "app"},
        timeout=30,
        description="the agent's container ID",
    )
    (agent_id,) = ids.values()
    return cgroup_of(agent_id, controller)


def test_cpu_stress_loads_the_pods_cgroup(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    app_cgroup = cgroup_of(pod_container_ids(core, ns, pod)["app"], "cpuacct")
    idle = _cpu_cores(app_cgroup, 1.0)
    fault = {"type": "cpu-stress", "cpuStress": {"workers": 1, "loadPercent": 80}}
    chaos.scenario("cpu", _scenario(fault, "15s"))
    run = chaos.run("cpu")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    cgroup = _agent_cgroup(core, ns, pod, "cpuacct")
    loaded = _cpu_cores(cgroup)
    assert loaded >= 0.5, f"one worker at 80 % used {loaded:.2f} cores"
    status = chaos.wait_phase(run, "Passed", timeout=90)
    ended = time.time()
    wait_for(lambda: not _agent_running(core, ns, pod), timeout=30, description="the agent gone")
    effects.record(
        "cpu-stress",
        f"1 worker at 80 %: the pod's agent cgroup used {loaded:.2f} cores (app container idle: {idle:.2f})",
        f"stress-ng gone {time.time() - ended:.1f} s after the run ended ({status['phase']})",
    )


def test_memory_stress_fills_the_pods_cgroup(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    fault = {"type": "memory-stress", "memoryStress": {"size": "128m", "workers": 1}}
    chaos.scenario("mem", _scenario(fault, "15s"))
    run = chaos.run("mem")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    cgroup = _agent_cgroup(core, ns, pod, "memory")

    def usage() -> int | None:
        used = memory_bytes(cgroup)
        return used if used >= 100 * 2**20 else None

    used = wait_for(usage, timeout=20, description="the agent's cgroup above 100 MiB")
    chaos.wait_phase(run, "Passed", timeout=90)
    effects.record(
        "memory-stress",
        f"128 MiB requested: the pod's agent cgroup held {used / 2**20:.0f} MiB",
        "freed with the agent",
    )


def test_io_stress_writes_from_the_pods_cgroup(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    fault = {"type": "io-stress", "ioStress": {"workers": 1, "size": "64m"}}
    chaos.scenario("io", _scenario(fault, "10s"))
    run = chaos.run("io")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    cgroup = _agent_cgroup(core, ns, pod, "blkio")

    def written() -> int | None:
        total = 0
        for path in (cgroup / "cgroup.procs").read_text().split():
            try:
                io = dict(line.split(": ") for line in Path(f"/proc/{path}/io").read_text().splitlines())
            except OSError:
                continue
            total += int(io.get("wchar", "0"))
        return total if total >= 64 * 2**20 else None

    wrote = wait_for(written, timeout=20, description="the agent's processes wrote 64 MiB")
    chaos.wait_phase(run, "Passed", timeout=90)
    effects.record(
        "io-stress",
        f"1 worker, 64 MiB: the agent cgroup's processes wrote {wrote / 2**20:.0f} MiB",
        "ends with the step",
    )


def test_dead_mans_switch_removes_the_fault_with_the_operator_gone(
    chaos: Chaos,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    kubeconfig: Path,
    running_operator: OperatorProcess,
    effects: EffectLog,
) -> None:
    """SIGKILL the operator while 100 % loss holds: the agent itself removes it at the step's end."""
    ns = chaos.namespace
    pod = _one_web_pod(core, apps, ns)
    peer = client_pod(core, ns)
    peer_ip = pod_ip(core, ns, peer)
    chaos.scenario("dms", _scenario({"type": "network-loss", "networkLoss": {"percent": 100}}, "12s"))
    run = chaos.run("dms")
    status = chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    running_operator.kill()
    ends_at = timestamp(status["steps"][0]["endsAt"])
    assert udp_delivery(kubeconfig, ns, pod, peer, peer_ip, 50) == 0, "100 % loss holds with the operator dead"

    def delivered() -> float | None:
        # A short idle timeout: each probe during the fault costs about 2 s, the resolution of this measurement.
        # The probe's start is when traffic flowed: over 90 % of its packets got through, so it flowed for nearly
        # all of the probe (its end added the probe's own 2-3 s, and a loaded host's kubectl exec, to the lag).
        started = time.time()
        return started if udp_delivery(kubeconfig, ns, pod, peer, peer_ip, 20, idle_timeout=1.5) > 0.9 else None

    cleared = wait_for(delivered, timeout=60, interval=0.2, description="traffic flows again")
    lag = cleared - ends_at
    assert lag < 6, f"traffic flowed again only {lag:.1f} s after the step's end"

    def agent_finished() -> float | None:
        for cs in core.read_namespaced_pod(pod, ns).status.ephemeral_container_statuses or []:
            if cs.state.terminated is not None:
                return cs.state.terminated.finished_at.timestamp()  # type: ignore[no-any-return]
        return None

    finished = wait_for(agent_finished, timeout=30, description="the agent's exit in the pod status")
    assert finished - ends_at < 3, "the agent (duration counted from its own start) ended around the step's end"
    running_operator.start()
    chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=120)
    effects.record(
        "dead man's switch",
        "every operator process SIGKILLed while 100 % loss held",
        f"the agent reverted and exited {finished - ends_at:+.0f} s from the step's end (kubelet's finishedAt, 1 s "
        f"resolution); UDP flowed again {lag:.1f} s after it (probes of about 2 s)",
    )
