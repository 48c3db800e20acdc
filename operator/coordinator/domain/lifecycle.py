"""What a scenario's ``spec.lifecycle`` allows (pure): which runs start, and whether its schedule and triggers fire.

* ``draft``: being written. A run starts only with ``spec.dryRun: true`` (it plans and reports, touching nothing);
  any other run ends ``Error`` with reason ``ScenarioDraft``.
* ``active`` (the default): runs as usual.
* ``deprecated``: runs, and each run posts a Warning Event (reason ``ScenarioDeprecated``); ``coordinator validate``
  warns too.
* ``archived``: kept for its history. New TestRuns are refused at admission (and a run that slipped past, say
  created while the operator was down, ends ``Error`` with reason ``ScenarioArchived``); its schedule and triggers
  stop, as with ``suspend``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DRAFT = "draft"
ACTIVE = "active"
DEPRECATED = "deprecated"
ARCHIVED = "archived"
ARCHIVED_REASON = "ScenarioArchived"
DRAFT_REASON = "ScenarioDraft"


def lifecycle_of(spec: Mapping[str, Any]) -> str:
    """The lifecycle a (raw) scenario spec declares; ``active`` when it declares none."""
    return str(spec.get("lifecycle") or ACTIVE)


def fires(spec: Mapping[str, Any]) -> bool:
    """Whether the scenario's schedule and triggers may create runs (not once it is archived)."""
    return lifecycle_of(spec) != ARCHIVED


def run_refusal(named: str, lifecycle: str, dry_run: bool) -> tuple[str, str] | None:
    """(reason, message) when a run of the scenario ``named`` may not start; None when it may."""
    if lifecycle == ARCHIVED:
        return ARCHIVED_REASON, f"{named} is archived (spec.lifecycle: archived): it takes no new runs"
    if lifecycle == DRAFT and not dry_run:
        return (
            DRAFT_REASON,
            f"{named} is a draft (spec.lifecycle: draft): it runs only with spec.dryRun: true",
        )
    return None


def deprecation_warning(named: str) -> str:
    """The Warning Event (and validate warning) of a run of a deprecated scenario."""
    return f"{named} is deprecated (spec.lifecycle: deprecated): it still runs, but plan to replace it"
