"""dns-fault on real containers: a client pod whose only nameserver is a DNS server pod of the test's own (the real
node has no cluster DNS); the fault makes the matched name fail and nothing else, and goes with the step, even
with the operator SIGKILLed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from support.chaos import Chaos
from support.cluster import REPO_ROOT
from support.realnode import (
    AGENT_IMAGE,
    EffectLog,
    cgroup_of,
    kubectl,
    on_real_node,
    pod_container_ids,
    pod_ip,
    pod_ready,
    timestamp,
    web_container,
)

DNS_SERVER = (REPO_ROOT / "tests" / "support" / "dns_server.py").read_text()
RECORDS = {"api.test": "10.203.0.4", "web.test": "10.203.0.3"}  # answers only: nothing connects to them
MATCHED, OTHER = "api.test", "web.test"

RESOLVE = """
import json, socket, sys
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as exc:
        found[name] = exc.strerror
print(json.dumps(found))
"""


def dns_server_pod(core: client.CoreV1Api, ns: str) -> str:
    """The test's nameserver: tests/support/dns_server.py on port 53 in the tools image (python3 + dnslib)."""
    records = [f"--record={name}={address}" for name, address in RECORDS.items()]
    container = client.V1Container(
        name="dns",
        image=AGENT_IMAGE,
        image_pull_policy="Never",
        command=["python3", "-c", DNS_SERVER, "--port", "53", *records],
        security_context=client.V1SecurityContext(
            run_as_user=0,
            run_as_non_root=False,
            allow_privilege_escalation=False,
            capabilities=client.V1Capabilities(drop=["ALL"], add=["NET_BIND_SERVICE"]),
        ),
    )
    core.create_namespaced_pod(
        ns,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="dns", labels={"app": "dns"}),
            spec=on_real_node(client.V1PodSpec(containers=[container], termination_grace_period_seconds=1)),
        ),
    )
    wait_for(lambda: _running(core, ns, "dns"), timeout=90, description="the DNS server pod running")
    return pod_ip(core, ns, "dns")


def _running(core: client.CoreV1Api, ns: str, name: str) -> bool:
    statuses = core.read_namespaced_pod(name, ns).status.container_statuses or []
    return bool(statuses) and all(s.state.running is not None for s in statuses)


def dns_client_pod(core: client.CoreV1Api, ns: str, nameserver: str) -> str:
    """A web-image pod (python3) whose resolv.conf names only the test's DNS server."""
    core.create_namespaced_pod(
        ns,
        client.V1Pod(
            metadata=client.V1ObjectMeta(name="client", labels={"app": "dns-client"}),
            spec=on_real_node(
                client.V1PodSpec(
                    containers=[web_container()],
                    termination_grace_period_seconds=1,
                    dns_policy="None",
                    dns_config=client.V1PodDNSConfig(
                        nameservers=[nameserver], options=[client.V1PodDNSConfigOption(name="ndots", value="1")]
                    ),
                )
            ),
        ),
    )
    wait_for(lambda: pod_ready(core, ns, "client"), timeout=90, description="the DNS client pod Ready")
    return "client"


def resolve(kubeconfig: Path, ns: str, pod: str) -> dict[str, Any]:
    """What the pod's own resolver library (glibc getaddrinfo) makes of the two names: addresses, or the error."""
    proc = kubectl(kubeconfig, "exec", "-n", ns, pod, "-c", "app", "--", "python3", "-c", RESOLVE, MATCHED, OTHER)
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return found


def resolves_normally(found: dict[str, Any]) -> bool:
    return found == {name: [address] for name, address in RECORDS.items()}


def fault_holds(found: dict[str, Any]) -> bool:
    return isinstance(found[MATCHED], str) and found[OTHER] == [RECORDS[OTHER]]


def nft_tables(core: client.CoreV1Api, ns: str, pod: str) -> list[str]:
    """The nftables tables of the pod's network namespace, read from this host (the real node) with nsenter."""
    cgroup = cgroup_of(pod_container_ids(core, ns, pod)["app"], "memory")
    pid = (cgroup / "cgroup.procs").read_text().split()[0]
    proc = subprocess.run(
        ["nsenter", "-t", pid, "-n", "nft", "list", "tables"], capture_output=True, text=True, check=True
    )
    return proc.stdout.split()


def agent(core: client.CoreV1Api, ns: str, pod: str) -> client.V1ContainerStatus | None:
    statuses = core.read_namespaced_pod(pod, ns).status.ephemeral_container_statuses or []
    return statuses[0] if statuses else None


def agent_ended(core: client.CoreV1Api, ns: str, pod: str) -> bool:
    status = agent(core, ns, pod)
    return status is not None and status.state.terminated is not None


def scenario(duration: str) -> dict[str, Any]:
    fault = {"type": "dns-fault", "dnsFault": {"patterns": [MATCHED.upper()], "error": {"rcode": "NXDOMAIN"}}}
    return {
        "target": {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "dns-client"}}},
        "mode": "all",
        "steps": [{"name": "s", "duration": duration, "faults": [fault]}],
    }


def test_dns_fault_fails_the_matched_name_and_no_other(
    chaos: Chaos, core: client.CoreV1Api, kubeconfig: Path, effects: EffectLog
) -> None:
    ns = chaos.namespace
    nameserver = dns_server_pod(core, ns)
    pod = dns_client_pod(core, ns, nameserver)
    before = resolve(kubeconfig, ns, pod)
    assert resolves_normally(before), before
    chaos.scenario("dns", scenario("30s"))
    run = chaos.run("dns")
    chaos.wait_step(run, 0, "Injected", timeout=60)
    during = resolve(kubeconfig, ns, pod)
    assert fault_holds(during), during
    status = agent(core, ns, pod)
    assert status is not None
    assert status.state.running is not None, "the resolver holds for the step"
    log = core.read_namespaced_pod_log(pod, ns, container=status.name)
    # The agent's own /etc/resolv.conf is the pod's: the resolver forwards to the test's DNS server pod.
    assert f"other names forwarded to {nameserver} port 53 (from /etc/resolv.conf)" in log, log
    tables = [t for t in nft_tables(core, ns, pod) if t.startswith("coordinator_")]
    assert len(tables) == 1, tables
    final = chaos.wait_phase(run, "Passed", timeout=90)
    reverted = timestamp(final["steps"][0]["revertedAt"])
    wait_for(lambda: agent_ended(core, ns, pod), timeout=30, description="the agent ended")
    after = resolve(kubeconfig, ns, pod)
    measured = time.time()
    assert resolves_normally(after), after
    assert not [t for t in nft_tables(core, ns, pod) if t.startswith("coordinator_")], "the redirect is gone"
    log = core.read_namespaced_pod_log(pod, ns, container=status.name)
    assert "reverted: nft delete table inet" in log, log
    effects.record(
        "dns-fault",
        f"error NXDOMAIN for {MATCHED}: getaddrinfo in the pod said '{during[MATCHED]}'; {OTHER} still resolved "
        f"to {during[OTHER][0]} through the pod's own nameserver",
        f"both names resolve and the nft table is gone ({measured - reverted:.1f} s after revertedAt, when measured)",
    )


def test_dns_fault_dead_mans_switch_with_the_operator_gone(
    chaos: Chaos,
    core: client.CoreV1Api,
    kubeconfig: Path,
    running_operator: OperatorProcess,
    effects: EffectLog,
) -> None:
    """SIGKILL the operator while the dns-fault holds: the agent's resolver ends at the step's end by itself, and the
    agent removes the redirect."""
    ns = chaos.namespace
    pod = dns_client_pod(core, ns, dns_server_pod(core, ns))
    assert resolves_normally(resolve(kubeconfig, ns, pod))
    chaos.scenario("dms", scenario("15s"))
    run = chaos.run("dms")
    status = chaos.wait_step(run, 0, "Injected", timeout=60)
    running_operator.kill()
    ends_at = timestamp(status["steps"][0]["endsAt"])
    assert fault_holds(resolve(kubeconfig, ns, pod)), "the fault holds with the operator dead"

    def resolved() -> float | None:
        started = time.time()
        return started if resolves_normally(resolve(kubeconfig, ns, pod)) else None

    cleared = wait_for(resolved, timeout=60, interval=0.2, description=f"{MATCHED} resolves again")
    lag = cleared - ends_at
    assert lag < 6, f"{MATCHED} resolved again only {lag:.1f} s after the step's end"

    def agent_finished() -> tuple[float, int] | None:
        found = agent(core, ns, pod)
        if found is None or found.state.terminated is None:
            return None
        return found.state.terminated.finished_at.timestamp(), found.state.terminated.exit_code

    finished, code = wait_for(agent_finished, timeout=30, description="the agent's exit in the pod status")
    assert code == 0, "the resolver ended at its duration and the agent reverted"
    assert finished - ends_at < 3, "the agent (duration counted from its own start) ended around the step's end"
    assert not [t for t in nft_tables(core, ns, pod) if t.startswith("coordinator_")], "the redirect is gone"
    running_operator.start()
    chaos.wait_phase(run, {"Passed", "Failed", "Error"}, timeout=120)
    effects.record(
        "dead man's switch (dns-fault)",
        f"every operator process SIGKILLed while {MATCHED} answered NXDOMAIN",
        f"the resolver ended and the agent deleted its nft table {finished - ends_at:+.0f} s from the step's end "
        f"(exit 0); {MATCHED} resolved again {lag:+.1f} s from the step's end",
    )
