"""Which target kinds a scenario's faults act on: the one check both the run (engine) and ``coordinator validate``
make, derived from each fault type's declaration (``FaultDeclaration.kinds``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from coordinator.api.models import DECLARED, ChaosScenarioSpec, FaultDeclaration

FieldPath = tuple[str | int, ...]


def kind_problems(
    scenario: ChaosScenarioSpec, declared: Mapping[str, FaultDeclaration[Any]] = DECLARED
) -> list[tuple[FieldPath, str]]:
    """Each fault that cannot act on ``spec.target.kind``, as (field path, message), in the scenario's order:
    ``(("spec", "steps", 0, "faults", 1, "type"), "scale acts on Deployment/StatefulSet, not spec.target.kind Pod")``.
    """
    kind = str(scenario.target.kind)
    problems: list[tuple[FieldPath, str]] = []
    for index, step in enumerate(scenario.steps):
        for f_index, fault in enumerate(step.faults):
            kinds = declared[str(fault.type)].kinds
            if kind not in kinds:
                problems.append(
                    (
                        ("spec", "steps", index, "faults", f_index, "type"),
                        f"{fault.type} acts on {'/'.join(sorted(kinds))}, not spec.target.kind {kind}",
                    )
                )
    return problems
