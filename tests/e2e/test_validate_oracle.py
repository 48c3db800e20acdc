"""``coordinator validate`` is an oracle: for every document generated from the CRDs' own schema (and mutated), its
accept or reject agrees with the real API server's, and the runs it accepts end well on the real operator.

Two budgets of one test, both with a fixed seed: a short one here, in the e2e tier (so ``make test`` runs it, well
under two minutes), and a long one under the ``fuzz`` marker (``make fuzz``; COORDINATOR_FUZZ_DOCUMENTS and
COORDINATOR_FUZZ_SEED change it). The counts of the last long run are in tests/README.md.

What "agree" means, per document:
- validate's admission findings (size, YAML, schema, CEL) exist exactly when the API server refuses the create;
- validate's run-start findings (what the operator refuses when a run starts: a parameter's value, a protected
  namespace, a fault for another target kind) appear only on documents the API server accepts;
- for a sample of accepted scenarios, a TestRun reaches a terminal phase within its timeout plus a grace period,
  ends Error for a run-start reason only when validate said so, leaves no key of ours on any object, and the
  operator logs no traceback meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from conftest import make_deployment
from coordinator.settings import DEFAULT_PROTECTED_NAMESPACES
from coordinator.testing.process import OperatorProcess
from coordinator.testing.waiting import wait_for
from coordinator.validation import validate_paths
from coordinator.validation.source import MAX_OBJECT_BYTES, json_size
from support.chaos import TERMINAL, Chaos
from support.fuzz import Generated, api_server_verdict, generate

PROTECTED = frozenset({*DEFAULT_PROTECTED_NAMESPACES, "test-coordinator"})
SHORT_DOCUMENTS = 300
SHORT_RUNS = 6
LONG_DOCUMENTS = int(os.environ.get("COORDINATOR_FUZZ_DOCUMENTS", "3000"))
LONG_RUNS = int(os.environ.get("COORDINATOR_FUZZ_RUNS", "16"))
SHORT_SEED = 18004  # fixed: the short budget judges the same documents on every run
SEED = int(os.environ.get("COORDINATOR_FUZZ_SEED", str(SHORT_SEED)))
RUN_TIMEOUT = 20  # seconds: spec.timeout of every sampled run
GRACE = 40  # seconds past the timeout for the run to end (reverts, a probe's own timeout, the operator's poll)
# Why a run may end Error when validate raised nothing for it: facts of the targets that no file holds. kwok starts no
# containers, so an in-pod fault's agent never runs; a container named in the scenario may not be in the pod.
# Anything else (InvalidScenario, InvalidParameters, Selection, InternalError) validate should have said.
EXPECTED_ERRORS = {("AgentNotRunning", ""), ("AgentFailed", ""), ("Fault", "has no container")}


def expected_error(reason: str, message: str) -> bool:
    return any(reason == known and fragment in message for known, fragment in EXPECTED_ERRORS)


OURS = "chaos.coordinator.dev/"


@dataclass
class Tally:
    generated: int = 0
    accepted: int = 0  # by the API server
    rejected: int = 0
    refused_at_run_start: int = 0  # accepted by the API server, refused by validate as the operator would
    disagreements: list[str] = field(default_factory=list)
    runs: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        return (
            f"{self.generated} generated, {self.accepted} accepted and {self.rejected} rejected by the API server, "
            f"{self.refused_at_run_start} of the accepted refused by validate at run start, "
            f"{len(self.disagreements)} disagreement(s); runs: {dict(self.runs)}"
        )


def _findings(path: Path, bodies: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """validate's (admission, run start) findings for ``bodies`` written to one YAML file."""
    path.write_text(yaml.safe_dump_all(bodies, sort_keys=False, allow_unicode=True))
    report = validate_paths([path], PROTECTED)
    admission = [f"{f.field}: {f.message}" for f in report.findings if f.stage == "admission"]
    run_start = [f"{f.field}: {f.message}" for f in report.findings if f.stage != "admission"]
    return admission, run_start


def judge(
    custom: client.CustomObjectsApi, namespace: str, work: Path, documents: list[Generated]
) -> tuple[Tally, list[int]]:
    """Both verdicts for every document; returns the tally and the indexes of the scenarios both accepted."""
    tally = Tally(generated=len(documents))
    accepted_scenarios = []
    for index, generated in enumerate(documents):
        body = generated.body(f"fz-{index}", namespace)
        server = api_server_verdict(custom, body)
        admission, run_start = _findings(work / f"doc-{index}.yaml", [body])
        where = f"document {index} ({generated.kind}, mutations {[(m.path, m.action) for m in generated.mutations]})"
        if server.accepted:
            tally.accepted += 1
            tally.refused_at_run_start += bool(run_start and not admission)
            if admission:
                tally.disagreements.append(f"{where}: the API server accepts it, validate refuses it: {admission}")
            elif generated.kind == "ChaosScenario":
                accepted_scenarios.append(index)
        else:
            tally.rejected += 1
            if not admission:
                extra = f" (validate says only, at run start: {run_start})" if run_start else ""
                tally.disagreements.append(
                    f"{where}: the API server refuses it ({server.message[:300]}), validate accepts it{extra}"
                )
    return tally, accepted_scenarios


def _our_keys(obj: Any) -> list[str]:
    meta = obj.metadata
    keys = [*(meta.annotations or {}), *(meta.labels or {})]
    return [key for key in keys if key.startswith(OURS) and key != f"{OURS}allow"]


def residue(api_client: client.ApiClient, namespace: str) -> list[str]:
    """Every object of the namespace that still carries a key of ours, and any NetworkPolicy we created."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    networking = client.NetworkingV1Api(api_client)
    found = []
    for kind, items in (
        ("Pod", core.list_namespaced_pod(namespace).items),
        ("Deployment", apps.list_namespaced_deployment(namespace).items),
        ("ReplicaSet", apps.list_namespaced_replica_set(namespace).items),
        ("StatefulSet", apps.list_namespaced_stateful_set(namespace).items),
        ("DaemonSet", apps.list_namespaced_daemon_set(namespace).items),
        ("NetworkPolicy", networking.list_namespaced_network_policy(namespace).items),
    ):
        for item in items:
            keys = _our_keys(item)
            if keys or kind == "NetworkPolicy":
                found.append(f"{kind} {item.metadata.name}: {keys}")
    for node in core.list_node().items:
        if _our_keys(node) or node.spec.unschedulable:
            found.append(f"Node {node.metadata.name}: {_our_keys(node)} unschedulable={node.spec.unschedulable}")
    return found


def _runnable(spec: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The scenario aimed at this test's namespace and its web pods, never at nodes (the cluster is shared)."""
    spec = json.loads(json.dumps(spec))
    target = spec.setdefault("target", {})
    if target.get("kind") == "Node" or any(
        fault.get("type", "").startswith("node-") for step in spec.get("steps", []) for fault in step.get("faults", [])
    ):
        target["kind"] = "Deployment"
        for step in spec.get("steps", []):
            step["faults"] = [f for f in step.get("faults", []) if not f.get("type", "").startswith("node-")] or [
                {"type": "rollout-restart"}
            ]
    target["namespaces"] = [namespace]
    target["labelSelector"] = {"matchLabels": {"app": "web"}}
    for name in ("fieldSelector", "names", "annotationSelector"):
        target.pop(name, None)
    spec.pop("schedule", None)  # a scheduled scenario would start runs of its own
    return spec


def run_sample(
    api_client: client.ApiClient,
    chaos: Chaos,
    operator: OperatorProcess,
    work: Path,
    documents: list[Generated],
    indexes: list[int],
    tally: Tally,
) -> None:
    """Run a TestRun of each sampled scenario (every other one a dry run) and check how it ends."""
    namespace = chaos.namespace
    log_start = operator.log_path.stat().st_size
    expected: dict[str, tuple[int, list[str]]] = {}
    for number, index in enumerate(indexes):
        spec = _runnable(documents[index].spec, namespace)
        name = f"fz-run-{index}"
        scenario = {"apiVersion": "chaos.coordinator.dev/v1alpha1", "kind": "ChaosScenario",
                    "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip
        run = {"apiVersion": "chaos.coordinator.dev/v1alpha1", "kind": "TestRun",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"scenarioRef": {"name": name}, "timeout": f"{RUN_TIMEOUT}s", "dryRun": number % 2 == 1}}  # fmt: skip
        admission, run_start = _findings(work / f"run-{index}.yaml", [scenario, run])
        if admission:
            # Aiming it at the test's pods made it invalid (a fault for another kind, say): not a sample.
            continue
        chaos.custom.create_namespaced_custom_object(
            "chaos.coordinator.dev", "v1alpha1", namespace, "chaosscenarios", scenario
        )
        chaos.custom.create_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", namespace, "testruns", run)
        expected[name] = (index, run_start)
    deadline = time.monotonic() + RUN_TIMEOUT + GRACE
    for name, (index, run_start) in expected.items():
        status = wait_for(
            lambda name=name: s if (s := chaos.status(name)).get("phase") in TERMINAL else None,  # type: ignore[misc]
            timeout=max(deadline - time.monotonic(), 1),
            description=f"TestRun {name} terminal within {RUN_TIMEOUT}s + {GRACE}s",
        )
        phase, reason = status["phase"], status.get("reason", "")
        tally.runs[f"{phase}/{reason}"] += 1
        said = f"TestRun {name} (document {index}) ended {phase}/{reason}: {status.get('message')}"
        if run_start and phase == "Passed":
            tally.disagreements.append(f"{said}; validate refused it at run start: {run_start}")
        if not run_start and phase == "Error" and not expected_error(reason, str(status.get("message"))):
            tally.disagreements.append(f"{said}; validate accepted it")
    left = wait_for(
        lambda: not residue(api_client, namespace) or None, timeout=30, description="no key of ours left"
    ) if expected else True  # fmt: skip
    assert left, residue(api_client, namespace)
    log = operator.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 3000]


def fuzz(
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    chaos: Chaos,
    operator: OperatorProcess,
    tmp_path: Path,
    documents: int,
    runs: int,
    seed: int,
) -> Tally:
    generated = generate(documents, seed)
    assert len(generated) == documents
    tally, accepted = judge(chaos.custom, chaos.namespace, tmp_path, generated)
    make_deployment(apps, chaos.namespace, "web", replicas=2)
    step = max(len(accepted) // max(runs, 1), 1)
    run_sample(api_client, chaos, operator, tmp_path, generated, accepted[::step][:runs], tally)
    print(f"\nvalidate vs the API server (seed {seed}): {tally.line()}")
    log_dir = Path(__file__).resolve().parents[2] / ".test-logs"
    log_dir.mkdir(exist_ok=True)
    (log_dir / f"fuzz-{seed}-{documents}.json").write_text(
        json.dumps({**tally.__dict__, "runs": dict(tally.runs)}, indent=2)
    )
    return tally


def test_validate_agrees_with_the_api_server(
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    chaos: Chaos,
    running_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    tally = fuzz(api_client, apps, chaos, running_operator, tmp_path, SHORT_DOCUMENTS, SHORT_RUNS, SHORT_SEED)
    assert tally.accepted, "the sample holds documents the API server accepts"
    assert tally.rejected, "and documents it refuses"
    assert not tally.disagreements, "\n".join(tally.disagreements)


@pytest.mark.fuzz
@pytest.mark.timeout(7200)
def test_validate_agrees_with_the_api_server_long(
    api_client: client.ApiClient,
    apps: client.AppsV1Api,
    chaos: Chaos,
    running_operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    tally = fuzz(api_client, apps, chaos, running_operator, tmp_path, LONG_DOCUMENTS, LONG_RUNS, SEED)
    assert not tally.disagreements, "\n".join(tally.disagreements)


def _scenario_of_size(name: str, namespace: str, size: int) -> dict[str, Any]:
    """A valid ChaosScenario whose JSON is ``size`` bytes (give or take a label), padded with selector labels."""
    body: dict[str, Any] = {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "ChaosScenario",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "target": {"labelSelector": {"matchLabels": {}}},
            "steps": [{"name": "a", "faults": [{"type": "pod-kill"}]}],
        },
    }
    labels = body["spec"]["target"]["labelSelector"]["matchLabels"]
    total = json_size(body)
    index = 0
    while total < size - 100:
        labels[f"k{index}"] = "v" * 60
        total += len(f'"k{index}":"{"v" * 60}",')
        index += 1
    labels["last"] = "v" * max(size - json_size(body) - len(',"last":""'), 0)
    assert abs(json_size(body) - size) <= 1, (json_size(body), size)
    return body


@pytest.mark.usefixtures("crds_installed")
def test_validate_refuses_what_etcd_refuses_to_store(
    api_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Real creates (a dry run never reaches etcd): the API server stores a ChaosScenario 4 KiB under
    MAX_OBJECT_BYTES and refuses one 4 KiB over it with "request is too large"; validate says the same of both."""
    custom = client.CustomObjectsApi(api_client)
    under = _scenario_of_size("under", namespace, MAX_OBJECT_BYTES - 4096)
    assert _findings(tmp_path / "under.yaml", [under]) == ([], [])
    custom.create_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", namespace, "chaosscenarios", under)

    over = _scenario_of_size("over", namespace, MAX_OBJECT_BYTES + 4096)
    admission, _ = _findings(tmp_path / "over.yaml", [over])
    assert any("the API server stores objects of at most" in text for text in admission), admission
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object("chaos.coordinator.dev", "v1alpha1", namespace, "chaosscenarios", over)
    assert "request is too large" in (refused.value.body or ""), refused.value.body


FOUND = [
    pytest.param({"steadyState": {}}, True, id="empty-steady-state"),
    pytest.param(
        {"steps": [{"name": "a", "duration": "0400000086200000ms", "faults": [{"type": "pod-kill"}]}]},
        False,
        id="duration-past-what-cel-holds",
    ),
    pytest.param(
        {
            "target": {"kind": "Node", "labelSelector": {"matchLabels": {"app": "web"}}},
            "steps": [{"name": "a", "faults": [{"type": "node-cordon", "nodeCordon": {"force": True}}]}],
        },
        False,
        id="unknown-field-in-options-without-fields",
    ),
    pytest.param({"kind": "TestRun", "scenarioRef": {"name": "s"}, "seed": 2**63}, False, id="seed-past-int64"),
    pytest.param({"kind": "TestRun", "scenarioRef": {"name": "s"}, "seed": 2**63 - 1}, True, id="seed-int64-max"),
    # Not found by the fuzz but by hand (issue 18): a selector the API server can never list with used to pass
    # admission and validate, and end the run Error when it listed its targets.
    pytest.param({"target": {"fieldSelector": "spec.nodeName=,,==x"}}, False, id="malformed-field-selector"),
    pytest.param(
        {"target": {"fieldSelector": "spec.nodeName=a\\,b,status.phase!=Failed"}}, True, id="well-formed-field-selector"
    ),
]


@pytest.mark.usefixtures("crds_installed")
@pytest.mark.parametrize(("changes", "accepted"), FOUND)
def test_the_disagreements_found_stay_fixed(
    api_client: client.ApiClient, namespace: str, tmp_path: Path, changes: dict[str, Any], accepted: bool
) -> None:
    """Each document on which validate and the API server once disagreed (or, for the field selector, on which
    both accepted what no run could use)."""
    changes = dict(changes)
    kind = changes.pop("kind", "ChaosScenario")
    spec = {
        "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
        "steps": [{"name": "a", "faults": [{"type": "pod-kill"}]}],
    }
    body = Generated(kind, changes if kind == "TestRun" else {**spec, **changes}).body("found", namespace)
    server = api_server_verdict(client.CustomObjectsApi(api_client), body)
    admission, _ = _findings(tmp_path / "found.yaml", [body])
    assert server.accepted is accepted, server.message
    assert (not admission) is accepted, admission
