"""``kill -USR1``'s task dump: the await chain reaches into async context managers (where runs got stuck)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from coordinator.cli.run import _await_chain

# The tests' waits pass in the event loop's fake time (looptime).
pytestmark = pytest.mark.looptime


@contextlib.asynccontextmanager
async def held_lock(release: asyncio.Event) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await release.wait()  # a release that does not come: what the dump must show


async def leave_the_lock(release: asyncio.Event) -> None:
    async with held_lock(release):
        pass


async def test_the_chain_goes_into_the_context_managers_generator() -> None:
    release = asyncio.Event()
    task = asyncio.create_task(leave_the_lock(release))
    await asyncio.sleep(0.01)
    chain = _await_chain(task)
    release.set()
    await task
    names = [part.split(" (")[0] for part in chain.split(" -> ")]
    assert names[0] == "leave_the_lock"
    assert "__aexit__" in names
    assert names[names.index("__aexit__") + 1] == "held_lock", chain
    assert names[-1] == "wait", chain
