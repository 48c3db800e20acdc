"""A step's hold on its targets: no other run injects into them meanwhile (unless the scenario allows it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from coordinator.adapters.kube import ApiError
from coordinator.api.models import Injection, Phase
from coordinator.engine.locks import LockLease, LockRefused, LockStoreUnavailable, TargetLocks
from coordinator.engine.run.errors import WAITING_REASON, RunEnded, WaitingForTarget
from coordinator.engine.run.state import RunState
from coordinator.faults.base import TargetHeld


class TargetGuard:
    """The step's target lock (Redis, when configured) and the waiting it causes, said in status."""

    def __init__(self, state: RunState, locks: TargetLocks | None) -> None:
        self.state = state
        self.locks = locks
        self.lease: LockLease | None = None  # the step's target lock while it is held
        state.lease_check = self.check_lease

    @contextlib.asynccontextmanager
    async def hold(self, index: int, entries: list[Injection]) -> AsyncIterator[None]:
        """Hold the step's targets so no other run injects into them meanwhile (unless the scenario allows it).

        A refused lock changes nothing (the step's plan is not written), and the run retries later: a queue, not
        a failure. The lock's owner is the run, so the same run resuming after a crash gets its targets back.
        """
        state = self.state
        scenario = state.need_scenario()
        keys = sorted(
            {
                f"{i.target.kind}/{i.target.namespace or ''}/{i.target.name}"
                for i in entries
                if i.target.kind != "NetworkPolicy"
            }
        )
        if self.locks is None or not keys or scenario.allowConcurrentTargets:
            yield
            return
        ttl = max(15.0, 3 * state.settings.poll_interval)
        step = scenario.steps[index].name
        try:
            async with self.locks.hold(keys, ttl, owner=state.run.uid) as lease:
                self.lease = lease
                if state.status.reason == WAITING_REASON:  # said while waiting; the plan or apply write clears it
                    state.status.reason, state.status.message = "Started", f"step {step}: target lock taken"
                try:
                    yield
                finally:
                    self.lease = None
        except (LockRefused, TargetHeld) as exc:
            if isinstance(exc, LockRefused) and exc.holder == state.run.uid:
                message = f"step {step} waits for this run's previous lock on {exc.key} to expire"
            else:
                message = f"step {step} waits: {exc}"
            await self.say_waiting(message, store_down=isinstance(exc, LockStoreUnavailable))
            raise WaitingForTarget(message) from exc

    def check_lease(self) -> None:
        """A run whose target lock lapsed stops changing its targets and reverts (RunEnded)."""
        if self.lease is not None and self.lease.lapsed:
            raise RunEnded(
                Phase.ERROR,
                "TargetLockLost",
                f"the lock on {', '.join(self.lease.keys)} lapsed: {self.lease.why_lapsed()}; "
                "stopped injecting, every fault reverted",
            )

    async def say_waiting(self, message: str, store_down: bool) -> None:
        """Say in status why the run waits (once per message: a wait retried every few seconds writes nothing)."""
        state = self.state
        if state.status.phase != Phase.RUNNING or state.status.message == message:
            return
        state.status.reason, state.status.message = WAITING_REASON, message
        with contextlib.suppress(ApiError):
            await state.persist()
        if store_down:
            await state.event(WAITING_REASON, message, warning=True)
