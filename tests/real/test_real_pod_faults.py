"""Pod and workload faults on real containers: what the kubelet really did, and how long the revert took."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client, watch

from coordinator.testing.waiting import wait_for
from support.chaos import Chaos, ready_probe
from support.realnode import EffectLog, one_web_pod, ready_pods, timestamp, wait_ready, web_deployment


def _scenario(fault: dict[str, Any], target: dict[str, Any], duration: str = "3s", **extra: Any) -> dict[str, Any]:
    return {"target": target, "mode": "all", "steps": [{"name": "s", "duration": duration, "faults": [fault]}], **extra}


PODS = {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}}
DEPLOYMENT = {"kind": "Deployment", "names": ["web"]}


class ReadyWatcher:
    """Timestamps (wall clock, taken here) of each pod's first Ready=True, seen through a watch: an independent
    measurement of when replacements became Ready."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self.ready_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReadyWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        w = watch.Watch()
        while not self._stop.is_set():
            for event in w.stream(
                self.core.list_namespaced_pod, self.namespace, label_selector="app=web", timeout_seconds=2
            ):
                pod = event["object"]
                ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
                if ready and pod.metadata.name not in self.ready_at:
                    self.ready_at[pod.metadata.name] = time.time()
                if self._stop.is_set():
                    w.stop()
                    break


def test_pod_kill_replacement_ready_and_recovery_time_matches_the_pods(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    web_deployment(apps, ns, replicas=2)
    before = {p.metadata.name for p in wait_ready(core, ns, "web", 2)}
    probe = ready_probe(mode="edge")
    with ReadyWatcher(core, ns) as watcher:
        chaos.scenario(
            "kill", _scenario({"type": "pod-kill"}, PODS, duration="1s", mode="one", steadyState={"probes": [probe]})
        )
        run = chaos.run("kill")
        status = chaos.wait_phase(run, "Passed", timeout=120)
        wait_for(lambda: len(watcher.ready_at) >= 3, timeout=30, description="the replacement pod seen Ready")
    killed = status["steps"][0]["targets"][0]["name"]
    assert killed in before
    assert killed not in {p.metadata.name for p in ready_pods(core, ns, "web")}, "the killed pod is gone"
    replacements = {n: t for n, t in watcher.ready_at.items() if n not in before}
    assert len(replacements) == 1, replacements
    injected = timestamp(status["steps"][0]["injectedAt"])
    measured = min(replacements.values()) - injected
    reported = status["steps"][0]["recoveryTimeSeconds"]
    assert reported > 0, "a real replacement takes time to become Ready"
    assert abs(reported - measured) <= 0.5, f"reported {reported:.2f}s, the pods' Ready transition says {measured:.2f}s"
    effects.record(
        "pod-kill",
        "the pod is deleted; a replacement is scheduled and started by the kubelet",
        f"recovery {reported:.2f} s reported, {measured:.2f} s from the replacement's Ready",
    )


def test_pod_failure_stops_the_containers_until_the_revert(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = one_web_pod(core, apps, ns)
    name = pod.metadata.name
    chaos.scenario("fail", _scenario({"type": "pod-failure"}, PODS, duration="8s"))
    run = chaos.run("fail")
    chaos.wait_step(run, 0, "Injected", timeout=60)

    def broken() -> str | None:
        status = core.read_namespaced_pod(name, ns).status
        (cs,) = status.container_statuses
        waiting = cs.state.waiting
        return waiting.reason if waiting and not cs.ready else None

    reason = wait_for(broken, timeout=30, description="the container cannot run")
    assert reason in {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}, reason
    status = chaos.wait_phase(run, "Passed", timeout=90)
    reverted = timestamp(status["steps"][0]["revertedAt"])
    wait_for(lambda: name in {p.metadata.name for p in ready_pods(core, ns, "web")}, timeout=60, description="Running")
    running_again = time.time() - reverted
    (cs,) = core.read_namespaced_pod(name, ns).status.container_statuses
    assert cs.state.running is not None
    assert cs.ready
    effects.record(
        "pod-failure",
        f"the container waits in {reason}; it does not run while the fault holds",
        f"the same pod Ready again {running_again:.1f} s after the revert (kubelet back-off included)",
    )


def test_container_kill_raises_the_restart_count(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = one_web_pod(core, apps, ns)
    name = pod.metadata.name
    restarts = pod.status.container_statuses[0].restart_count
    fault = {"type": "container-kill", "containerKill": {"containerName": "app", "signal": "SIGTERM"}}
    chaos.scenario("ckill", _scenario(fault, PODS, duration="2s"))
    run = chaos.run("ckill")
    status = chaos.wait_phase(run, "Passed", timeout=90)
    injected = timestamp(status["steps"][0]["injectedAt"])

    def restarted() -> float | None:
        cs = core.read_namespaced_pod(name, ns).status.container_statuses[0]
        return time.time() if cs.restart_count > restarts and cs.ready else None

    ready_again = wait_for(restarted, timeout=60, description="restartCount up and Ready again")
    effects.record(
        "container-kill",
        f"SIGTERM to the app's PID 1: restartCount {restarts} -> {restarts + 1}",
        f"Ready again {ready_again - injected:.1f} s after the signal",
    )


def test_rollout_restart_replaces_every_pod(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    web_deployment(apps, ns, replicas=2)
    before = {p.metadata.name for p in wait_ready(core, ns, "web", 2)}
    chaos.scenario("restart", _scenario({"type": "rollout-restart"}, DEPLOYMENT, duration="1s"))
    run = chaos.run("restart")
    status = chaos.wait_phase(run, "Passed", timeout=90)
    injected = timestamp(status["steps"][0]["injectedAt"])

    def replaced() -> float | None:
        pods = core.list_namespaced_pod(ns, label_selector="app=web").items
        names = {p.metadata.name for p in pods}
        ready = {p.metadata.name for p in ready_pods(core, ns, "web")}
        return time.time() if not names & before and len(ready) == 2 else None

    done = wait_for(replaced, timeout=120, description="every pod replaced by a Ready one")
    effects.record(
        "rollout-restart",
        "both pods replaced by new ones (new names, new containers)",
        f"all replacements Ready {done - injected:.1f} s after the restart",
    )


def test_scale_down_removes_running_pods_and_the_revert_restores_them(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, effects: EffectLog
) -> None:
    ns = chaos.namespace
    web_deployment(apps, ns, replicas=2)
    wait_ready(core, ns, "web", 2)
    chaos.scenario("scale", _scenario({"type": "scale", "scale": {"replicas": 1}}, DEPLOYMENT, duration="6s"))
    run = chaos.run("scale")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(
        lambda: len(core.list_namespaced_pod(ns, label_selector="app=web").items) == 1,
        timeout=30,
        description="one pod left while scaled down",
    )
    status = chaos.wait_phase(run, "Passed", timeout=90)
    reverted = timestamp(status["steps"][0]["revertedAt"])
    wait_ready(core, ns, "web", 2, timeout=60)
    effects.record(
        "scale",
        "2 -> 1 replicas: one container stopped and its pod removed",
        f"2 Ready again {time.time() - reverted:.1f} s after the revert",
    )
