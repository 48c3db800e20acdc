"""What the report cache offers (``redis.py`` has it in Redis and in process): the store's reports use it.

Apart from ``redis.py`` so that reading the history (``store.py``, the ``coordinator history`` command) never
imports a Redis client.
"""

from __future__ import annotations

from typing import Protocol


class ReportCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, ttl: float) -> None: ...

    async def generation(self) -> int: ...

    async def bump(self) -> None: ...
