"""Triggers: start a run of a ChaosScenario or ChaosWorkflow when a watched object reaches a condition.

A trigger watches objects of one kind (by name or label selector, in a namespace the scenario may target) and fires
on the edge where an object starts to meet every one of its conditions (a field path compared with a value or with
another field, as the ``k8s`` probe compares them). ``cooldown`` spaces its runs; ``concurrencyPolicy`` says what a
firing does while an earlier triggered run is active, as for schedules.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from coordinator.api.base import (
    DNS_LABEL_PATTERN,
    ConcurrencyPolicy,
    LabelSelector,
    Model,
    Timestamp,
    duration_check,
    duration_field,
    unique_names,
)
from coordinator.api.probes import API_VERSION_PATTERN, KIND_PATTERN, OBJECT_NAME_PATTERN, Comparison

MAX_COOLDOWN = "168h"
Cooldown = Annotated[str, duration_field(MAX_COOLDOWN), duration_check(MAX_COOLDOWN)]
FIELD_PATH_PATTERN = r"^[A-Za-z0-9_.\[\]-]+$"
# Trigger names go into the names of the runs they start (<scenario>-<trigger>-<hash>).
MAX_TRIGGER_NAME = 40


class TriggerResource(Model):
    """The objects a trigger watches."""

    apiVersion: str = Field(
        default="apps/v1", pattern=API_VERSION_PATTERN, max_length=253, description="e.g. apps/v1 or v1."
    )
    kind: str = Field(default="Deployment", pattern=KIND_PATTERN, max_length=63, description="e.g. Deployment.")
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Their namespace; the scenario's (or workflow's) own when omitted. It must be one the scenario "
        "may target: never a protected namespace, and one its requester may watch.",
    )
    name: str | None = Field(default=None, pattern=OBJECT_NAME_PATTERN, max_length=253, description="One object.")
    labelSelector: LabelSelector | None = Field(default=None, description="Objects by label.")

    cel_rules = (("has(self.name) != has(self.labelSelector)", "exactly one of name and labelSelector is required"),)


class TriggerCondition(Model):
    """One comparison of a field of the watched object, e.g. status.updatedReplicas == spec.replicas."""

    fieldPath: str = Field(
        max_length=256, pattern=FIELD_PATH_PATTERN, description="Dotted path of the field, e.g. status.readyReplicas."
    )
    operator: Comparison = Field(default=Comparison.EQ, description="How the field compares (numbers numerically).")
    value: int | str | None = Field(default=None, description="The value to compare with.")
    valueFromPath: str | None = Field(
        default=None,
        max_length=256,
        pattern=FIELD_PATH_PATTERN,
        description="Compare with another field of the same object instead, e.g. spec.replicas.",
    )

    cel_rules = (("has(self.value) != has(self.valueFromPath)", "exactly one of value and valueFromPath is required"),)


class Trigger(Model):
    """Start a run when a watched object starts to meet every condition (once per such edge)."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=MAX_TRIGGER_NAME, description="The trigger's name.")
    resource: TriggerResource = Field(description="The objects to watch.")
    conditions: list[TriggerCondition] = Field(
        min_length=1, max_length=16, description="All must hold for an object to meet the trigger."
    )
    cooldown: Cooldown = Field(
        default="5m", description="The least time between two runs this trigger starts; an edge within it is skipped."
    )
    concurrencyPolicy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.ALLOW,
        description="When the trigger fires while a run it started is active: Allow starts another, Forbid skips "
        "this firing, Replace aborts the active run (every fault reverted) and starts a new one.",
    )


class Triggers(Model):
    """The ``triggers`` field shared by ChaosScenario and ChaosWorkflow."""

    triggers: list[Trigger] = Field(
        default_factory=list,
        max_length=8,
        description="Start a TestRun when a watched object reaches a condition (see Trigger). Each triggered run "
        "is annotated chaos.coordinator.dev/triggered-by with what triggered it, and acts with the rights of who "
        "last changed this spec.",
    )

    @field_validator("triggers")
    @classmethod
    def _unique_triggers(cls, triggers: list[Trigger]) -> list[Trigger]:
        return unique_names(triggers, "trigger")


class TriggerStatus(Model):
    """What one trigger last saw and did."""

    name: str = Field(description="The trigger's name.")
    matching: list[str] = Field(
        default_factory=list,
        description="The watched objects (by UID) that meet the conditions now: each started at most one run when "
        "it began to meet them, and starts another only after it stopped meeting them.",
    )
    lastFiredAt: Timestamp | None = Field(default=None, description="When the trigger last started a run.")
    lastRun: str | None = Field(default=None, description="The TestRun it last started.")
    lastSkipped: str | None = Field(default=None, description="Why the last edge started no run, if it did not.")
    fired: int = Field(default=0, description="How many runs it started.")
