"""Which faults answer which resilience question: a scenario's ``type`` mapped to fault families (pure).

A scenario's ``type`` (``service_restart``, ``network_partition``, ...) names the question it asks; its faults are
what it does. The two can disagree: a ``data_corruption`` scenario that only kills pods corrupts nothing. This
module holds the documented mapping (docs/scenario-types.md), and ``type_mismatches`` lists the faults that do not
serve their scenario's type, which ``coordinator validate`` and the admission webhook report as warnings. It is a
warning, not an error: the type is a label for reports, and a team may file a fault under a question on purpose.

A fault serves a type through its family; a few faults serve a type only with some of their options, a
*variant* (``http-fault`` that corrupts bodies is ``data_corruption``; one that delays is ``network_latency``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# The families, each with its fault types. Every fault type belongs to exactly one.
FAMILIES: dict[str, tuple[str, ...]] = {
    "lifecycle": ("pod-kill", "pod-failure", "container-kill", "rollout-restart", "scale"),
    "node": ("node-cordon", "node-drain"),
    "network": (
        "network-partition",
        "network-loss",
        "network-delay",
        "network-bandwidth",
        "network-duplicate",
        "network-corrupt",
    ),
    "resource": ("cpu-stress", "memory-stress", "io-stress"),
    # Faults at the application protocol: what serves which type depends on the action (its variant).
    "application": ("dns-fault", "http-fault"),
    "time": ("clock-skew",),
}

COMBINED = "combined"


@dataclass(frozen=True)
class Serves:
    """What a scenario type accepts: whole families, single fault types, and fault types in one variant only."""

    families: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    variants: tuple[tuple[str, str], ...] = ()  # (fault type, variant)

    def accepts(self, fault_type: str, variant: str | None) -> bool:
        family = family_of(fault_type)
        return (
            (family is not None and family in self.families)
            or fault_type in self.faults
            or (variant is not None and (fault_type, variant) in self.variants)
        )

    def describe(self) -> str:
        """The accepted faults in words, for a warning."""
        parts = [f"{name} faults ({', '.join(FAMILIES[name])})" for name in self.families]
        parts += list(self.faults)
        parts += [f"{fault} ({variant})" for fault, variant in self.variants]
        return ", ".join(parts)


# The mapping (docs/scenario-types.md explains each row). ``combined`` accepts every fault.
SCENARIO_TYPES: dict[str, Serves] = {
    # An http-fault abort answers as a failing or restarting instance does: an error status, or a reset connection.
    "service_restart": Serves(families=("lifecycle", "node"), variants=(("http-fault", "abort"),)),
    # A name that does not resolve cuts the caller off from its peer as surely as a dropped route.
    "network_partition": Serves(faults=("network-partition", "network-loss"), variants=(("dns-fault", "error"),)),
    "network_latency": Serves(
        faults=("network-delay", "network-bandwidth", "network-loss"),
        variants=(("http-fault", "delay"), ("dns-fault", "delay")),
    ),
    # Taking replicas away exhausts what is left: scale belongs here as well as to service restarts.
    "resource_exhaustion": Serves(families=("resource",), faults=("scale",)),
    # A skewed clock writes wrong timestamps (ordering, expiry, TTLs): the data is what suffers.
    "data_corruption": Serves(
        families=("time",),
        faults=("network-corrupt", "network-duplicate"),
        variants=(
            ("http-fault", "corrupt"),
            ("http-fault", "replace"),
            ("http-fault", "patch"),
            ("dns-fault", "random"),
        ),
    ),
}


def family_of(fault_type: str) -> str | None:
    """The family of ``fault_type``; None for a type no family lists (a new fault not yet mapped)."""
    for name, members in FAMILIES.items():
        if fault_type in members:
            return name
    return None


# The faults whose action decides the type they serve: options field and action names.
_ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "http-fault": ("httpFault", ("abort", "delay", "replace", "patch", "corrupt")),
    "dns-fault": ("dnsFault", ("error", "random", "delay")),
}


def fault_variant(fault: Mapping[str, Any]) -> str | None:
    """The variant of a fault (a spec mapping: ``type`` and its options field) when its family is not enough:
    an http-fault's action (abort, delay, replace, patch or corrupt), a dns-fault's (error, random or delay)."""
    actions = _ACTIONS.get(str(fault.get("type") or ""))
    if actions is not None:
        field, names = actions
        options = fault.get(field)
        if isinstance(options, Mapping):
            given = [action for action in names if action in options]
            if len(given) == 1:
                return given[0]
    return None


@dataclass(frozen=True)
class Mismatch:
    """A fault that does not serve its scenario's type."""

    step: int
    fault: int
    message: str


def type_mismatches(scenario_type: str, steps: Iterable[Mapping[str, Any]]) -> Iterator[Mismatch]:
    """Each fault of ``steps`` (spec mappings) that does not serve ``scenario_type``, with a message saying what
    would. Nothing for ``combined`` or for a type this mapping does not know."""
    serves = SCENARIO_TYPES.get(scenario_type)
    if serves is None:
        return
    for step_index, step in enumerate(steps):
        for fault_index, fault in enumerate(step.get("faults") or []):
            fault_type = str(fault.get("type") or "")
            variant = fault_variant(fault)
            if serves.accepts(fault_type, variant):
                continue
            what = f"{fault_type} ({variant})" if variant else fault_type
            yield Mismatch(
                step_index,
                fault_index,
                f"{what} does not test {scenario_type}: a {scenario_type} scenario uses {serves.describe()}; "
                f"set the scenario's type to {COMBINED} or to the question this fault asks",
            )
