"""kopf's diff base, kept nowhere: the operator reacts to no change of an object, only to its deletion.

kopf stores the "last handled" essence of every object that has a create/update/resume/delete handler, so that it
can tell a creation or an update from a repeat. With on-delete handlers only (the TestRun's revert and its
history), nothing ever reads that essence: storing it cost every TestRun one PATCH at creation and an annotation
the size of its spec. ``NoDiffBase`` reports every object as already handled as it is. A deletion is still
detected, from ``metadata.deletionTimestamp``, which the diff base plays no part in.

``changing_reasons_handled`` lets a test hold the premise: should a create/update/resume handler ever be added,
it must come with a real diff base (``kopf.AnnotationsDiffBaseStorage``), or it would never be called.
"""

from __future__ import annotations

from typing import cast

import kopf


class NoDiffBase(kopf.DiffBaseStorage):
    """Every object looks as last handled exactly as it is now: no create, update or resume cause, nothing stored."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        # The essence kopf builds of ``body`` leaves out the status and all metadata but labels and annotations:
        # do not deep-copy them (a TestRun's status and managedFields are most of it) only to drop them.
        metadata = body.get("metadata") or {}
        kept = {key: value for key, value in body.items() if key not in ("metadata", "status")}
        kept["metadata"] = {key: metadata[key] for key in ("labels", "annotations") if key in metadata}
        return self.build(body=cast(kopf.Body, kept))

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def changing_reasons_handled(registry: kopf.OperatorRegistry) -> set[str]:
    """The causes (``create``, ``update``, ``resume``, ``delete``) the registry's changing handlers react to."""
    reasons: set[str] = set()
    for handler in registry._changing.get_all_handlers():  # kopf lists them nowhere public
        if handler.initial:
            reasons.add("resume")
        reasons.add(handler.reason.value if handler.reason is not None else "any")
    return reasons
