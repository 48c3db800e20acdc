"""The mapping from a scenario's ``type`` to fault families, and the warnings it gives (domain/scenario_types.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.api.models import FaultType, ScenarioType
from coordinator.cli.main import main
from coordinator.domain.scenario_types import FAMILIES, SCENARIO_TYPES, family_of, type_mismatches
from coordinator.engine.admission_rights import scenario_admission_warnings
from coordinator.settings import DEFAULT_PROTECTED_NAMESPACES
from coordinator.validation import validate_paths

pytestmark = pytest.mark.unit
PROTECTED = frozenset({*DEFAULT_PROTECTED_NAMESPACES, "test-coordinator"})


def _steps(*types: str) -> list[dict[str, object]]:
    return [{"name": f"s{i}", "faults": [{"type": t}]} for i, t in enumerate(types)]


def test_every_fault_type_is_in_exactly_one_family() -> None:
    listed = [fault for members in FAMILIES.values() for fault in members]
    assert sorted(listed) == sorted(str(t) for t in FaultType), "a new fault type needs its family"
    assert all(family_of(str(t)) is not None for t in FaultType)


def test_every_type_but_combined_is_mapped() -> None:
    assert set(SCENARIO_TYPES) == {str(t) for t in ScenarioType} - {"combined"}


@pytest.mark.parametrize(
    ("scenario_type", "fault", "fits"),
    [
        ("service_restart", "pod-kill", True),
        ("service_restart", "node-drain", True),
        ("service_restart", "cpu-stress", False),
        ("network_partition", "network-partition", True),
        ("network_partition", "network-delay", False),
        ("network_latency", "network-delay", True),
        ("network_latency", "pod-kill", False),
        ("resource_exhaustion", "memory-stress", True),
        ("resource_exhaustion", "scale", True),
        ("resource_exhaustion", "network-loss", False),
        ("data_corruption", "network-corrupt", True),
        ("data_corruption", "pod-kill", False),
        ("combined", "pod-kill", True),
        ("combined", "cpu-stress", True),
    ],
)
def test_which_faults_serve_which_type(scenario_type: str, fault: str, fits: bool) -> None:
    assert (not list(type_mismatches(scenario_type, _steps(fault)))) is fits


@pytest.mark.parametrize(
    ("action", "fits"),
    [
        ({"corrupt": {"mode": "flip"}}, {"data_corruption"}),
        ({"patch": {"jsonMergePatch": {}}}, {"data_corruption"}),
        ({"replace": {"body": "x"}}, {"data_corruption"}),
        ({"delay": {"duration": "1s"}}, {"network_latency"}),
        ({"abort": {"statusCode": 503}}, {"service_restart"}),
    ],
)
def test_an_http_fault_serves_the_type_of_its_action(action: dict[str, object], fits: set[str]) -> None:
    steps = [{"name": "s", "faults": [{"type": "http-fault", "httpFault": {"port": 80, **action}}]}]
    assert {t for t in SCENARIO_TYPES if not list(type_mismatches(t, steps))} == fits
    (mismatch,) = type_mismatches("resource_exhaustion", steps)
    assert mismatch.message.startswith(f"http-fault ({next(iter(action))}) does not test resource_exhaustion")


def test_a_mismatch_names_the_fault_its_place_and_what_would_fit() -> None:
    (mismatch,) = type_mismatches("data_corruption", _steps("network-corrupt", "pod-kill"))
    assert (mismatch.step, mismatch.fault) == (1, 0)
    assert mismatch.message.startswith("pod-kill does not test data_corruption: a data_corruption scenario uses ")
    assert "network-corrupt" in mismatch.message
    assert "combined" in mismatch.message


def test_the_webhook_warns_as_kubectl_prints_it() -> None:
    body = {"spec": {"type": "network_latency", "steps": _steps("network-delay", "cpu-stress")}}
    (warning,) = scenario_admission_warnings(body)
    assert warning.startswith("spec.steps[1].faults[0].type: cpu-stress does not test network_latency")
    assert scenario_admission_warnings({"spec": {"steps": _steps("cpu-stress")}}) == []  # no type: combined


SCENARIO = """\
apiVersion: chaos.coordinator.dev/v1alpha1
kind: ChaosScenario
metadata: {name: mixed, namespace: demo}
spec:
  type: data_corruption
  target: {kind: Pod, labelSelector: {matchLabels: {app: web}}}
  steps:
    - name: kill
      faults:
        - type: pod-kill
"""


def test_validate_warns_without_failing_unless_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(SCENARIO)
    report = validate_paths([path], PROTECTED)
    assert report.ok
    assert report.findings == []
    (warning,) = report.warnings
    assert (warning.line, warning.field) == (10, "spec.steps[0].faults[0].type")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == f"{path}:10: spec.steps[0].faults[0].type: warning: {warning.message}"
    assert "ok: 1 document(s) in 1 file(s) (1 warning(s))" in err
    assert main(["validate", "--strict", str(path)]) == 1
    assert "1 warning(s) in 1 document(s)" in capsys.readouterr().err
    assert main(["validate", "--strict", "--format", "json", str(path)]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["errors"] == []
    assert [w["field"] for w in result["warnings"]] == ["spec.steps[0].faults[0].type"]
