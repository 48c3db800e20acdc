"""What the ChaosScenario and ChaosWorkflow handlers call: their schedules (``spec.schedule``) and run-now."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.engine.scheduler import reconcile_schedule, start_run_now

# Seconds between schedule checks of each scheduled scenario: how late a run may start. A check with nothing due
# makes no API call (engine/scheduler.py needs_reconcile), so a short tick is cheap.
SCHEDULE_TICK = 1.0


async def handle_schedule_scenario(
    client: KubeClient, body: Mapping[str, Any], stopped: kopf.DaemonStopped, logger: logging.Logger
) -> None:
    """Every tick until stopped: create the scenario's due TestRun, apply its concurrency policy, prune old runs,
    update its status. ``body`` is kopf's live view of the scenario.

    API errors are logged, not raised: the next tick retries from the stored state anyway.
    """
    while not stopped:
        try:
            await reconcile_schedule(client, body)
        except ApiError as exc:
            logger.warning("schedule not reconciled (retrying on the next tick): %s", exc)
        await stopped.wait(SCHEDULE_TICK)


async def handle_run_now(client: KubeClient, body: Mapping[str, Any], logger: logging.Logger) -> None:
    """Start the run a new ``chaos.coordinator.dev/run-now`` token asks for (a timer retries a failure)."""
    name = await start_run_now(client, body)
    if name is not None:
        logger.info("run-now: started TestRun %s", name)
