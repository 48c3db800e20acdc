"""The building blocks shared by every resource model: the base class, patterns, durations, label selectors.

Kept apart from ``models`` so that ``probes`` can build on them without a circular import.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

GROUP = "chaos.coordinator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# Held on every TestRun until its faults are reverted.
FINALIZER = f"{GROUP}/finalizer"

# A Go-style duration as Kubernetes writes them: "500ms", "30s", "5m", "1h30m".
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]

# A CEL rule for x-kubernetes-validations: (rule, message) or (rule, message, fieldPath). The optional fieldPath
# (relative to the object, e.g. ".value") is where the API server reports the violation, so the error names the
# offending field instead of the object holding the rule.
CelRule = tuple[str, str] | tuple[str, str, str]


class Model(BaseModel):
    """Base of every resource model: camelCase fields as written, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, use_enum_values=True)
    # CEL rules (x-kubernetes-validations) for the generated schema of this object, see CelRule.
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(Model):
    key: str = Field(min_length=1, max_length=317, description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(
        description="How the key relates to the values: In, NotIn, Exists, DoesNotExist."
    )
    values: list[str] = Field(
        default_factory=list,
        description="Values for In and NotIn (at least one); must be empty for Exists and DoesNotExist.",
    )

    cel_rules = (
        (
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
            " : (!has(self.values) || size(self.values) == 0)",
            "values must be non-empty for In/NotIn and empty for Exists/DoesNotExist",
            ".values",
        ),
    )


class LabelSelector(Model):
    matchLabels: dict[str, str] = Field(
        default_factory=dict, description="Labels a target must carry, all of them, with these exact values."
    )
    matchExpressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Set-based label requirements; all must hold."
    )
