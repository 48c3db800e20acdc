"""The checks a trigger meets before it may watch anything, made offline: the namespace it watches must be one the
scenario (or workflow) may target, and its label selector must be one that can be sent and can match."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from coordinator.api.triggers import Trigger
from coordinator.domain.selection import SelectionError, label_selector_to_string, namespace_allowed
from coordinator.engine.probing import ProbeReach
from coordinator.validation.semantics import selector_contradictions
from coordinator.validation.source import FieldPath


def trigger_rules(spec: Mapping[str, Any], reach: ProbeReach, own_namespace: str | None) -> list[tuple[FieldPath, str]]:
    """(field, message) for each trigger of a schema-valid ChaosScenario or ChaosWorkflow spec that the operator
    would refuse to watch: a protected namespace (named, or the object's own when omitted), a selector it cannot
    send or that never matches. The schema and its rules have already checked the rest (a kind and apiVersion of
    the right shape, exactly one of name and labelSelector, a value or valueFromPath in every condition)."""
    findings: list[tuple[FieldPath, str]] = []
    for index, raw in enumerate(spec.get("triggers") or []):
        try:
            trigger = Trigger.model_validate(raw)
        except ValidationError:
            continue  # the schema findings cover it
        base: FieldPath = ("spec", "triggers", index, "resource")
        namespace = trigger.resource.namespace or own_namespace or "default"
        # As a run asks before it touches a namespace; whether that namespace opted in is the cluster's to say.
        allowed, reason = namespace_allowed(
            namespace, protected=reach.protected, namespace_labels={}, require_opt_in=False
        )
        if not allowed:
            where = (*base, "namespace") if trigger.resource.namespace else base
            findings.append((where, f"trigger {trigger.name}: {reason}"))
        selector = trigger.resource.labelSelector
        if selector is not None:
            at: FieldPath = (*base, "labelSelector")
            try:
                label_selector_to_string(selector)
            except SelectionError as exc:
                findings.append((at, exc.args[0] if exc.args else str(exc)))
            findings += [((*at, *where), message) for where, message in selector_contradictions(selector)]
    return findings
