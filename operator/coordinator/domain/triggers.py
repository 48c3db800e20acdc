"""When a trigger fires, as pure functions of what it saw (``spec.triggers`` on ChaosScenario and ChaosWorkflow).

A trigger fires on an *edge*: an object that did not meet its conditions and now does. An object that already
met them when the trigger was first seen fires nothing (it is only recorded as matching); it fires again only
after it stopped meeting them and meets them again. The set of matching objects is kept in the owner's
``status.triggers[].matching``, so a restarted operator compares what it sees with what was recorded: it neither
fires again for an edge it already handled nor misses one that happened while it was down.

An edge starts a run unless one of these says no: an emergency stop (the edge is consumed, as a scheduled time
missed during a pause), ``cooldown`` since the trigger's last run, or ``concurrencyPolicy`` Forbid while a run it
started is active (the scheduler's ``decide`` applies the policy, as for a scheduled time).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from coordinator.api.base import ConcurrencyPolicy
from coordinator.domain.schedule import MAX_NAME_LENGTH, Action
from coordinator.domain.schedule import decide as decide_schedule
from coordinator.domain.timestamps import format_iso_seconds

# status.triggers[].matching holds at most this many UIDs: a selector matching thousands of objects must not grow
# the owner's status without bound. Beyond it, the operator still remembers every UID while it runs; after a
# restart an unrecorded one may fire once more (cooldown still applies).
MAX_MATCHING = 100


@dataclass(frozen=True)
class Edge:
    """One object that began to meet the conditions, and what the trigger does about it."""

    uid: str
    action: Action  # CREATE or REPLACE: start a run; NONE: skipped
    skipped: str | None = None  # why it starts no run

    @property
    def fires(self) -> bool:
        return self.action in (Action.CREATE, Action.REPLACE)


@dataclass(frozen=True)
class TriggerPlan:
    """What a trigger does now: the objects meeting its conditions, and its edges in order."""

    matching: frozenset[str]
    edges: tuple[Edge, ...] = ()


def new_edges(previous: frozenset[str] | None, meeting: Iterable[str]) -> list[str]:
    """The UIDs that began to meet the conditions since ``previous`` (sorted); none when the trigger is first
    seen (``previous`` None): edge, not level."""
    if previous is None:
        return []
    return sorted(set(meeting) - previous)


def decide(
    previous: frozenset[str] | None,
    meeting: Iterable[str],
    *,
    now: datetime,
    last_fired: datetime | None,
    cooldown: float,
    policy: ConcurrencyPolicy | str,
    active: int,
    paused: str | None = None,
) -> TriggerPlan:
    """Apply edge detection, the pause, the cooldown and the concurrency policy to what the trigger sees now.

    ``previous``: the UIDs that met the conditions when last looked at (None: never looked at); ``meeting``: those
    that meet them now; ``active``: the runs this trigger started that are not finished; ``paused``: why runs may
    not start now (an emergency stop), if so. Several edges at once are taken in UID order, each seeing the runs
    the ones before it started (the cooldown then skips all but the first, unless it is zero).
    """
    matching = frozenset(meeting)
    edges: list[Edge] = []
    for uid in new_edges(previous, matching):
        if paused is not None:
            edges.append(Edge(uid, Action.NONE, paused))
            continue
        if last_fired is not None and (now - last_fired).total_seconds() < cooldown:
            edges.append(
                Edge(
                    uid,
                    Action.NONE,
                    f"within the cooldown ({cooldown:g}s) of the last run at {format_iso_seconds(last_fired)}",
                )
            )
            continue
        action = decide_schedule(now, False, policy, active)
        if action == Action.WAIT:
            edges.append(Edge(uid, Action.NONE, "concurrencyPolicy Forbid: a run it started is still active"))
            continue
        edges.append(Edge(uid, action))
        last_fired = now
        active = 1 if action == Action.REPLACE else active + 1
    return TriggerPlan(matching, tuple(edges))


def recorded(matching: Iterable[str]) -> list[str]:
    """The UIDs written to ``status.triggers[].matching``: sorted, at most ``MAX_MATCHING``."""
    return sorted(matching)[:MAX_MATCHING]


def run_name(owner: str, trigger: str, uid: str, version: str, fired: int) -> str:
    """The TestRun an edge starts: ``<owner>-<trigger>-<hash>``, at most 63 characters.

    The hash covers the owner, the trigger, the object's UID and version (its generation, else its
    resourceVersion) and how many runs the trigger had started: the same edge seen again by a restarted operator
    (its status write lost) gets the same name, so the API server answers 409 instead of a duplicate, while a
    later edge of the same object (it stopped meeting the conditions, then met them again) gets a new one.
    """
    digest = hashlib.sha256(f"{owner}\0{trigger}\0{uid}\0{version}\0{fired}".encode()).hexdigest()[:10]
    suffix = f"-{digest}"
    return f"{owner}-{trigger}"[: MAX_NAME_LENGTH - len(suffix)].rstrip("-.") + suffix


def object_version(obj: Mapping[str, Any]) -> str:
    """What identifies the version of a watched object in a run name: its generation, else resourceVersion.

    The generation changes only with the object's spec, so a restart that finds the same edge after a mere
    status update of the object still names the same run."""
    meta = obj.get("metadata") or {}
    generation = meta.get("generation")
    return f"g{generation}" if generation is not None else f"rv{meta.get('resourceVersion', '')}"


def triggered_by(trigger: str, obj: Mapping[str, Any], at: datetime) -> str:
    """The ``chaos.coordinator.dev/triggered-by`` annotation of a triggered run: compact JSON naming the trigger,
    the object (apiVersion, kind, namespace, name, uid, resourceVersion) and the time."""
    meta = obj.get("metadata") or {}
    value = {
        "trigger": trigger,
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "at": format_iso_seconds(at),
    }
    return json.dumps({k: v for k, v in value.items() if v is not None}, separators=(",", ":"))
