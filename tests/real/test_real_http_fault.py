"""http-fault on real containers: the agent's proxy answers for the web pod, and a client pod measures what it gets.

The client sends its requests to the web pod's IP from another pod, so they arrive on the pod's eth0 and pass the
agent's nftables redirect. The fault matches only the path "/" (``pathRegex``), so the kubelet's readiness
probe (/readyz) is never faulted and the pod stays Ready.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.realnode import (
    WEB_PORT,
    EffectLog,
    cgroup_of,
    client_pod,
    container_id,
    kubectl,
    one_web_pod,
    pod_ip,
    timestamp,
)

# Run in the client pod: COUNT GETs of URL, each on a new connection; prints the statuses ("reset" for a
# connection error) and each request's seconds.
REQUESTS = """
import json, sys, time, urllib.error, urllib.request
url, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
statuses, seconds = [], []
for _ in range(count):
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            statuses.append(str(resp.status))
    except urllib.error.HTTPError as exc:
        exc.read()
        statuses.append(str(exc.code))
    except Exception:
        statuses.append("error")
    seconds.append(time.monotonic() - started)
print(json.dumps({"statuses": statuses, "seconds": seconds}))
"""


def _requests(kubeconfig: Path, ns: str, peer: str, url: str, count: int, timeout: float = 5.0) -> dict[str, Any]:
    proc = kubectl(
        kubeconfig,
        *("exec", "-n", ns, peer, "-c", "app", "--", "python3", "-c", REQUESTS, url, str(count), str(timeout)),
        timeout=count * (timeout + 1) + 60,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _share(result: dict[str, Any], status: str) -> float:
    return result["statuses"].count(status) / len(result["statuses"])


def _scenario(http_fault: dict[str, Any], duration: str) -> dict[str, Any]:
    fault = {"type": "http-fault", "httpFault": {"port": WEB_PORT, "pathRegex": "/", **http_fault}}
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}},
        "mode": "all",
        "steps": [{"name": "s", "duration": duration, "faults": [fault]}],
    }


def _agent_running(core: client.CoreV1Api, ns: str, pod: str) -> bool:
    statuses = core.read_namespaced_pod(pod, ns).status.ephemeral_container_statuses or []
    return any(s.state.running is not None for s in statuses)


def _nft_tables(core: client.CoreV1Api, ns: str, pod: str) -> str:
    """The nftables tables of the pod's network namespace, read from this host through the app's process."""
    procs = cgroup_of(container_id(core, ns, pod), "pids") / "cgroup.procs"
    pid = procs.read_text().split()[0]
    proc = subprocess.run(
        ["nsenter", "-t", pid, "-n", "nft", "list", "tables"], capture_output=True, text=True, check=True, timeout=30
    )
    return proc.stdout


def test_abort_answers_the_requested_share_then_none_after_the_revert(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = str(one_web_pod(core, apps, ns).metadata.name)
    peer = client_pod(core, ns)
    url = f"http://{pod_ip(core, ns, pod)}:{WEB_PORT}/"
    baseline = _requests(kubeconfig, ns, peer, url, 20)
    assert _share(baseline, "200") == 1, f"without the fault: {baseline['statuses']}"
    chaos.scenario("abort", _scenario({"percent": 50, "abort": {"statusCode": 503}}, "60s"))
    run = chaos.run("abort")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    assert "coordinator_" in _nft_tables(core, ns, pod), "the redirect's table is in the pod's namespace"
    during = _requests(kubeconfig, ns, peer, url, 200)
    aborted, served = _share(during, "503"), _share(during, "200")
    assert 0.40 <= aborted <= 0.60, f"requested 50 %, {aborted:.1%} answered 503"
    assert aborted + served == 1, f"every request is either faulted or served: {set(during['statuses'])}"
    readyz = _requests(kubeconfig, ns, peer, f"http://{pod_ip(core, ns, pod)}:{WEB_PORT}/readyz", 20)
    assert _share(readyz, "200") == 1, "a path the fault does not match is never faulted"
    status = chaos.wait_phase(run, "Passed", timeout=120)
    reverted = timestamp(status["steps"][0]["revertedAt"])
    wait_for(lambda: "coordinator_" not in _nft_tables(core, ns, pod), timeout=30, description="the table removed")
    after = _requests(kubeconfig, ns, peer, url, 100)
    assert _share(after, "503") == 0, f"after the revert: {after['statuses'].count('503')} of 100 answered 503"
    effects.record(
        "http-fault (abort)",
        f"50 % 503 requested: {aborted:.1%} of 200 GETs from a client pod answered 503, the rest 200; /readyz "
        "(not matched) untouched",
        f"0 of 100 GETs aborted once reverted ({time.time() - reverted:.1f} s after revertedAt, when measured); "
        "the pod's nftables table gone",
    )


def test_delay_is_measured_by_the_client_and_gone_after_the_revert(
    chaos: Chaos, core: client.CoreV1Api, apps: client.AppsV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    pod = str(one_web_pod(core, apps, ns).metadata.name)
    peer = client_pod(core, ns)
    url = f"http://{pod_ip(core, ns, pod)}:{WEB_PORT}/"
    base = statistics.median(_requests(kubeconfig, ns, peer, url, 20)["seconds"])
    chaos.scenario("delay", _scenario({"delay": {"duration": "1s"}}, "40s"))
    run = chaos.run("delay")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    during = _requests(kubeconfig, ns, peer, url, 15)
    delayed = statistics.median(during["seconds"])
    assert set(during["statuses"]) == {"200"}, f"a delay answers: {during['statuses']}"
    assert 0.95 <= delayed - base <= 1.5, f"1 s requested: median {delayed:.3f} s against {base:.3f} s without"
    chaos.wait_phase(run, "Passed", timeout=120)
    wait_for(lambda: "coordinator_" not in _nft_tables(core, ns, pod), timeout=30, description="the table removed")
    after = statistics.median(_requests(kubeconfig, ns, peer, url, 20)["seconds"])
    assert after - base < 0.3, f"after the revert the median is {after:.3f} s (baseline {base:.3f} s)"
    effects.record(
        "http-fault (delay)",
        f"1 s requested: median GET {delayed * 1000:.0f} ms against {base * 1000:.0f} ms without (15 and 20 GETs)",
        f"median {after * 1000:.0f} ms once reverted",
    )


def test_dead_mans_switch_removes_the_http_fault_with_the_operator_gone(
    chaos: Chaos,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    kubeconfig: Path,
    running_operator: OperatorProcess,
    effects: EffectLog,
) -> None:
    """SIGKILL the operator while a 100 % abort holds: the agent's proxy ends at the step's end, and its traps
    remove the redirect."""
    ns = chaos.namespace
    pod = str(one_web_pod(core, apps, ns).metadata.name)
    peer = client_pod(core, ns)
    url = f"http://{pod_ip(core, ns, pod)}:{WEB_PORT}/"
    chaos.scenario("dms", _scenario({"abort": {"statusCode": 503}}, "15s"))
    run = chaos.run("dms")
    status = chaos.wait_step(run, 0, "Injected", timeout=60)
    wait_for(lambda: _agent_running(core, ns, pod), timeout=30, description="the agent running")
    running_operator.kill()
    ends_at = timestamp(status["steps"][0]["endsAt"])
    held = _requests(kubeconfig, ns, peer, url, 10)
    assert _share(held, "503") == 1, f"the abort holds with the operator dead: {held['statuses']}"

    def served() -> float | None:
        started = time.time()
        return started if _share(_requests(kubeconfig, ns, peer, url, 3), "200") == 1 else None

    cleared = wait_for(served, timeout=60, interval=0.2, description="requests served again")
    lag = cleared - ends_at
    assert lag < 6, f"requests were served again only {lag:.1f} s after the step's end"
    tables = _nft_tables(core, ns, pod)
    assert "coordinator_" not in tables, f"the agent left its table behind: {tables}"

    def agent_finished() -> tuple[float, int] | None:
        for cs in core.read_namespaced_pod(pod, ns).status.ephemeral_container_statuses or []:
            if cs.state.terminated is not None:
                return cs.state.terminated.finished_at.timestamp(), cs.state.terminated.exit_code
        return None

    finished, code = wait_for(agent_finished, timeout=30, description="the agent's exit in the pod status")
    assert code == 0, f"the agent held and reverted: exit status {code}"
    assert finished - ends_at < 3, "the agent (duration counted from its own start) ended around the step's end"
    running_operator.start()
    chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=120)
    effects.record(
        "dead man's switch (http-fault)",
        "every operator process SIGKILLed while a 100 % abort held",
        f"the proxy ended and the agent removed its table {finished - ends_at:+.0f} s from the step's end (kubelet's "
        f"finishedAt, 1 s resolution; the proxy counts the duration from its own start, before the operator's "
        f"confirmation); GETs served again {lag:+.1f} s from the step's end",
    )
