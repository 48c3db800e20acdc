"""Namespaces kopf missed at start-up, added to its view.

With namespace patterns (``--namespace 'team-*'``) kopf lists the namespaces, then starts a watch whose own
initial listing it ignores: a namespace created between those two listings stays unknown to kopf until it
changes, and TestRuns in it are not run (seen in CI: a run created one second after start-up waited until its
namespace was deleted). The operator hands kopf the ``Insights`` it keeps its namespaces in, lists the
namespaces itself now and then, and adds any matching one kopf does not know. Namespaces kopf saw are left alone;
deletions stay kopf's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from kopf._cogs.structs.references import Insights, NamespaceName, match_namespace

from coordinator.domain.timestamps import parse_iso

log = logging.getLogger(__name__)

ListNames = Callable[[], Awaitable[Iterable[str]]]


SETTLE_SECONDS = 10.0  # a younger namespace is still on its way to kopf through the watch: not missed (yet)


def settled_names(objects: Iterable[Mapping[str, Any]], now: datetime, min_age: float = SETTLE_SECONDS) -> list[str]:
    """Names of the namespaces old enough that kopf should know them, and not being deleted (kopf forgets a
    namespace on deletion; adding it back would start watches on nothing). Pure."""
    out = []
    for obj in objects:
        meta = obj.get("metadata") or {}
        created = meta.get("creationTimestamp")
        if meta.get("deletionTimestamp") or not created:
            continue
        if (now - parse_iso(str(created))).total_seconds() >= min_age:
            out.append(str(meta["name"]))
    return out


def missed(names: Iterable[str], patterns: list[str], known: set[NamespaceName | None]) -> set[NamespaceName]:
    """Namespaces that match a pattern but are not in kopf's view (pure)."""
    return {
        NamespaceName(name)
        for name in names
        if name not in known and any(match_namespace(NamespaceName(name), pattern) for pattern in patterns)
    }


async def add_missed(insights: Insights, names: Iterable[str], patterns: list[str]) -> set[NamespaceName]:
    """Add the matching namespaces kopf does not know to its view, and wake its orchestrator."""
    found = missed(names, patterns, set(insights.namespaces))
    if found:
        async with insights.revised:
            insights.namespaces.update(found)
            insights.revised.notify_all()
    return found


STARTUP_INTERVAL = 5.0  # seconds between the first checks: the window in which test and GitOps namespaces appear
STARTUP_CHECKS = 12  # checks at the start-up interval (the first minute) before the slower one


async def reconcile_forever(
    insights: Insights,
    list_names: ListNames,
    patterns: list[str],
    ready: asyncio.Event,
    interval: float,
    startup_interval: float = STARTUP_INTERVAL,
) -> None:
    """After kopf is ready: list the namespaces and add those kopf missed, every ``startup_interval`` seconds
    for the first checks, then every ``interval`` (kopf's namespace watch re-lists, with the same gap, each
    time it reconnects)."""
    await ready.wait()
    await insights.ready_namespaces.wait()
    checks = 0
    while True:
        try:
            found = await add_missed(insights, await list_names(), patterns)
        except Exception as exc:  # an API hiccup: next time
            log.warning("could not list namespaces to check kopf's view: %s", exc)
        else:
            if found:
                log.warning("kopf had not noticed namespace(s) %s; watching them now", ", ".join(sorted(found)))
        checks += 1
        await asyncio.sleep(startup_interval if checks < STARTUP_CHECKS else interval)
