"""The run counters on ChaosScenario and ChaosWorkflow status (total, passed, pass rate, last run), batched per
scenario or workflow."""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.models import Phase
from coordinator.domain.verdict import pass_rate


class ScenarioSummaries:
    """The run counters on ChaosScenario status, written in batches with compare-and-swap writes.

    Runs of one scenario that finish together are counted together: the first starts a flush, the others
    join the batch that is pending meanwhile, and each batch costs one PATCH (from the last status a PATCH
    returned, so usually no GET). A stale copy (another writer, another replica, a re-created scenario) is
    refused by the API server with 409 and read again. With 500 runs in flight, counting one run at a time
    behind a lock made hundreds of finished runs queue for minutes.
    """

    ATTEMPTS = 5

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str, str], list[tuple[str, Phase, str | None, asyncio.Future[None]]]] = {}
        self._flushers: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._known: dict[tuple[str, str, str], dict[str, Any]] = {}

    async def count(
        self,
        client: KubeApi,
        namespace: str,
        name: str,
        run: str,
        phase: Phase,
        completed_at: str | None,
        *,
        kind: str = "ChaosScenario",
    ) -> None:
        """Count one finished run; returns once a write that includes it succeeded (raises ApiError if not)."""
        key = (kind, namespace, name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(key, []).append((run, phase, completed_at, done))
        if key not in self._flushers:
            self._flushers[key] = asyncio.create_task(
                self._flush(client, key), name=f"summary of {kind} {namespace}/{name}"
            )
        await done

    async def _flush(self, client: KubeApi, key: tuple[str, str, str]) -> None:
        try:
            while self._pending.get(key):
                batch = self._pending.pop(key)
                try:
                    await self._write(client, key, batch)
                except Exception as exc:  # every waiter of the batch gets the failure
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for *_, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            # No await between the loop's last check and this: a count() arriving now starts a new flush.
            self._flushers.pop(key, None)

    async def _write(
        self, client: KubeApi, key: tuple[str, str, str], batch: list[tuple[str, Phase, str | None, Any]]
    ) -> None:
        kind, namespace, name = key
        last_run, last_phase, last_completed, _ = max(batch, key=lambda item: item[2] or "")
        passed_now = sum(1 for _, phase, _, _ in batch if phase == Phase.PASSED)
        cancelled_now = sum(1 for _, phase, _, _ in batch if phase == Phase.CANCELLED)
        for _attempt in range(self.ATTEMPTS):
            scenario = self._known.get(key)
            if scenario is None:
                try:
                    scenario = await client.get(resource_path(kind, namespace, name))
                except ApiError as exc:
                    if exc.not_found:
                        return
                    raise
            status = scenario.get("status") or {}
            total = int(status.get("totalRuns") or 0) + len(batch)
            passed = int(status.get("passedRuns") or 0) + passed_now
            cancelled = int(status.get("cancelledRuns") or 0) + cancelled_now
            summary = {
                "lastRun": {"name": last_run, "phase": str(last_phase), "completedAt": last_completed},
                "totalRuns": total,
                "passedRuns": passed,
                "cancelledRuns": cancelled,
                "passRate": pass_rate(passed, total - cancelled),
            }
            try:
                self._known[key] = await client.patch(
                    resource_path(kind, namespace, name, "status"),
                    {"metadata": {"resourceVersion": scenario["metadata"]["resourceVersion"]}, "status": summary},
                )
                return
            except ApiError as exc:
                self._known.pop(key, None)
                if exc.not_found:
                    return
                if not exc.conflict:
                    raise
        raise ApiError(409, "Conflict", f"{kind} {namespace}/{name} changed {self.ATTEMPTS} times meanwhile")


SUMMARIES = ScenarioSummaries()
