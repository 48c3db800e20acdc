"""`make demo`: boot the local control plane, run the operator on it and show one chaos test end to end.

Steps: boot the cluster (or reuse a running one), install the CRDs, deploy the sample workload
(examples/workload.yaml), start the operator in the background (its log goes to .cluster/operator.log), apply
examples/pod-kill.yaml and follow the TestRun to its end, show what happened, stop the operator. The cluster keeps
running afterwards. Re-running the demo replaces the previous TestRun.

Run with the project's virtualenv (``make demo`` does): the operator is started by coordinator.testing's
OperatorProcess, as the test tiers and the benchmarks start it. Everything happens on 127.0.0.1.

``make demo REAL=1`` adds a real kubelet node to the cluster (hack/cluster/node.py), runs the web workload there
from the locally built image, and runs pod-kill and network-partition on those real pods: it prints the recovery
time the operator measured and what a peer pod saw while the partition held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from coordinator.testing.process import OperatorExited, OperatorProcess
from coordinator.testing.waiting import WaitTimeout

REPO = Path(__file__).resolve().parent.parent
CLUSTER = [sys.executable, str(REPO / "hack" / "cluster")]
CRD_DIR = REPO / "crds"
WORKLOAD = REPO / "examples" / "workload.yaml"
EXAMPLE = REPO / "examples" / "pod-kill.yaml"
NAMESPACE = "demo"
APP = "web"
REPLICAS = 3
TESTRUN = "pod-kill-run"  # the TestRun in examples/pod-kill.yaml
PARTITION = REPO / "examples" / "network-partition.yaml"
PARTITION_RUN = "network-partition-run"
REAL = os.environ.get("REAL", "") not in ("", "0")
# What a real node needs of the sample workload: the locally built web image, pinned to the real node.
REAL_NODE_LABEL = ("chaos.coordinator.dev/node", "real")
REAL_NODE_TAINT = "chaos.coordinator.dev/real-node"
WEB_IMAGE = "test-coordinator-web:0.1.0"
TERMINAL = ("Passed", "Failed", "Error", "Cancelled", "TimedOut")
POLL_SECONDS = 0.5
# The console script installed next to this interpreter (.venv/bin/coordinator), to tell the user how to run it.
COORDINATOR = Path(sys.executable).parent / "coordinator"

T = TypeVar("T")


class DemoError(Exception):
    """A demo step failed; the message says which and why."""


def say(text: str) -> None:
    print(text, flush=True)


def kubectl(kubeconfig: Path, *args: str, show: bool = False, stdin: str | None = None) -> str:
    """Run kubectl; with ``show`` echo the command and let its output through (the parts the user should see)."""
    if show:
        say(f"\n$ kubectl {' '.join(args)}")
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=not show,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip() if not show else "(see the output above)"
        raise DemoError(f"kubectl {' '.join(args)} failed with exit code {proc.returncode}: {detail}")
    return proc.stdout or ""


def get_json(kubeconfig: Path, *args: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kubectl(kubeconfig, "get", *args, "-o", "json"))
    return result


def poll(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``check`` every POLL_SECONDS until it returns something other than None; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_SECONDS)


# --- cluster, CRDs, workload ---------------------------------------------------------------------------------


def boot_cluster() -> Path:
    if subprocess.run([*CLUSTER, "up"], check=False).returncode != 0:
        raise DemoError("could not boot the local control plane (see the output above)")
    out = subprocess.run([*CLUSTER, "kubeconfig"], capture_output=True, text=True, check=False)
    kubeconfig = Path(out.stdout.strip())
    if out.returncode != 0 or not kubeconfig.is_file():
        raise DemoError(f"the cluster is up but its kubeconfig was not found: {out.stderr.strip() or kubeconfig}")
    return kubeconfig


def install_crds(kubeconfig: Path) -> None:
    crds = sorted(CRD_DIR.glob("*.yaml"))
    if not crds:
        raise DemoError(f"no CRDs in {CRD_DIR}; run `make crds`")
    kubectl(
        kubeconfig,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=coordinator-demo",
        "-f",
        str(CRD_DIR),
    )
    names = [f"crd/{path.name.removesuffix('.yaml')}" for path in crds]
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *names)
    say(f"CRDs installed and established: {', '.join(n.removeprefix('crd/') for n in names)}")


def ready_pods(kubeconfig: Path) -> list[str]:
    pods = get_json(kubeconfig, "pods", "-n", NAMESPACE, "-l", f"app={APP}")["items"]
    ready = []
    for pod in pods:
        conditions = pod.get("status", {}).get("conditions") or []
        if (
            not pod["metadata"].get("deletionTimestamp")
            and pod.get("status", {}).get("phase") == "Running"
            and any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        ):
            ready.append(pod["metadata"]["name"])
    return ready


def real_workload() -> str:
    """examples/workload.yaml for the real node: the web image (port 8080), a node selector and a toleration."""
    import yaml

    docs = [d for d in yaml.safe_load_all(WORKLOAD.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            pod["nodeSelector"] = {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]}
            pod["tolerations"] = [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
            pod["terminationGracePeriodSeconds"] = 2
            for container in pod["containers"]:
                container.update(
                    image=WEB_IMAGE,
                    imagePullPolicy="Never",
                    ports=[{"containerPort": 8080}],
                    readinessProbe={"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1},
                )
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "peer", "namespace": NAMESPACE, "labels": {"role": "peer"}},
            "spec": {
                "nodeSelector": {REAL_NODE_LABEL[0]: REAL_NODE_LABEL[1]},
                "tolerations": [{"key": REAL_NODE_TAINT, "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "peer", "image": WEB_IMAGE, "imagePullPolicy": "Never"}],
            },
        }
    )
    return yaml.safe_dump_all(docs)


def deploy_workload(kubeconfig: Path) -> None:
    if REAL:
        kubectl(kubeconfig, "apply", "-f", "-", stdin=real_workload())
        say(f"\n$ kubectl apply -f examples/workload.yaml   # web image {WEB_IMAGE}, pinned to the real node")
    else:
        kubectl(kubeconfig, "apply", "-f", str(WORKLOAD), show=True)
    poll(
        lambda: True if len(ready_pods(kubeconfig)) == REPLICAS else None,
        timeout=90,
        what=f"{REPLICAS} ready pods of deployment/{APP} in namespace {NAMESPACE}",
    )
    say(f"{REPLICAS} pods of deployment/{APP} are Running and Ready")


# --- the operator --------------------------------------------------------------------------------------------


# --- the chaos test ------------------------------------------------------------------------------------------


def run_example(
    kubeconfig: Path,
    operator: OperatorProcess,
    example: Path = EXAMPLE,
    testrun: str = TESTRUN,
    while_running: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Apply an example (replacing a previous run of it) and follow the TestRun to a terminal phase.

    ``while_running`` is called once with the status when the first step's faults are injected."""
    # A finished TestRun is never run again: delete the previous one (the running operator releases its finalizer).
    kubectl(kubeconfig, "delete", "testrun", testrun, "-n", NAMESPACE, "--ignore-not-found", "--timeout=60s")
    kubectl(kubeconfig, "apply", "-f", str(example), show=True)
    say("")
    seen: list[str] = []
    called: list[bool] = []

    def finished() -> dict[str, Any] | None:
        operator.check_alive()
        status: dict[str, Any] = get_json(kubeconfig, "testrun", testrun, "-n", NAMESPACE).get("status") or {}
        phase = status.get("phase") or "Pending"
        progress = " ".join([phase, *(f"{s['name']}={s.get('outcome', 'Pending')}" for s in status.get("steps", []))])
        if not seen or seen[-1] != progress:
            seen.append(progress)
            say(f"  testrun/{testrun}: {progress}")
        steps = status.get("steps") or []
        if while_running and not called and steps and steps[0].get("outcome") == "Injected":
            called.append(True)
            while_running(status)
        return status if phase in TERMINAL else None

    return poll(finished, timeout=120, what=f"testrun/{testrun} to finish")


def peer_reaches_web(kubeconfig: Path) -> str:
    """One HTTP request from the peer pod to each web pod, through the real pod network."""
    pods = get_json(kubeconfig, "pods", "-n", NAMESPACE, "-l", f"app={APP}")["items"]
    results = []
    for pod in pods:
        ip = pod.get("status", {}).get("podIP")
        if not ip:
            continue
        script = f"import urllib.request;urllib.request.urlopen('http://{ip}:8080/', timeout=1)"
        proc = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                str(kubeconfig),
                "exec",
                "-n",
                NAMESPACE,
                "peer",
                "--",
                "python3",
                "-c",
                script,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        results.append(f"{pod['metadata']['name']}: {'reached' if proc.returncode == 0 else 'unreachable'}")
    return ", ".join(results)


def real_demo(kubeconfig: Path, operator: OperatorProcess) -> None:
    """pod-kill and network-partition on real pods: the recovery time, and what a peer saw during the partition."""
    poll(lambda: True if "Running" in kubectl(kubeconfig, "get", "pod", "peer", "-n", NAMESPACE) else None, 90, "peer")
    kill = run_example(kubeconfig, operator)
    describe(kill)
    if kill.get("phase") != "Passed":
        raise DemoError(f"testrun/{TESTRUN} ended {kill.get('phase')}: {kill.get('message')}")
    say(f"\nmeasured recovery time of pod-kill on real pods: {kill.get('recoveryTimeSeconds')} s")
    say(f"before the partition, the peer pod: {peer_reaches_web(kubeconfig)}")
    seen: list[str] = []
    partition = run_example(
        kubeconfig,
        operator,
        PARTITION,
        PARTITION_RUN,
        while_running=lambda _status: seen.append(peer_reaches_web(kubeconfig)),
    )
    describe(partition, PARTITION_RUN)
    if partition.get("phase") != "Passed":
        raise DemoError(f"testrun/{PARTITION_RUN} ended {partition.get('phase')}: {partition.get('message')}")
    say(f"during the partition, the peer pod: {seen[0] if seen else '(not sampled)'}")
    say(f"after it, the peer pod: {peer_reaches_web(kubeconfig)}")


def describe(status: dict[str, Any], testrun: str = TESTRUN) -> None:
    say(f"\nTestRun {NAMESPACE}/{testrun}: {status.get('phase')} ({status.get('reason')}) - {status.get('message')}")
    if status.get("scenario"):
        say(f"  scenario: {status['scenario']}, duration: {status.get('durationSeconds', '-')}s")
    for index, step in enumerate(status.get("steps") or []):
        say(f"  step {index} {step['name']}: {step.get('outcome')}")
        say(f"    targets ({step.get('targetCount', 0)}):")
        for target in step.get("targets") or []:
            where = f"{target['namespace']}/" if target.get("namespace") else ""
            say(f"      {target['kind']} {where}{target['name']}")
        say(f"    injected at: {step.get('injectedAt', '-')}")
        say(f"    reverted at: {step.get('revertedAt', '-')}")
        if step.get("message"):
            say(f"    message: {step['message']}")
    injections = status.get("injections") or []
    if injections:
        say("  changes (the rollback ledger):")
    for injection in injections:
        note = f" ({injection['message']})" if injection.get("message") else ""
        say(f"    {injection['id']}: {injection['state']}{note}")


def show_history_report(kubeconfig: Path) -> None:
    """Wait for the run to reach the history store (the embedded SQLite file, as no database URL is set), then
    print `coordinator report` over the demo's runs: every demo run so far, since the history outlives them."""

    def mirrored() -> bool | None:
        status = get_json(kubeconfig, "testrun", TESTRUN, "-n", NAMESPACE).get("status") or {}
        return True if (status.get("history") or {}).get("synced") else None

    poll(mirrored, timeout=30, what=f"testrun/{TESTRUN} to be written to the history store")
    say(f"\n$ coordinator report --namespace {NAMESPACE}")
    command = [sys.executable, "-m", "coordinator.cli.main", "report", "--namespace", NAMESPACE]
    if subprocess.run(command, check=False).returncode != 0:
        raise DemoError("coordinator report failed (see the output above)")


def main() -> int:
    operator: OperatorProcess | None = None
    try:
        kubeconfig = boot_cluster()
        kubectl(kubeconfig, "get", "nodes", "-o", "wide", show=True)
        install_crds(kubeconfig)
        deploy_workload(kubeconfig)
        # Only TestRuns in the demo namespace: the demo never competes with another operator (a test session's,
        # say) for other namespaces' runs. Its metrics server takes a free loopback port, not 8080.
        operator = OperatorProcess(kubeconfig, kubeconfig.parent, namespaces=[NAMESPACE], intervals={})
        say(f"\nstarting the operator, log: {operator.log_path}")
        operator.start(timeout=60)
        say(f"operator ready (pid {operator.pid})")
        if REAL:
            real_demo(kubeconfig, operator)
            return 0
        status = run_example(kubeconfig, operator)
        kubectl(kubeconfig, "get", "testruns", "-n", NAMESPACE, show=True)
        kubectl(kubeconfig, "get", "pods", "-n", NAMESPACE, "-o", "wide", show=True)
        describe(status)
        if status.get("phase") != "Passed":
            raise DemoError(
                f"testrun/{TESTRUN} ended {status.get('phase')}: {status.get('message')}\n"
                f"operator log ({operator.log_path}) ends:\n{operator.log_tail()}"
            )
        show_history_report(kubeconfig)
    except (DemoError, OperatorExited, WaitTimeout) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        return 130
    finally:
        if operator is not None and operator.proc is not None:
            say(f"\noperator stopped (exit code {operator.stop()})")
    say(
        "\nThe demo passed. The cluster keeps running; use it with:\n"
        f"  export KUBECONFIG={kubeconfig}\n"
        f"  {COORDINATOR} run    # the operator, in another terminal (its admission webhooks refuse new\n"
        "                       # TestRuns and ChaosScenarios while it is down: docs/security.md)\n"
        "  kubectl apply -f examples/scale.yaml    # any example, see examples/README.md\n"
        f"  kubectl get testruns -n {NAMESPACE}\n"
        "Run the demo again with: make demo\n"
        "Stop the cluster with:   make cluster-down\n"
        "See the runs in a browser (your kubeconfig's rights, on http://127.0.0.1:8765/):\n"
        f"  {COORDINATOR} dashboard"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
