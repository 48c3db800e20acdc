"""spec.lifecycle's rules (domain/lifecycle.py) and what `coordinator validate` says of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.domain.lifecycle import deprecation_warning, fires, lifecycle_of, run_refusal
from coordinator.settings import DEFAULT_PROTECTED_NAMESPACES
from coordinator.validation import validate_paths

pytestmark = pytest.mark.unit
PROTECTED = frozenset({*DEFAULT_PROTECTED_NAMESPACES, "test-coordinator"})


@pytest.mark.parametrize(
    ("lifecycle", "dry_run", "reason"),
    [
        ("active", False, None),
        ("deprecated", False, None),
        ("draft", True, None),
        ("draft", False, "ScenarioDraft"),
        ("archived", False, "ScenarioArchived"),
        ("archived", True, "ScenarioArchived"),
    ],
)
def test_which_runs_start(lifecycle: str, dry_run: bool, reason: str | None) -> None:
    refused = run_refusal("ChaosScenario demo/x", lifecycle, dry_run)
    assert (refused[0] if refused else None) == reason
    if refused:
        assert refused[1].startswith(f"ChaosScenario demo/x is {'a draft' if lifecycle == 'draft' else 'archived'}")


def test_only_archived_scenarios_stop_firing() -> None:
    assert lifecycle_of({}) == "active"
    assert [fires({"lifecycle": v}) for v in ("draft", "active", "deprecated", "archived")] == [True] * 3 + [False]
    assert "deprecated" in deprecation_warning("ChaosScenario demo/x")


FILES = """\
apiVersion: chaos.coordinator.dev/v1alpha1
kind: ChaosScenario
metadata: {{name: s, namespace: demo}}
spec:
  lifecycle: {lifecycle}
  target: {{kind: Pod, labelSelector: {{matchLabels: {{app: web}}}}}}
  steps: [{{name: kill, faults: [{{type: pod-kill}}]}}]
---
apiVersion: chaos.coordinator.dev/v1alpha1
kind: TestRun
metadata: {{name: r, namespace: demo}}
spec:
  scenarioRef: {{name: s}}
  dryRun: {dry_run}
"""


@pytest.mark.parametrize(
    ("lifecycle", "dry_run", "errors", "warnings"),
    [
        ("active", "false", [], []),
        ("draft", "true", [], []),
        ("draft", "false", [("spec.dryRun", "is a draft")], []),
        ("archived", "true", [("spec.scenarioRef.name", "is archived")], []),
        ("deprecated", "false", [], [("spec.lifecycle", "is deprecated")]),
    ],
)
def test_validate_judges_runs_by_their_scenarios_lifecycle(
    tmp_path: Path, lifecycle: str, dry_run: str, errors: list[tuple[str, str]], warnings: list[tuple[str, str]]
) -> None:
    path = tmp_path / "files.yaml"
    path.write_text(FILES.format(lifecycle=lifecycle, dry_run=dry_run))
    report = validate_paths([path], PROTECTED)
    assert [f.field for f in report.findings] == [field for field, _ in errors]
    # The webhook refuses an archived scenario's run (admission); a draft's run is admitted and ends Error.
    assert [f.stage for f in report.findings] == [
        "admission" if field == "spec.scenarioRef.name" else "run start" for field, _ in errors
    ]
    assert all(text in f.message for f, (_, text) in zip(report.findings, errors, strict=True))
    assert [f.field for f in report.warnings] == [field for field, _ in warnings]
    assert all(text in f.message for f, (_, text) in zip(report.warnings, warnings, strict=True))
