"""``coordinator validate``: the examples pass, and every file of the broken corpus yields its expected error.

Each file in tests/data/invalid/ starts with ``# expect: LINE: FIELD: MESSAGE``: the validator must report an error
at that line whose ``field: message`` text starts with what follows the line number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from coordinator.api.models import LabelSelector
from coordinator.cli.main import main
from coordinator.settings import DEFAULT_PROTECTED_NAMESPACES
from coordinator.validation import validate_paths
from coordinator.validation.semantics import selector_contradictions

REPO_ROOT = Path(__file__).resolve().parents[2]
INVALID = REPO_ROOT / "tests" / "data" / "invalid"
CORPUS = sorted(INVALID.glob("*.yaml"))
PROTECTED = frozenset({*DEFAULT_PROTECTED_NAMESPACES, "test-coordinator"})
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")


def expectation(path: Path) -> tuple[int, str]:
    match = EXPECT.match(path.read_text().splitlines()[0])
    assert match, f"{path.name} must start with '# expect: LINE: MESSAGE'"
    return int(match.group(1)), match.group(2)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_each_broken_file_yields_its_error_line(path: Path) -> None:
    line, expected = expectation(path)
    report = validate_paths([path], PROTECTED)
    assert not report.ok
    seen = [f"{f.line}: {f.field + ': ' if f.field else ''}{f.message}" for f in report.findings]
    assert any(text.startswith(f"{line}: {expected}") for text in seen), "\n".join(seen)
    assert all(f.file == str(path) for f in report.findings)


def test_the_examples_pass() -> None:
    report = validate_paths([REPO_ROOT / "examples"], PROTECTED)
    assert report.findings == []
    assert report.warnings == [], "each example's faults serve its scenario's type"
    ours = [
        document
        for path in sorted((REPO_ROOT / "examples").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if isinstance(document, dict) and document.get("kind") in ("ChaosScenario", "ChaosWorkflow", "TestRun")
    ]
    assert report.documents == len(ours), "every example's scenario, workflow and run was checked"


VALID_WORKFLOW = """\
apiVersion: chaos.coordinator.dev/v1alpha1
kind: ChaosScenario
metadata: {name: shrink, namespace: shop}
spec:
  target: {kind: Deployment, labelSelector: {matchLabels: {app: web}}}
  parameters:
    - {name: replicas, type: integer}
  steps:
    - {name: shrink, duration: 2s, faults: [{type: scale, scale: {replicas: "{{ params.replicas }}"}}]}
---
apiVersion: chaos.coordinator.dev/v1alpha1
kind: ChaosWorkflow
metadata: {name: game-day, namespace: shop}
spec:
  parameters:
    - {name: floor, type: integer, default: 1}
    - {name: approver, type: string}
  failurePolicy: Continue
  nodes:
    - {name: first, scenarioRef: {name: shrink}, parameters: {replicas: "{{ params.floor }}"}}
    - {name: gate, suspend: {}, dependsOn: [first]}
    - {name: second, scenarioRef: {name: shrink}, parameters: {replicas: 2}, dependsOn: [gate], when: Always}
    - {name: third, scenarioRef: {name: shrink}, parameters: {replicas: "{{ params.approver }}"}, dependsOn: [gate]}
  triggers:
    - name: rolled-out
      resource: {kind: Deployment, name: web}
      conditions:
        - {fieldPath: status.updatedReplicas, valueFromPath: spec.replicas}
---
apiVersion: chaos.coordinator.dev/v1alpha1
kind: TestRun
metadata: {name: game-day-1, namespace: shop}
spec:
  workflowRef: {name: game-day}
  parameters: {floor: 0, approver: "3"}
"""


def test_a_workflow_its_scenario_and_its_run_pass(tmp_path: Path) -> None:
    path = tmp_path / "game-day.yaml"
    path.write_text(VALID_WORKFLOW)
    report = validate_paths([path], PROTECTED)
    assert report.findings == []
    assert report.documents == 3


def test_a_workflow_parameter_without_a_default_is_judged_by_the_run(tmp_path: Path) -> None:
    """A node value from a workflow parameter without a default is not judged on a stand-in value; the run that
    sets it is (at the run's parameter, naming the node's field)."""
    path = tmp_path / "game-day.yaml"
    path.write_text(VALID_WORKFLOW.replace('approver: "3"', "approver: three"))
    report = validate_paths([path], PROTECTED)
    assert [(f.line, f.field) for f in report.findings] == [(35, "spec.parameters.approver")]
    assert "spec.nodes[3].parameters.replicas: expected an integer" in report.findings[0].message
    assert report.findings[0].stage == "run start"


def test_a_workflow_run_of_a_workflow_elsewhere_is_not_judged(tmp_path: Path) -> None:
    """As for a scenario run: the workflow may be in the cluster already."""
    path = tmp_path / "run.yaml"
    path.write_text(VALID_WORKFLOW.split("---\n")[2])
    assert validate_paths([path], PROTECTED).findings == []


def test_every_dag_problem_is_reported_at_its_entry(tmp_path: Path) -> None:
    path = tmp_path / "dag.yaml"
    text = VALID_WORKFLOW.replace("dependsOn: [first]", "dependsOn: [first, nope, gate, third]")
    path.write_text(text.replace("dependsOn: [gate]}", "dependsOn: [gate, third]}"))
    found = {(f.line, f.field, f.message) for f in validate_paths([path], PROTECTED).findings}
    assert found == {
        (21, "spec.nodes[1].dependsOn[1]", "unknown node 'nope'"),
        (21, "spec.nodes[1].dependsOn[2]", "a node cannot depend on itself"),
        (21, "spec.nodes[1].dependsOn[3]", "dependency cycle: gate -> third -> gate"),
        (23, "spec.nodes[3].dependsOn[1]", "a node cannot depend on itself"),
    }


def test_cli_text_output_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    path = INVALID / "bad-mode.yaml"
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{path}:8: spec.mode: Unsupported value")
    assert "1 error(s) in 1 document(s) in 1 file(s)" in err
    assert main(["validate", str(REPO_ROOT / "examples")]) == 0
    assert "ok:" in capsys.readouterr().err


def test_cli_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--format", "json", str(INVALID / "protected-namespace.yaml")]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["errors"] == [
        {
            "file": str(INVALID / "protected-namespace.yaml"),
            "line": 10,
            "field": "spec.target.namespaces[1]",
            "message": "namespace 'kube-system' is protected: the operator never touches it",
        }
    ]


def test_a_missing_path_is_an_error(tmp_path: Path) -> None:
    report = validate_paths([tmp_path / "nope.yaml"], PROTECTED)
    assert [f.message for f in report.findings] == ["no such file or directory"]


def test_documents_of_other_kinds_are_skipped(tmp_path: Path) -> None:
    manifest = tmp_path / "mixed.yaml"
    manifest.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\napiVersion: apps/v1\nkind: X\n")
    report = validate_paths([tmp_path], PROTECTED)
    assert report.ok
    assert (report.files, report.documents) == (1, 0)


def test_one_mistake_gives_one_finding() -> None:
    """Schema errors stop the later layers, so a typo is not also reported as a CEL or semantic failure."""
    report = validate_paths([INVALID / "bad-mode.yaml"], PROTECTED)
    assert len(report.findings) == 1


@pytest.mark.parametrize(
    ("selector", "contradicts"),
    [
        (
            {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]},
            True,
        ),
        ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, True),
        (
            {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "tier", "operator": "In", "values": ["c"]},
                ]
            },
            True,
        ),
        (
            {
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["a", "b"]},
                    {"key": "tier", "operator": "NotIn", "values": ["a"]},
                ]
            },
            False,
        ),
        ({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, False),
    ],
)
def test_selector_contradictions(selector: dict[str, object], contradicts: bool) -> None:
    found = list(selector_contradictions(LabelSelector.model_validate(selector)))
    assert bool(found) is contradicts, found


def test_a_path_without_our_documents_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # manifests/ holds Deployments and RBAC, none of ours: "ok: 0 documents" used to pass a pipeline.
    assert main(["validate", str(REPO_ROOT / "manifests" / "base")]) == 1
    assert "no ChaosScenario, ChaosWorkflow or TestRun documents" in capsys.readouterr().err
    assert main(["validate", "--format", "json", str(tmp_path)]) == 1
    assert json.loads(capsys.readouterr().out)["ok"] is False


def test_an_empty_steady_state_is_accepted(tmp_path: Path) -> None:
    """The probe-name rule used to read self.probes unguarded: an empty steadyState failed to evaluate, and the
    API server (and validate) refused it with "no such key: probes" (found by the differential fuzz tier)."""
    path = tmp_path / "empty-steady-state.yaml"
    path.write_text(
        "apiVersion: chaos.coordinator.dev/v1alpha1\nkind: ChaosScenario\nmetadata: {name: s, namespace: shop}\n"
        "spec:\n  target: {labelSelector: {matchLabels: {app: web}}}\n  steps: [{name: a, faults: [{type: pod-kill}]}]\n"
        "  steadyState: {}\n"
    )
    assert validate_paths([path], PROTECTED).findings == []
