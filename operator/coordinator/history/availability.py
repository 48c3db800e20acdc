"""Whether the history database takes writes: one view shared by every writer of an operator process.

During an outage the writers (the history timer of each finished run, the deletion handler, the sweeper) do not
each retry on their own, which logged one error per unsynced run every few seconds (about 500 lines a minute)
and sent the database a connection attempt for each. They wait here instead. One prober asks the database again,
with backoff, and lets them all go once it answers. The log gets one line when an outage starts and one when it
ends. A database that refuses us (wrong password, unknown database) does not heal by itself: it is reported
once, at ERROR, with its cause, and asked again less often. ``explain`` is what /readyz shows meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from coordinator.domain.timestamps import format_iso_seconds

log = logging.getLogger(__name__)

TRANSIENT_BACKOFF = (1.0, 10.0)  # seconds: first and longest wait between probes of an unreachable database
PERMANENT_BACKOFF = (30.0, 300.0)  # the same for a database that refuses us (needs a person)


class HistoryAvailability:
    """Up or down, since when and why; ``wait`` returns once the database answers again."""

    def __init__(self, probe: Callable[[], Awaitable[object]], description: str) -> None:
        """``probe`` asks the database (and reports the outcome to ``succeeded``/``failed`` itself)."""
        self._probe = probe
        self.description = description
        self.cause: str | None = None
        self.permanent = False
        self.down_since: float | None = None  # time.time() of the first failure of this outage
        self.next_probe: float | None = None  # time.monotonic() of the next probe
        self.waiting = 0  # writers waiting now
        self._up = asyncio.Event()
        self._up.set()
        self._prober: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def failed(self, cause: str, permanent: bool) -> None:
        """A write or probe failed because the database is unavailable."""
        changed_kind = self.up or permanent != self.permanent
        self.cause, self.permanent = cause, permanent
        if self.up:
            self.down_since = time.time()
            self._up.clear()
        if changed_kind:
            if permanent:
                log.error(
                    "history database %s refuses the operator: %s. This does not heal by itself: check "
                    "COORDINATOR_DATABASE_URL (user, password, database). Finished runs wait and are written "
                    "once it accepts; asking again every %.0f-%.0fs",
                    self.description,
                    cause,
                    *PERMANENT_BACKOFF,
                )
            else:
                log.warning(
                    "history database %s unavailable: %s. Finished runs wait and are written once it is back",
                    self.description,
                    cause,
                )
        self._start_prober()

    def succeeded(self) -> None:
        """A write or probe went through."""
        if self.up:
            return
        outage = time.time() - (self.down_since or time.time())
        log.info(
            "history database %s is back after %.0fs; writing the %d finished run(s) that waited",
            self.description,
            outage,
            self.waiting,
        )
        self.cause, self.permanent, self.down_since, self.next_probe = None, False, None, None
        self._up.set()

    async def wait(self, within: float | None = None) -> bool:
        """Wait (quietly) until the database answers again, at most ``within`` seconds; whether it does."""
        if self.up:
            return True
        self._start_prober()
        self.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._up.wait(), within)
        finally:
            self.waiting -= 1
        return self.up

    def explain(self) -> str:
        """One line for /readyz: why the database is unavailable, since when, and what happens next."""
        if self.up:
            return "available"
        since = format_iso_seconds(datetime.fromtimestamp(self.down_since or time.time(), UTC))
        lasting = time.time() - (self.down_since or time.time())
        parts = [
            f"{'refused (needs a person: check COORDINATOR_DATABASE_URL)' if self.permanent else 'unavailable'} "
            f"since {since} ({lasting:.0f}s): {self.cause}",
            f"{self.waiting} finished run(s) wait for it",
        ]
        if self.next_probe is not None:
            parts.append(f"next attempt in {max(self.next_probe - time.monotonic(), 0):.0f}s")
        return "; ".join(parts)

    def _start_prober(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe_until_up(), name="history prober")

    async def _probe_until_up(self) -> None:
        delay: float | None = None
        while not self.up:
            first, longest = PERMANENT_BACKOFF if self.permanent else TRANSIENT_BACKOFF
            delay = first if delay is None else min(max(delay * 2, first), longest)
            self.next_probe = time.monotonic() + delay
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):  # the probe reports its own outcome (failed/succeeded)
                await self._probe()

    async def close(self) -> None:
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
