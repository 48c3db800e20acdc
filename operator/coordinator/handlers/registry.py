"""Every kopf decorator of the operator. Each handler: a docstring, a guard, one call.

Every handler is ``@instrumented`` (RED metrics, log context) and filtered with ``in_shard`` (``--selector``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import shutil
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import kopf

from coordinator.api.models import FINALIZER, GROUP, TERMINAL_PHASES, VERSION, WORKFLOW_RUN_LABEL
from coordinator.domain.admission import (
    MUTATE_SCENARIO,
    MUTATE_TESTRUN,
    MUTATE_WORKFLOW,
    VALIDATE_SCENARIO,
    VALIDATE_TESTRUN,
    VALIDATE_WORKFLOW,
)
from coordinator.domain.labelselectors import Selector, parse_selector
from coordinator.engine.pausing import PauseFollower
from coordinator.engine.scheduler import run_now_due
from coordinator.engine.workflow import WAKEUPS
from coordinator.handlers.admission import (
    handle_record_requester,
    handle_validate_scenario,
    handle_validate_testrun,
    handle_validate_workflow,
    renew_forever,
    start_webhooks,
    unmark_serving,
)
from coordinator.handlers.diffbase import NoDiffBase
from coordinator.handlers.history import handle_mirror_testrun
from coordinator.handlers.login import handle_login
from coordinator.handlers.scenarios import handle_run_now, handle_schedule_scenario, handle_triggers
from coordinator.handlers.testrun import handle_delete_testrun, handle_execute_testrun
from coordinator.history.mirror import mirror_deleted_testrun, needs_mirroring
from coordinator.observability.instrumentation import instrumented
from coordinator.settings import get_settings

DAEMON_EXIT_WAIT = 2.0  # seconds


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Apply our settings to kopf: finalizer name, progress and diff-base storage, watch timeouts, webhooks."""
    ours = get_settings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # Only on-delete handlers react to changes: no diff base to store (handlers/diffbase.py).
    settings.persistence.diffbase_storage = NoDiffBase()
    # Without both timeouts a silently dropped watch connection can leave the operator blind.
    settings.watching.server_timeout = ours.watch_server_timeout
    settings.watching.client_timeout = ours.watch_client_timeout
    settings.posting.level = logging.WARNING
    # How long kopf waits for a stopped daemon to end before it falls back to polling: a run's daemon ends
    # within milliseconds of its final write, but kopf's default (10 loop cycles) missed that, then slept for
    # the rest of the 30 s cancellation backoff before it let a deleted TestRun go, and at 500 runs in flight
    # patched a dummy annotation in and out of most runs to look again (benchmarks/README.md, finding 19).
    settings.background.instant_exit_timeout = DAEMON_EXIT_WAIT
    # An exact namespace list (the single-namespace install) needs no cluster-wide view of namespaces and CRDs,
    # and its RBAC grants none: do not ask for it.
    if ours.watched and not ours.watches_patterns:
        settings.scanning.disabled = True
    # The admission webhooks: served by kopf with our certificate; the server writes our configurations itself.
    server, memo.operator_username, memo.webhook_dir = await start_webhooks(memo.client, ours)
    settings.admission.server = server
    memo.webhooks_registered = server.registered
    settings.admission.managed = None
    memo.webhook_renewer = asyncio.create_task(renew_forever(memo.client, ours, memo.webhook_dir))


@kopf.on.cleanup()
async def stop_webhooks(memo: kopf.Memo, **_: Any) -> None:
    """Stop renewing the webhook certificate and remove its files (the Secret and configurations stay)."""
    renewer = getattr(memo, "webhook_renewer", None)
    if renewer is not None:
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
    if getattr(memo, "webhook_dir", None) is not None:
        await asyncio.to_thread(shutil.rmtree, memo.webhook_dir, ignore_errors=True)
    await unmark_serving(memo.client, memo.settings)


# --- admission webhooks (configurations: domain/admission.py) ----------------------------------------------------


@kopf.on.mutate(GROUP, VERSION, "testruns", id=MUTATE_TESTRUN, operations=["CREATE", "UPDATE"], persistent=True)
@kopf.on.mutate(GROUP, VERSION, "chaosscenarios", id=MUTATE_SCENARIO, operations=["CREATE", "UPDATE"], persistent=True)
@kopf.on.mutate(GROUP, VERSION, "chaosworkflows", id=MUTATE_WORKFLOW, operations=["CREATE", "UPDATE"], persistent=True)
async def record_requester(
    userinfo: kopf.UserInfo, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Record who created the TestRun, ChaosScenario or ChaosWorkflow, changed its spec or asked for a run-now, in
    the requested-by annotation; never what the request carried."""
    # kopf passes the operation and the old object too, though its WebhookFn type does not say so.
    await handle_record_requester(
        memo.admission_client, kwargs["operation"], userinfo, kwargs.get("old"), body, patch, memo.operator_username
    )


@kopf.on.validate(GROUP, VERSION, "testruns", id=VALIDATE_TESTRUN, operations=["CREATE"], persistent=True)
async def testrun_rights(body: kopf.Body, userinfo: kopf.UserInfo, memo: kopf.Memo, **_: Any) -> None:
    """Refuse a TestRun whose requester lacks a right its scenario needs."""
    await handle_validate_testrun(memo.admission_client, memo.settings, body, userinfo, memo.operator_username)


@kopf.on.validate(
    GROUP, VERSION, "chaosscenarios", id=VALIDATE_SCENARIO, operations=["CREATE", "UPDATE"], persistent=True
)
async def scenario_rights(body: kopf.Body, memo: kopf.Memo, warnings: list[str], **_: Any) -> None:
    """Refuse a ChaosScenario whose requester lacks a right it needs; warn of faults that miss its type."""
    await handle_validate_scenario(memo.admission_client, memo.settings, body, warnings)


@kopf.on.validate(
    GROUP, VERSION, "chaosworkflows", id=VALIDATE_WORKFLOW, operations=["CREATE", "UPDATE"], persistent=True
)
async def workflow_rights(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Refuse a ChaosWorkflow whose DAG is invalid, or whose requester may not run one of its scenarios."""
    await handle_validate_workflow(memo.admission_client, memo.settings, body)


# The emergency stop (engine/pausing.py): the paused namespaces are read before kopf starts, so no run is admitted
# before they are known, then followed for every run to consult without a request.
@kopf.on.startup()
async def follow_pauses(memo: kopf.Memo, **_: Any) -> None:
    """Read which namespaces carry chaos.coordinator.dev/paused=true, then keep following the label."""
    memo.pauses = PauseFollower(memo.client, memo.settings)
    await memo.pauses.start()


@kopf.on.cleanup()
async def stop_following_pauses(memo: kopf.Memo, **_: Any) -> None:
    """Stop following the pause label."""
    await memo.pauses.stop()


@kopf.on.login()
async def login(**_: Any) -> kopf.AiohttpSession:
    """Log kopf in with the credentials the operator uses itself; called again when they are refused (401)."""
    return await handle_login(get_settings().watched)


@lru_cache(maxsize=1)
def _shard() -> Selector:
    return parse_selector(get_settings().selector)


def in_shard(labels: kopf.Labels, **_: Any) -> bool:
    """This instance's share of the objects (COORDINATOR_SELECTOR / --selector); all of them by default.

    A filter rather than kopf's ``labels=``: decorator arguments are fixed at import, the selector is a setting.
    """
    return _shard().matches(labels)


def _sharded(check: Callable[..., bool]) -> Callable[..., bool]:
    """A filter that holds when ``check`` does and the object is in this instance's shard."""

    def both(**kwargs: Any) -> bool:
        return in_shard(**kwargs) and check(**kwargs)

    return both


def _active(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") not in TERMINAL_PHASES


def _running_or_notifying(status: kopf.Status, **_: Any) -> bool:
    """An active run, or a finished one whose webhook delivery a crash left Pending (engine/notifications.py)."""
    return _active(status) or any(
        (record or {}).get("state") == "Pending" for record in status.get("notifications") or []
    )


# cancellation_backoff: a stop request (deletion, shutdown, the run's own terminal phase) is noticed through
# ``stopped`` within one poll interval; cancelling at once would cut a run off between two of its writes.
@kopf.daemon(
    GROUP,
    VERSION,
    "testruns",
    when=_sharded(_running_or_notifying),
    cancellation_backoff=30.0,
    cancellation_timeout=10.0,
)
@instrumented("testrun_daemon")
async def testrun_daemon(body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, **_: Any) -> None:
    """Execute a TestRun: one long-lived task per active run, resumable from its status."""
    await handle_execute_testrun(
        memo.client, memo.settings, body, stopped, getattr(memo, "locks", None), getattr(memo, "mirror", None)
    )


# Only an active run can hold a fault (a run ends only after every fault is reverted), so only an active run needs
# the finalizer for this handler: kopf takes it off a finished, mirrored run, which then goes the moment it is
# deleted, with no work for the operator and whether the operator runs or not.
@kopf.on.delete(GROUP, VERSION, "testruns", when=_sharded(_active))
@instrumented("testrun_deleted")
async def testrun_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, logger: kopf.Logger, **_: Any) -> None:
    """Revert what a deleted TestRun still holds, then let its finalizer go."""
    await handle_delete_testrun(memo.client, memo.settings, body, retry, logger)  # type: ignore[arg-type]


# A workflow run reacts to its children within milliseconds: each change of a child wakes it (it reads them again).
@kopf.on.event(GROUP, VERSION, "testruns", labels={WORKFLOW_RUN_LABEL: kopf.PRESENT}, when=in_shard)
@instrumented("workflow_child_event")
async def workflow_child_changed(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, type: str | None, **_: Any
) -> None:
    """Hand the changed child TestRun to its workflow run, and wake it."""
    WAKEUPS.wake(namespace or "", labels[WORKFLOW_RUN_LABEL], copy.deepcopy(dict(body)), gone=type == "DELETED")


def _mirror_due(status: kopf.Status, **_: Any) -> bool:
    return needs_mirroring(status)


# Finished runs are mirrored into the history store; the timer retries while the database is unreachable.
@kopf.timer(GROUP, VERSION, "testruns", interval=1.0, when=_sharded(_mirror_due))
@instrumented("testrun_history")
async def testrun_history(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any) -> None:
    """Mirror a finished TestRun into the history store, then mark it synced in its status."""
    # kopf passes timers their stop flag as ``stopped`` (like daemons), though its TimerFn type does not say so.
    stopped = kwargs.get("stopped")
    await handle_mirror_testrun(memo.history, memo.client, memo.redis.cache, body, logger, stopped)  # type: ignore[arg-type]


@kopf.on.delete(GROUP, VERSION, "testruns", id="history", when=_sharded(_mirror_due))
@instrumented("testrun_history_deleted")
async def testrun_history_deleted(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Mirror a finished TestRun deleted before the timer wrote it; its finalizer stays until it is written
    (at most COORDINATOR_HISTORY_DELETE_WAIT, or until annotated chaos.coordinator.dev/skip-history)."""
    await mirror_deleted_testrun(
        memo.history,
        memo.redis.cache,
        memo.client,
        body,
        memo.settings.history_delete_wait,
        logger,  # type: ignore[arg-type]
    )


def _scheduled(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("schedule"))


# A daemon rather than a timer: one quiet loop per scheduled scenario (a timer logs every tick). Like every daemon
# it makes kopf hold a finalizer on the scenario; engine/scheduler.py release_deleted_scenarios covers the case
# kopf cannot release it.
@kopf.daemon(GROUP, VERSION, "chaosscenarios", when=_sharded(_scheduled), cancellation_timeout=5.0)
@instrumented("scenario_scheduler")
async def scenario_scheduler(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Run a scheduled ChaosScenario like a CronJob: due TestRuns, concurrency policy, history limits."""
    await handle_schedule_scenario(memo.client, body, stopped, logger)  # type: ignore[arg-type]


def _run_now(body: kopf.Body, **_: Any) -> bool:
    return run_now_due(body) is not None


# GitOps re-runs: a new value of the annotation chaos.coordinator.dev/run-now starts one TestRun of the scenario.
# A timer, filtered to scenarios with a token not yet started, retries until the run exists and the token is
# recorded in the status (kopf keeps no diff base for change handlers here).
@kopf.timer(GROUP, VERSION, "chaosscenarios", interval=1.0, when=_sharded(_run_now))
@instrumented("scenario_run_now")
async def scenario_run_now(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Start the TestRun that a new run-now annotation asks for."""
    await handle_run_now(memo.client, body, logger)  # type: ignore[arg-type]


# --- ChaosWorkflows: schedules and run-now as for ChaosScenarios (engine/scheduler.py, Schedulable); triggers of
# both kinds (engine/triggers.py) ------------------------------------------------------------------------------


@kopf.daemon(GROUP, VERSION, "chaosworkflows", when=_sharded(_scheduled), cancellation_timeout=5.0)
@instrumented("workflow_scheduler")
async def workflow_scheduler(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Run a scheduled ChaosWorkflow like a CronJob: due TestRuns, concurrency policy, history limits."""
    await handle_schedule_scenario(memo.client, body, stopped, logger)  # type: ignore[arg-type]


@kopf.timer(GROUP, VERSION, "chaosworkflows", interval=1.0, when=_sharded(_run_now))
@instrumented("workflow_run_now")
async def workflow_run_now(body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Start the TestRun that a new run-now annotation on a ChaosWorkflow asks for."""
    await handle_run_now(memo.client, body, logger)  # type: ignore[arg-type]


def _triggered(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("triggers"))


# One daemon per scenario or workflow with triggers: it watches what they name (a task per trigger) and restarts
# the watches when they change. kopf stops it when the last trigger goes; its finalizer is released as the
# scheduler's is (release_deleted_scenarios).
@kopf.daemon(GROUP, VERSION, "chaosscenarios", when=_sharded(_triggered), cancellation_timeout=5.0)
@kopf.daemon(GROUP, VERSION, "chaosworkflows", when=_sharded(_triggered), cancellation_timeout=5.0)
@instrumented("triggers")
async def triggers(
    body: kopf.Body, stopped: kopf.DaemonStopped, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Start a TestRun of the scenario or workflow on each edge of one of its triggers."""
    await handle_triggers(memo.client, memo.settings, body, stopped, logger)  # type: ignore[arg-type]
