"""kopf's namespace view, repaired (engine/namespaces.py): namespaces kopf missed between its two listings."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from kopf._cogs.structs.references import Insights, NamespaceName

from coordinator.engine.namespaces import add_missed, missed, reconcile_forever, settled_names
from coordinator.settings import uses_patterns

# The reconciler's intervals and the tests' waits pass in the event loop's fake time (looptime).
pytestmark = pytest.mark.looptime


def test_patterns_are_told_from_exact_names() -> None:
    assert uses_patterns(["team-*"])
    assert uses_patterns(["!kube-*"])
    assert not uses_patterns(["shop", "db"])
    assert not uses_patterns([])


def test_young_and_terminating_namespaces_are_not_counted_as_missed() -> None:
    now = datetime(2026, 11, 23, 12, 0, 30, tzinfo=UTC)
    objects = [
        {"metadata": {"name": "old", "creationTimestamp": "2026-11-23T12:00:00Z"}},
        {"metadata": {"name": "young", "creationTimestamp": "2026-11-23T12:00:25Z"}},
        {"metadata": {"name": "going", "creationTimestamp": "2026-11-23T11:00:00Z", "deletionTimestamp": "x"}},
        {"metadata": {"name": "no-stamp"}},
    ]
    assert settled_names(objects, now) == ["old"]


def test_only_matching_unknown_namespaces_are_missed() -> None:
    known: set[NamespaceName | None] = {NamespaceName("team-a")}
    names = ["team-a", "team-b", "other", "team-pr-1"]
    assert missed(names, ["team-*"], known) == {"team-b", "team-pr-1"}
    assert missed(names, ["team-*, !*-pr-*"], known) == {"team-b"}, "kopf's own pattern syntax, negation included"


async def test_missed_namespaces_join_the_view_and_wake_kopf() -> None:
    insights = Insights()
    insights.namespaces.add(NamespaceName("team-a"))
    woken = asyncio.Event()

    async def orchestrator() -> None:  # what kopf's orchestrator does: wait for a revision
        async with insights.revised:
            await insights.revised.wait()
        woken.set()

    waiter = asyncio.create_task(orchestrator())
    await asyncio.sleep(0)
    assert await add_missed(insights, ["team-a", "team-b"], ["team-*"]) == {"team-b"}
    await asyncio.wait_for(woken.wait(), timeout=1)
    await waiter
    assert insights.namespaces == {"team-a", "team-b"}
    assert await add_missed(insights, ["team-a", "team-b"], ["team-*"]) == set(), "nothing twice"


async def test_reconciler_starts_after_kopf_and_keeps_checking() -> None:
    insights = Insights()
    ready = asyncio.Event()
    listed: list[int] = []
    thrice = asyncio.Event()

    async def names() -> list[str]:
        listed.append(1)
        if len(listed) >= 3:
            thrice.set()
        return ["team-late"]

    task = asyncio.create_task(reconcile_forever(insights, names, ["team-*"], ready, 0.01, 0.01))
    await asyncio.sleep(0.05)
    assert not listed, "nothing before kopf is ready and has listed the namespaces"
    ready.set()
    insights.ready_namespaces.set()
    await asyncio.wait_for(thrice.wait(), timeout=2)
    task.cancel()
    assert len(listed) >= 3
    assert "team-late" in insights.namespaces
