"""The building blocks shared by every resource model: the base class, patterns, durations, label selectors.

Kept apart from ``models`` so that ``probes`` can build on them without a circular import.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from coordinator.api.durations import parse_duration

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

# Every time the operator writes: RFC 3339 in UTC with microseconds, always the same width, so that the written
# strings also sort as the times do. In Python it is an aware datetime, parsed once when the status is read.
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


Timestamp = Annotated[AwareDatetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")]
# "{{ params.NAME }}" in a scenario field is replaced by the TestRun's parameter value when the run starts
# (coordinator.domain.parameters). The CRD schema lets references through in templatable fields; the rendered spec
# is then validated by the models, whose integer fields accept only integers.
PARAM_REFERENCE = r"\{\{ *params\.[A-Za-z_][A-Za-z0-9_]* *\}\}"
PARAM_REFERENCE_MARK = "{{"


def templatable(pattern: str) -> str:
    """The anchored ``pattern`` widened to also accept any string holding a parameter reference."""
    return f"^(({pattern.removeprefix('^').removesuffix('$')})|.*{PARAM_REFERENCE}.*)$"


def _duration_limits(minimum: str, maximum: str) -> str:
    return f"between {minimum} and {maximum}" if parse_duration(minimum) else f"at most {maximum}"


def duration_field(maximum: str, minimum: str = "0s", *, templated: bool = False) -> Any:
    """The schema half of a bounded duration: the pattern, and a CEL rule so the API server refuses a value out
    of range (``kubectl apply`` fails at once). Pair it with ``duration_check`` (same arguments)."""
    rule = f"duration(self) >= duration('{minimum}') && duration(self) <= duration('{maximum}')"
    if templated:
        rule = f"self.contains('{PARAM_REFERENCE_MARK}') || ({rule})"
    return Field(
        pattern=templatable(DURATION_PATTERN) if templated else DURATION_PATTERN,
        max_length=128 if templated else 32,
        json_schema_extra={
            "x-kubernetes-validations": [{"rule": rule, "message": f"must be {_duration_limits(minimum, maximum)}"}]
        },
    )


def duration_check(maximum: str, minimum: str = "0s", *, templated: bool = False) -> AfterValidator:
    """The model half of a bounded duration, with the CEL rule's meaning: a value that only a parameter supplies
    is refused when the run renders it, before anything is applied. A templated field skips the check while it
    still holds a reference."""
    low, high = parse_duration(minimum), parse_duration(maximum)

    def check(value: str) -> str:
        if templated and PARAM_REFERENCE_MARK in value:
            return value
        try:
            seconds = parse_duration(value)
        except ValueError:  # the pattern says what is wrong with it
            return value
        if not low <= seconds <= high:
            raise ValueError(f"{value} is out of range: must be {_duration_limits(minimum, maximum)}")
        return value

    return AfterValidator(check)


def unique_names(items: list[Any], what: str) -> list[Any]:
    """``items`` (models with a ``name``) unchanged; ValueError naming the first duplicate."""
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise ValueError(f"{what} names must be unique: {item.name!r} appears twice")
        seen.add(item.name)
    return items


def _check_cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR such as 10.0.0.0/16 or fd00::/64: {exc}") from None
    return value


# An IP block: isCIDR is the API server's own parser (Kubernetes' CEL network library).
Cidr = Annotated[
    str,
    Field(
        pattern=r"^[0-9a-fA-F:.]+/[0-9]{1,3}$",
        max_length=64,
        json_schema_extra={
            "x-kubernetes-validations": [
                {"rule": "isCIDR(self)", "message": "must be a CIDR such as 10.0.0.0/16 or fd00::/64"}
            ]
        },
    ),
    AfterValidator(_check_cidr),
]


class ConcurrencyPolicy(StrEnum):
    """What a new run of a schedule or trigger does while an earlier one of it is active (as a CronJob's)."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


# The documented maxima (docs/limits.md): long enough for any real experiment, short enough that a typo such as
# "100000h" is refused at once instead of holding a fault for years (or overflowing the clock arithmetic).
MAX_STEP_DURATION = "24h"
MAX_RUN_TIMEOUT = "168h"
MAX_PROBE_INTERVAL = "1h"
MAX_PROBE_TIMEOUT = "10m"
MAX_PROBE_INITIAL_DELAY = "1h"
MIN_PROBE_INTERVAL = "100ms"
RunTimeout = Annotated[str, duration_field(MAX_RUN_TIMEOUT, "1s"), duration_check(MAX_RUN_TIMEOUT, "1s")]

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
