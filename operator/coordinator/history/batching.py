"""Group commit: concurrent writers share transactions.

A hundred runs finishing together used to mean a hundred one-row transactions, each building its statements,
checking a connection out of the pool (a ping) and committing: the mirror was 13 % of the operator's CPU in the
throughput benchmark. Callers now hand their item to a ``GroupCommit`` and wait; one writer at a time takes
everything queued so far (up to ``limit``) and writes it in one call. A lone caller is written at once, so an idle
operator mirrors as fast as before; under load, the items that arrive during a write go together in the next.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class GroupCommit(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[object]],
        limit: int,
        is_retryable: Callable[[BaseException], bool],
    ) -> None:
        """``write`` stores a batch all or nothing. When it fails with an error ``is_retryable`` accepts (the
        database is away), every caller in the batch gets that error; any other error (one bad item) makes the
        batch be written again item by item, so only the item at fault fails."""
        self._write = write
        self._limit = limit
        self._is_retryable = is_retryable
        self._pending: list[tuple[T, asyncio.Future[None]]] = []
        self._writer = asyncio.Lock()
        self.batches = 0  # writes made, for tests and metrics

    async def submit(self, item: T) -> None:
        """Return once ``item`` is written (by this caller or another); raise what writing it raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (item, done)
        self._pending.append(entry)
        try:
            async with self._writer:
                if not done.done():
                    batch, self._pending = self._pending[: self._limit], self._pending[self._limit :]
                    await self._write_batch(batch)
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._pending.remove(entry)  # not written yet: nobody else should write it for us now
            if not done.done():
                done.cancel()
            raise
        await done

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        self.batches += 1
        try:
            await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            # This writer is cancelled: the other callers of the batch still wait for the lock; they write it.
            self._pending[:0] = [entry for entry in batch if not entry[1].done()]
            raise
        except Exception as exc:
            if len(batch) == 1 or self._is_retryable(exc):
                for _, done in batch:
                    _settle(done, exc)
                return
            for item, done in batch:  # find the item at fault; the others are written
                try:
                    self.batches += 1
                    await self._write([item])
                except Exception as single:
                    _settle(done, single)
                else:
                    _settle(done, None)
            return
        for _, done in batch:
            _settle(done, None)


def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
    if done.done():
        return
    if exc is None:
        done.set_result(None)
    else:
        done.set_exception(exc)
