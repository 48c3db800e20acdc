"""Redis, optional: live run progress, target locks with a TTL, and the report cache.

Each service has an in-process twin with the same interface, used when ``COORDINATOR_REDIS_URL`` is unset (the
operator says so once in its log). The in-process twins serve a single operator process; Redis makes them shared
between processes (several replicas, or the CLI reading what the operator wrote). Every key starts with the
instance name, so instances can share one Redis. When Redis is set but unreachable, progress and the cache are
skipped (they are conveniences). Target locks fail closed: a run that cannot take its lock waits (and says so in
its status), and a run whose lock could not be renewed in time stops injecting and reverts. An in-process
fallback knew nothing of the locks other processes held in Redis, and let three scale runs hold one Deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from coordinator.api.models import Injection, TestRunStatus
from coordinator.domain.timestamps import now_iso
from coordinator.engine.observers import RunInfo
from coordinator.history.store import masked

log = logging.getLogger(__name__)

PROGRESS_TTL = 24 * 3600.0  # seconds a run's live progress is kept after its last update
SOCKET_TIMEOUT = 2.0  # seconds: Redis is for fast reads; a slow one must not stall the operator
MAX_CONNECTIONS = 32  # per operator process; every command is a single round trip


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


def _warn_once(flags: set[str], flag: str, message: str, *args: object) -> None:
    if flag not in flags:
        flags.add(flag)
        log.warning(message, *args)


# --- target locks --------------------------------------------------------------------------------------------


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


# Acquire all keys or none, atomically. ARGV: value, ttl in ms. Returns nil, or {key, holder} of the first held.
_ACQUIRE = """
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then return {key, holder} end
end
for i, key in ipairs(KEYS) do redis.call('SET', key, ARGV[1], 'PX', ARGV[2]) end
return nil
"""
# Renew (ARGV[2] = ttl ms) the keys still holding our value; others are left alone. Returns how many were ours.
_RENEW = """
local kept = 0
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('PEXPIRE', key, ARGV[2]); kept = kept + 1 end
end
return kept
"""
_RELEASE = """
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


class RedisTargetLocks:
    """Target locks in Redis, shared by every operator process of the instance. Keys: ``<instance>:lock:<key>``.

    Fail closed: while Redis cannot be asked, ``hold`` raises ``LockStoreUnavailable`` (the run waits), and a
    held lease that cannot be renewed lapses at its TTL. Redis restarted empty shows at the next renewal: the
    keys are no longer ours, the lease is lost. (Between the restart and that renewal another run may take the
    keys; the record annotations on the targets, written with a compare-and-swap, still keep it off them:
    ``faults.base.claim_target``.)
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._warned: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.prefix}:lock:{key}"

    @staticmethod
    def _value(lease: LockLease) -> str:
        return f"{lease.token} {lease.owner}"

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[str], ttl: float, owner: str = "") -> AsyncIterator[LockLease]:
        lease = LockLease(tuple(sorted(set(keys))), owner)
        names = [self._key(k) for k in lease.keys]
        ttl_ms = str(max(int(ttl * 1000), 1))
        sent = time.monotonic()
        try:
            refused = await self.client.eval(_ACQUIRE, len(names), *names, self._value(lease), ttl_ms)
        except (RedisError, OSError) as exc:
            _warn_once(self._warned, "down", "Redis unreachable (%s): runs wait for their target locks", exc)
            raise LockStoreUnavailable(", ".join(lease.keys), f"Redis: {exc}") from exc
        if "down" in self._warned:
            self._warned.discard("down")
            log.info("Redis answers again: target locks are taken again")
        if refused:
            key, value = (part.decode() if isinstance(part, bytes) else str(part) for part in refused)
            raise LockRefused(key.removeprefix(f"{self.prefix}:lock:"), value.partition(" ")[2])
        lease.valid_until = sent + ttl

        async def renew() -> bool:
            kept = await self.client.eval(_RENEW, len(names), *names, self._value(lease), ttl_ms)
            return int(kept) == len(names)

        renewer = _Renewer(lease, renew, ttl)
        try:
            yield lease
        finally:
            await renewer.stop()
            try:
                await self.client.eval(_RELEASE, len(names), *names, self._value(lease))
            except (RedisError, OSError) as exc:
                log.warning("could not release target locks %s (%s); they expire within %.0fs", lease.keys, exc, ttl)


# --- live progress -------------------------------------------------------------------------------------------


class LiveProgress(Protocol):
    async def put(self, uid: str, fields: dict[str, Any]) -> None: ...

    async def get(self, uid: str) -> dict[str, Any] | None: ...


class LocalProgress:
    """In-process progress records (what this operator process has seen)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[dict[str, Any], float]] = {}

    async def put(self, uid: str, fields: dict[str, Any]) -> None:
        now = time.monotonic()
        record = dict(self._records.get(uid, ({}, 0.0))[0])
        record.update(fields)
        self._records[uid] = (record, now + PROGRESS_TTL)
        if len(self._records) % 256 == 0:  # now and then, forget expired runs: a long-lived operator must not grow
            for key in [k for k, (_, expires) in self._records.items() if expires <= now]:
                del self._records[key]

    async def get(self, uid: str) -> dict[str, Any] | None:
        found = self._records.get(uid)
        if found is None or found[1] <= time.monotonic():
            return None
        return dict(found[0])


class RedisProgress:
    """Each run's progress as a Redis hash ``<instance>:progress:<uid>`` of JSON values, expiring a day after
    its last update."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _key(self, uid: str) -> str:
        return f"{self.prefix}:progress:{uid}"

    async def put(self, uid: str, fields: dict[str, Any]) -> None:
        key = self._key(uid)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={k: json.dumps(v) for k, v in fields.items()})
            pipe.expire(key, int(PROGRESS_TTL))
            await pipe.execute()

    async def get(self, uid: str) -> dict[str, Any] | None:
        raw = await self.client.hgetall(self._key(uid))
        if not raw:
            return None
        return {
            (k.decode() if isinstance(k, bytes) else k): json.loads(v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()
        }


class ProgressObserver:
    """A run observer (``engine.observers``) that records each run's progress in a ``LiveProgress``.

    Observer calls are synchronous and must be quick, so writes happen in a task per run; failures are logged
    once and never reach the run. Updates of one run coalesce: while its write is in flight, later updates merge
    into one pending record (newest value per field), written next. A step over 1,000 pods reports 1,000
    injections in a few milliseconds; they cost a couple of Redis writes, not 1,000 (9 % of the operator's CPU in
    the 10,000-pod selection benchmark, finding 15). What a reader sees is the same: each field's latest value.
    """

    def __init__(self, progress: LiveProgress) -> None:
        self.progress = progress
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, dict[str, Any]] = {}  # per run uid: fields not yet handed to a write
        self._warned: set[str] = set()
        self.writes = 0  # writes made, for tests

    def _write(self, run: RunInfo, fields: dict[str, Any]) -> None:
        record = {"namespace": run.namespace, "name": run.name, "scenario": run.scenario, "updatedAt": now_iso()}
        pending = self._pending.get(run.uid)
        if pending is not None:  # a writer for this run is queued or busy: it takes these fields too
            pending.update(record, **fields)
            return
        self._pending[run.uid] = {**record, **fields}
        task = asyncio.get_running_loop().create_task(self._flush(run.uid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, uid: str) -> None:
        """Write the run's pending fields until none are left; the run's only writer while it runs."""
        try:
            while True:
                fields = self._pending[uid]
                self._pending[uid] = {}  # updates arriving during the write gather here
                await self._put(uid, fields)
                if not self._pending[uid]:
                    return
        finally:
            # No await between the loop's last check and this: an update arriving now starts a new writer.
            self._pending.pop(uid, None)

    async def _put(self, uid: str, fields: dict[str, Any]) -> None:
        self.writes += 1
        try:
            await self.progress.put(uid, fields)
            self._warned.discard("down")
        except (RedisError, OSError) as exc:
            _warn_once(self._warned, "down", "live progress not recorded, Redis unreachable: %s", exc)

    def run_started(self, run: RunInfo) -> None:
        self._write(run, {"phase": "Running"})

    def fault_injected(self, run: RunInfo, injection: Injection) -> None:
        self._write(
            run, {"lastEvent": f"injected {injection.fault} into {injection.target.name}", "step": injection.step}
        )

    def fault_reverted(self, run: RunInfo, injection: Injection) -> None:
        self._write(
            run, {"lastEvent": f"reverted {injection.fault} on {injection.target.name}", "step": injection.step}
        )

    def run_finished(self, run: RunInfo, status: TestRunStatus) -> None:
        self._write(run, {"phase": str(status.phase), "completedAt": status.completedAt})

    async def drain(self) -> None:
        """Wait for the writes in flight (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


# --- report cache --------------------------------------------------------------------------------------------


class ReportCache(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str, ttl: float) -> None: ...

    async def generation(self) -> int: ...

    async def bump(self) -> None: ...


class LocalReportCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float]] = {}
        self._generation = 0

    async def get(self, key: str) -> str | None:
        found = self._entries.get(key)
        if found is None or found[1] <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return found[0]

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._entries[key] = (value, time.monotonic() + ttl)

    async def generation(self) -> int:
        return self._generation

    async def bump(self) -> None:
        self._generation += 1
        self._entries.clear()


class RedisReportCache:
    """Report aggregates as JSON strings with a TTL; ``bump`` (after every mirrored run) retires them all."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._warned: set[str] = set()

    async def get(self, key: str) -> str | None:
        try:
            value = await self.client.get(f"{self.prefix}:report:{key}")
        except (RedisError, OSError) as exc:
            _warn_once(self._warned, "down", "report cache unavailable, Redis unreachable: %s", exc)
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def put(self, key: str, value: str, ttl: float) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.set(f"{self.prefix}:report:{key}", value, px=max(int(ttl * 1000), 1))

    async def generation(self) -> int:
        try:
            value = await self.client.get(f"{self.prefix}:report-generation")
        except (RedisError, OSError):
            return -1  # never matches a stored key: a miss, not a stale hit
        return int(value or 0)

    async def bump(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.client.incr(f"{self.prefix}:report-generation")


# --- wiring --------------------------------------------------------------------------------------------------


@dataclass
class RedisServices:
    """The three services, backed by Redis or by their in-process twins."""

    progress: LiveProgress
    locks: TargetLocks
    cache: ReportCache
    description: str  # "redis://host:6379/0" (password masked) or "in-process"
    client: aioredis.Redis | None = None

    async def ping(self) -> bool:
        """Whether Redis answers (for /readyz); the in-process twins always do."""
        if self.client is None:
            return True
        return bool(await self.client.ping())

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def in_process_services() -> RedisServices:
    return RedisServices(LocalProgress(), LocalTargetLocks(), LocalReportCache(), "in-process")


def redis_services(url: str | None, instance_name: str, announce: bool = True) -> RedisServices:
    """Services on the Redis at ``url``, or in-process ones when ``url`` is None (logged once when ``announce``).

    Nothing is sent to Redis here: the client connects on first use, so an unreachable Redis never stops the
    operator from starting.
    """
    if not url:
        if announce:
            log.info(
                "COORDINATOR_REDIS_URL is not set: live progress, target locks and the report cache are "
                "in-process (this operator process only)"
            )
        return in_process_services()
    # A blocking pool: with hundreds of runs in flight, commands wait (up to SOCKET_TIMEOUT) for one of
    # MAX_CONNECTIONS connections instead of failing with "Too many connections" (redis-py's default pool).
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=SOCKET_TIMEOUT,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
    )
    client = aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both
    description = masked(url)
    if announce:
        log.info("live progress, target locks and the report cache in Redis at %s", description)
    return RedisServices(
        progress=RedisProgress(client, instance_name),
        locks=RedisTargetLocks(client, instance_name),
        cache=RedisReportCache(client, instance_name),
        description=description,
        client=client,
    )
