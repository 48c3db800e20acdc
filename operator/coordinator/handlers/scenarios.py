"""What the ChaosScenario and ChaosWorkflow handlers call: their schedules (``spec.schedule``), run-now and
triggers (``spec.triggers``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.engine.scheduler import reconcile_schedule, start_run_now
from coordinator.engine.triggers import TriggerFollower
from coordinator.settings import Settings

# Seconds between schedule checks of each scheduled scenario: how late a run may start. A check with nothing due
# makes no API call (engine/scheduler.py needs_reconcile), so a short tick is cheap.
SCHEDULE_TICK = 1.0
# Seconds between looks at a scenario's (live) spec for a change of its triggers; the watches themselves react at
# once.
TRIGGER_TICK = 1.0


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


async def handle_triggers(
    client: KubeClient, settings: Settings, body: Mapping[str, Any], stopped: kopf.DaemonStopped, logger: logging.Logger
) -> None:
    """Until stopped: watch what the triggers of the scenario or workflow name and start a run on each edge
    (engine/triggers.py). ``body`` is kopf's live view: a change of the triggers restarts their watches."""
    follower = TriggerFollower(client, settings, body)
    try:
        while not stopped:
            try:
                if not await follower.sync():
                    return
            except ApiError as exc:
                logger.warning("triggers not started (retrying on the next tick): %s", exc)
            await stopped.wait(TRIGGER_TICK)
    finally:
        await follower.close()
