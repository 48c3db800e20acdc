"""Group commit (history/batching.py): concurrent callers share writes, and errors reach the right callers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from coordinator.history.batching import GroupCommit

# The store's write delays and the tests' waits pass in the event loop's fake time (looptime).
pytestmark = pytest.mark.looptime


class Away(Exception):
    """Stands for HistoryUnavailable: the whole batch may be retried later."""


class Store:
    def __init__(self, bad: set[int] | None = None, away: bool = False, delay: float = 0.01) -> None:
        self.writes: list[list[int]] = []
        self.bad = bad or set()
        self.away = away
        self.delay = delay

    async def write(self, items: Sequence[int]) -> None:
        await asyncio.sleep(self.delay)
        if self.away:
            raise Away("database down")
        if self.bad & set(items):
            raise ValueError(f"bad item in {list(items)}")
        self.writes.append(list(items))


def commit(store: Store, limit: int = 100) -> GroupCommit[int]:
    return GroupCommit(store.write, limit=limit, is_retryable=lambda exc: isinstance(exc, Away))


async def test_a_lone_item_is_written_at_once() -> None:
    store = Store()
    group = commit(store)
    await group.submit(1)
    assert store.writes == [[1]]


async def test_items_arriving_during_a_write_share_the_next() -> None:
    store = Store()
    group = commit(store)
    await asyncio.gather(*(group.submit(i) for i in range(50)))
    assert sorted(i for batch in store.writes for i in batch) == list(range(50)), "each item written once"
    assert store.writes[0] == [0], "the first caller does not wait for company"
    assert len(store.writes) == 2, f"the other 49 share one write: {store.writes}"


async def test_batches_respect_the_limit() -> None:
    store = Store()
    group = commit(store, limit=10)
    await asyncio.gather(*(group.submit(i) for i in range(35)))
    assert max(len(batch) for batch in store.writes) <= 10
    assert sorted(i for batch in store.writes for i in batch) == list(range(35))


async def test_an_unavailable_store_fails_every_caller_of_the_batch() -> None:
    store = Store(away=True)
    group = commit(store)
    results = await asyncio.gather(*(group.submit(i) for i in range(5)), return_exceptions=True)
    assert all(isinstance(r, Away) for r in results), results
    assert group.batches == 2, "retryable errors are not retried item by item"


async def test_a_bad_item_fails_alone() -> None:
    store = Store(bad={3})
    group = commit(store)
    results = await asyncio.gather(*(group.submit(i) for i in range(6)), return_exceptions=True)
    assert isinstance(results[3], ValueError)
    assert [r for i, r in enumerate(results) if i != 3] == [None] * 5
    assert sorted(i for batch in store.writes for i in batch) == [0, 1, 2, 4, 5]


async def test_a_cancelled_writer_leaves_its_batch_to_the_others() -> None:
    store = Store(delay=0.2)
    group = commit(store)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.05)  # 0 is being written
    others = [asyncio.create_task(group.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0.3)  # 1, 2, 3 are being written by the first of them
    writer = others[0]
    writer.cancel()
    results = await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), timeout=5)
    await first
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [None, None], "the batch's other callers are not left waiting"
    written = sorted(i for batch in store.writes for i in batch)
    assert {0, 2, 3} <= set(written)


async def test_a_caller_cancelled_before_its_turn_is_not_written() -> None:
    store = Store(delay=0.2)
    group = commit(store)
    first = asyncio.create_task(group.submit(0))
    await asyncio.sleep(0.05)
    late = asyncio.create_task(group.submit(9))
    await asyncio.sleep(0.01)
    late.cancel()
    with pytest.raises(asyncio.CancelledError):
        await late
    await first
    assert 9 not in [i for batch in store.writes for i in batch]
