"""Leader election with a ``coordination.k8s.io/v1`` Lease, so two replicas are safe: exactly one executes runs.

A standby runs no kopf and no sweeper; it only polls the Lease every ``retry_period``. The leader renews it every
``retry_period``; when it cannot renew for ``renew_deadline`` seconds it must assume another replica took over and
stop acting (``hold`` returns, the operator exits, Kubernetes restarts the container as a standby). Because
``renew_deadline < lease_duration``, the old leader has stopped before any standby may take the lease over.

Why a Lease and not kopf's peering: with peering a newly started higher-priority peer starts processing at once
while the lower one is still freezing, so a rolling update can overlap two executors on one run. A Lease changes
hands only after the holder released it (clean shutdown, after kopf stopped) or stopped renewing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.domain.leases import Decision, LeaseRecord, decide, next_spec, released_spec
from coordinator.domain.timestamps import now_iso

log = logging.getLogger(__name__)

LEASES_API = "/apis/coordination.k8s.io/v1"


def lease_path(namespace: str, name: str | None = None) -> str:
    path = f"{LEASES_API}/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name else path


class LeaderElector:
    """One candidate for one Lease. ``acquire`` waits for leadership; ``hold`` keeps it until it is lost."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self.client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._clock = clock
        self._on_change = on_change
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0
        self._resource_version: str | None = None
        self.leader = False
        self.holder: str | None = None  # the last holder seen, for logs and /readyz

    @property
    def path(self) -> str:
        return lease_path(self.namespace, self.name)

    def _set_leader(self, leader: bool) -> None:
        if leader != self.leader:
            self.leader = leader
            if self._on_change is not None:
                self._on_change(leader)

    def _observe(self, lease: dict[str, Any]) -> LeaseRecord:
        record = LeaseRecord.from_spec(lease.get("spec"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()
        self._resource_version = lease.get("metadata", {}).get("resourceVersion")
        self.holder = record.holder
        return record

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when we hold the lease afterwards. API errors propagate (the caller retries)."""
        lease = await self.client.get_or_none(self.path)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "test-coordinator"},
                },
                "spec": next_spec(None, self.identity, self.lease_duration, now_iso()),
            }
            try:
                created = await self.client.create(lease_path(self.namespace), body)
            except ApiError as exc:
                if exc.conflict:  # another candidate created it first
                    return False
                raise
            self._observe(created)
            return True
        record = self._observe(lease)
        if decide(record, self.identity, self._observed_at, self._clock()) == Decision.WAIT:
            return False
        # resourceVersion turns the patch into a compare-and-swap: of two candidates racing, one wins.
        patch = {
            "metadata": {"resourceVersion": self._resource_version},
            "spec": next_spec(record, self.identity, self.lease_duration, now_iso()),
        }
        try:
            updated = await self.client.patch(self.path, patch)
        except ApiError as exc:
            if exc.conflict:
                return False
            raise
        self._observe(updated)
        return True

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until this candidate leads (True) or ``stopping`` is set (False)."""
        announced: str | None = None
        while not stopping.is_set():
            try:
                if await self.try_acquire_or_renew():
                    self._set_leader(True)
                    log.info("leadership acquired: lease %s/%s held by %s", self.namespace, self.name, self.identity)
                    return True
                if self.holder != announced:
                    announced = self.holder
                    log.info(
                        "standing by: lease %s/%s is held by %s", self.namespace, self.name, self.holder or "nobody"
                    )
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("leader election: cannot read lease %s/%s: %s", self.namespace, self.name, exc)
            await _sleep_or_stop(stopping, self.retry_period * random.uniform(1.0, 1.2))  # noqa: S311 - jitter
        return False

    async def hold(self) -> None:
        """Renew the lease every ``retry_period`` until a renewal fails for ``renew_deadline``; then return.

        Returning means leadership is lost: the caller must stop acting on the cluster at once.
        """
        last_renewal = self._clock()
        while True:
            await asyncio.sleep(self.retry_period)
            remaining = self.renew_deadline - (self._clock() - last_renewal)
            try:
                renewed = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(remaining, 0.1))
            except (ApiError, OSError, TimeoutError) as exc:
                log.warning("leader election: renewing lease %s/%s failed: %s", self.namespace, self.name, exc)
                renewed = None
            if renewed:
                last_renewal = self._clock()
                continue
            if renewed is False:
                log.error("leadership lost: lease %s/%s is now held by %s", self.namespace, self.name, self.holder)
                break
            if self._clock() - last_renewal >= self.renew_deadline:
                log.error(
                    "leadership lost: lease %s/%s not renewed for %.1fs", self.namespace, self.name, self.renew_deadline
                )
                break
        self._set_leader(False)

    async def release(self) -> None:
        """Hand the lease back (clean shutdown), so a standby takes over without waiting for it to expire."""
        if not self.leader:
            return
        self._set_leader(False)
        try:
            lease = await self.client.get_or_none(self.path)
            if lease is None:
                return
            record = LeaseRecord.from_spec(lease.get("spec"))
            if record.holder != self.identity:
                return
            await self.client.patch(
                self.path,
                {
                    "metadata": {"resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": released_spec(record, now_iso()),
                },
            )
            log.info("leadership released: lease %s/%s", self.namespace, self.name)
        except (ApiError, OSError, TimeoutError) as exc:
            log.warning("could not release lease %s/%s (it expires by itself): %s", self.namespace, self.name, exc)


async def _sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
