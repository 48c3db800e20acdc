"""Target locks: one run at a time changes a target, across every operator process of the instance.

A run holds the locks on its step's targets while it injects; the lease is renewed while it is held and lapses
when it cannot be, and then the run stops injecting and reverts. Locks fail closed: while the store cannot be
asked nobody takes a target (the run waits, and says so in its status). An in-process fallback knew nothing of
the locks other processes held in Redis, and let three scale runs hold one Deployment.

``LocalTargetLocks`` serves a single operator process (no ``COORDINATOR_REDIS_URL``); ``RedisTargetLocks``
shares them through Redis, whose commands are ``history/redis.py``'s ``RedisLockStore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.history.redis import LockStoreDown, RedisServices

log = logging.getLogger(__name__)


class LockRefused(Exception):
    """A target is already held by another run."""

    def __init__(self, key: str, holder: str) -> None:
        super().__init__(f"target {key} is locked by {holder or 'another run'}")
        self.key = key
        self.holder = holder


class LockStoreUnavailable(LockRefused):
    """The lock store cannot be asked: nobody may take the target (fail closed), the run waits."""

    def __init__(self, key: str, cause: str) -> None:
        Exception.__init__(self, f"the target lock store is unreachable ({cause}): waiting before touching {key}")
        self.key = key
        self.holder = ""


@dataclass
class LockLease:
    """What ``hold`` yields: the keys held, by whom, with which token, and until when it is known to be ours.

    ``valid_until`` (monotonic) moves on with every renewal the store confirmed, counted from the moment the
    renewal was *sent*: the store's own expiry is never earlier, so a holder that stops at ``valid_until`` has
    stopped before anybody else can take the keys. ``lost`` says why the store no longer has them (it was
    restarted empty, or another holder took them after an expiry).
    """

    keys: tuple[str, ...]
    owner: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    valid_until: float = float("inf")
    lost: str | None = None

    @property
    def lapsed(self) -> bool:
        """Whether the lock may no longer be ours: its holder must stop changing the targets, and revert."""
        return self.lost is not None or time.monotonic() >= self.valid_until

    def why_lapsed(self) -> str:
        if self.lost is not None:
            return self.lost
        return "it could not be renewed before its TTL ran out (lock store unreachable)"


class TargetLocks(Protocol):
    def hold(
        self, keys: Iterable[str], ttl: float, owner: str = ""
    ) -> contextlib.AbstractAsyncContextManager[LockLease]:
        """Hold every key (all or none) for the body of the ``async with``; raise ``LockRefused`` if one is held.

        ``ttl`` (seconds) bounds how long a crashed holder blocks others; while the body runs the lease is renewed.
        """
        ...


class LocalTargetLocks:
    """In-process target locks: the same semantics as Redis within one operator process."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, str, float]] = {}  # key -> (token, owner, expires at, monotonic)

    def _holder(self, key: str) -> tuple[str, str, float] | None:
        held = self._held.get(key)
        if held is not None and held[2] <= time.monotonic():
            del self._held[key]
            return None
        return held

    def acquire(self, lease: LockLease, ttl: float) -> None:
        # No await between the check and the set: atomic within the event loop.
        for key in lease.keys:
            held = self._holder(key)
            if held is not None and held[0] != lease.token:
                raise LockRefused(key, held[1])
        for key in lease.keys:
            self._held[key] = (lease.token, lease.owner, time.monotonic() + ttl)

    def renew(self, lease: LockLease, ttl: float) -> bool:
        """Extend the keys still ours; False when one of them is not (any more)."""
        kept = True
        for key in lease.keys:
            held = self._held.get(key)
            if held is not None and held[0] == lease.token:
                self._held[key] = (lease.token, lease.owner, time.monotonic() + ttl)
            else:
                kept = False
        return kept

    def release(self, lease: LockLease) -> None:
        for key in lease.keys:
            held = self._held.get(key)
            if held is not None and held[0] == lease.token:
                del self._held[key]

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str], ttl: float, owner: str = "") -> AsyncIterator[LockLease]:
        lease = LockLease(tuple(sorted(set(keys))), owner)
        self.acquire(lease, ttl)
        renewer = _Renewer(lease, lambda: _as_awaitable(self.renew, lease, ttl), ttl)
        try:
            yield lease
        finally:
            await renewer.stop()
            self.release(lease)


async def _as_awaitable(fn: Any, *args: Any) -> bool:
    return bool(fn(*args))


RENEWER_STOP_WAIT = 5.0  # seconds a lock's release waits for its renewer to end


class _Renewer:
    """Renews a held lock every ttl/3 until stopped, and keeps ``lease.valid_until`` and ``lease.lost`` true.

    ``renew`` returns whether the store still had every key for us. A renewal that fails (store unreachable)
    leaves ``valid_until`` where it was: the lease lapses when it passes. One warning per lease, not one per try.

    Stopping does not rely on cancellation alone: a cancellation that arrives while a client library is inside
    ``asyncio.timeout`` can come out as TimeoutError, which the loop (rightly) survives, and the releasing run
    then waited forever for a renewer that kept renewing. Found at 100 runs in flight: runs stuck for minutes
    on the way out of their target lock. The flag ends the loop whatever the cancellation became, and the wait
    for it is bounded.
    """

    def __init__(self, lease: LockLease, renew: Callable[[], Awaitable[bool]], ttl: float) -> None:
        self._stopped = asyncio.Event()
        self._task = asyncio.create_task(self._run(lease, renew, ttl), name="target lock renewer")

    async def _run(self, lease: LockLease, renew: Callable[[], Awaitable[bool]], ttl: float) -> None:
        warned = False
        while not self._stopped.is_set() and lease.lost is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=max(ttl / 3, 0.05))
            if self._stopped.is_set():
                return
            sent = time.monotonic()
            try:
                kept = await renew()
            except Exception as exc:
                if not warned:
                    warned = True
                    log.warning(
                        "could not renew the target lock on %s (%s); it lapses in at most %.0fs",
                        ", ".join(lease.keys),
                        exc,
                        max(lease.valid_until - time.monotonic(), 0),
                    )
                continue
            if not kept:
                lease.lost = "the lock store no longer holds it for this run (restarted empty, or taken after expiry)"
                return
            if sent + ttl > lease.valid_until or lease.valid_until == float("inf"):
                lease.valid_until = sent + ttl
            warned = False

    async def stop(self) -> None:
        self._stopped.set()
        self._task.cancel()
        done, _ = await asyncio.wait({self._task}, timeout=RENEWER_STOP_WAIT)
        if not done:
            log.warning("a target lock renewer did not stop within %.0fs; it ends at its next turn", RENEWER_STOP_WAIT)


class LockStore(Protocol):
    """Keys holding a value with a TTL, shared by the operator processes (``history/redis.py RedisLockStore``).

    Each call raises ``LockStoreDown`` when the store cannot be asked."""

    async def acquire(self, keys: Sequence[str], value: str, ttl: float) -> tuple[str, str] | None:
        """Set every key to ``value`` for ``ttl`` seconds, or none: then return a key held with another value,
        and that value."""
        ...

    async def renew(self, keys: Sequence[str], value: str, ttl: float) -> bool:
        """Extend the keys still holding ``value``; False when one does not (any more)."""
        ...

    async def release(self, keys: Sequence[str], value: str) -> None:
        """Delete the keys still holding ``value``."""
        ...


class RedisTargetLocks:
    """Target locks in Redis, shared by every operator process of the instance. Keys: ``<instance>:lock:<key>``.

    Fail closed: while Redis cannot be asked, ``hold`` raises ``LockStoreUnavailable`` (the run waits), and a
    held lease that cannot be renewed lapses at its TTL. Redis restarted empty shows at the next renewal: the
    keys are no longer ours, the lease is lost. (Between the restart and that renewal another run may take the
    keys; the record annotations on the targets, written with a compare-and-swap, still keep it off them:
    ``faults.base.claim_target``.)
    """

    def __init__(self, store: LockStore) -> None:
        self.store = store
        self._down = False  # said so in the log; said again when Redis answers

    @staticmethod
    def _value(lease: LockLease) -> str:
        return f"{lease.token} {lease.owner}"

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str], ttl: float, owner: str = "") -> AsyncIterator[LockLease]:
        lease = LockLease(tuple(sorted(set(keys))), owner)
        value = self._value(lease)
        sent = time.monotonic()
        try:
            refused = await self.store.acquire(lease.keys, value, ttl)
        except LockStoreDown as exc:
            if not self._down:
                self._down = True
                log.warning("Redis unreachable (%s): runs wait for their target locks", exc)
            raise LockStoreUnavailable(", ".join(lease.keys), f"Redis: {exc}") from exc
        if self._down:
            self._down = False
            log.info("Redis answers again: target locks are taken again")
        if refused:
            key, held = refused
            raise LockRefused(key, held.partition(" ")[2])
        lease.valid_until = sent + ttl
        renewer = _Renewer(lease, lambda: self.store.renew(lease.keys, value, ttl), ttl)
        try:
            yield lease
        finally:
            await renewer.stop()
            try:
                await self.store.release(lease.keys, value)
            except LockStoreDown as exc:
                log.warning("could not release target locks %s (%s); they expire within %.0fs", lease.keys, exc, ttl)


def target_locks(services: RedisServices) -> TargetLocks:
    """The instance's target locks: in Redis when the services have it, else in this process (create once)."""
    if services.lock_store is None:
        return LocalTargetLocks()
    return RedisTargetLocks(services.lock_store)
