"""``coordinator run``: the operator, kopf embedded beside our own tasks (the fault sweeper).

Around them, ``Supervisor`` (cli/supervision.py) serves /metrics, /healthz and /readyz, registers the metrics and
log observers and, with leader election on, keeps a standby waiting until it holds the Lease: everything in
``_operate`` runs on the leader only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from datetime import UTC, datetime
from typing import Any

import kopf
from kopf._cogs.structs.references import Insights

from coordinator.adapters.kube import KubeClient, resource_path
from coordinator.cli.supervision import Supervisor
from coordinator.engine import observers
from coordinator.engine.locks import target_locks
from coordinator.engine.namespaces import reconcile_forever, settled_names
from coordinator.engine.scheduler import release_deleted_scenarios
from coordinator.engine.sweeper import release_stuck_deletions, sweep, sweep_scope
from coordinator.engine.webhooks import mark_serving
from coordinator.history.mirror import DeletedRunGate, FinishedRunMirror
from coordinator.history.redis import ProgressObserver, redis_services
from coordinator.history.store import HistoryStore, HistoryUnavailable, purge_expired_forever
from coordinator.observability import metrics
from coordinator.settings import Settings, uses_patterns

log = logging.getLogger("coordinator")


async def sweep_forever(client: KubeClient, settings: Settings, gate: DeletedRunGate | None = None) -> None:
    """Revert orphaned faults at start-up (crash recovery), then every ``sweep_interval`` seconds."""
    while True:
        try:
            scope = sweep_scope(settings)
            await release_stuck_deletions(client, settings, namespaces=scope, may_release=gate)
            await release_deleted_scenarios(client, scope)
            reverted = await sweep(client, scope)
            if reverted:
                log.warning("sweep reverted %d orphaned fault(s)", len(reverted))
        except Exception:
            log.exception("sweep failed; trying again in %.0fs", settings.sweep_interval)
        await asyncio.sleep(settings.sweep_interval)


def _await_chain(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended: its coroutine and everything it awaits, outermost first."""
    parts: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(parts) < 40:
        frame = next((f for a in ("cr_frame", "gi_frame", "ag_frame") if (f := getattr(awaited, a, None))), None)
        if frame is not None:
            parts.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
        generator = None
        if frame is not None and frame.f_code.co_name in ("__aenter__", "__aexit__"):
            # An async context manager built with contextlib awaits its generator through an asend/athrow object
            # that leads nowhere: go on into the generator itself.
            generator = getattr(frame.f_locals.get("self"), "gen", None)
        awaited = generator or next(
            (w for a in ("cr_await", "gi_yieldfrom", "ag_await") if (w := getattr(awaited, a, None)) is not None), None
        )
    return " -> ".join(parts) or "(not started)"


def dump_tasks() -> None:
    """Log every asyncio task and the await chain it is suspended in (``kill -USR1 <pid>``): what a stuck
    operator is waiting for. Tasks suspended at the same place are counted once."""
    chains: dict[str, int] = {}
    for task in asyncio.all_tasks():
        chain = _await_chain(task)
        chains[chain] = chains.get(chain, 0) + 1
    lines = [f"{sum(chains.values())} asyncio task(s):"]
    lines += [f"  {count} x {chain}" for chain, count in sorted(chains.items(), key=lambda kv: -kv[1])]
    log.warning("\n".join(lines))


async def run_operator(settings: Settings, namespaces: list[str], kubeconfig: str | None) -> int:
    """Run until stopped; the exit status is 1 when leadership was lost (restart as a standby), else 0."""
    with contextlib.suppress(NotImplementedError, RuntimeError):  # no signal handlers off the main thread
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it
    import coordinator.handlers.registry  # noqa: F401 - registers the handlers

    client = await KubeClient.connect(kubeconfig, qps=settings.api_qps, burst=settings.api_burst)
    # The admission webhooks' own client, with its own connection pool: a webhook answering one of our own creates
    # (a workflow run's 100 children, a burst of scheduled runs) must never wait for a connection that only the
    # answered create frees (that deadlocked until the API server's 10 s webhook timeout: benchmarks/README.md).
    admission_client = await KubeClient.connect(kubeconfig, qps=settings.api_qps, burst=settings.api_burst)
    metrics.watch_kube_client(client)
    history = await open_history(settings)
    metrics.instrument_history(history)
    redis = redis_services(
        settings.redis_url.get_secret_value() if settings.redis_url else None,
        settings.instance_name,
        max_connections=settings.redis_pool_size,
        progress_ttl=settings.progress_ttl,
    )
    progress = ProgressObserver(redis.progress)
    observers.register(progress)
    # Runs mirror themselves as they finish; the history timer covers those the store did not take in time.
    mirror = FinishedRunMirror(history, redis.cache)
    memo = kopf.Memo(
        client=client,
        admission_client=admission_client,
        settings=settings,
        history=history,
        redis=redis,
        locks=target_locks(redis),
        mirror=mirror,
    )
    # A replica restarted in its pod must not stay behind the webhook Service until it leads again.
    await mark_serving(client, settings, False)
    try:
        async with Supervisor(settings, client, memo, kubeconfig) as supervisor:
            if await supervisor.lead():
                await _operate(settings, namespaces, client, history, memo, supervisor)
        return supervisor.exit_code
    finally:
        observers.unregister(progress)
        await progress.drain()
        await redis.close()
        await history.close()
        await admission_client.close()
        await client.close()


async def _operate(
    settings: Settings,
    namespaces: list[str],
    client: KubeClient,
    history: HistoryStore,
    memo: kopf.Memo,
    supervisor: Supervisor,
) -> None:
    """The leader's work: kopf and our periodic tasks, until kopf stops (a signal, or leadership lost)."""
    ready = asyncio.Event()
    insights = Insights()
    gate = DeletedRunGate(history, memo.redis.cache, settings.history_delete_wait)
    sweeper = asyncio.create_task(sweep_forever(client, settings, gate))
    purger = asyncio.create_task(purge_expired_forever(history, settings.history_retention_days))
    announcer = asyncio.create_task(_announce(ready, namespaces, supervisor, memo))
    tasks = [sweeper, announcer, purger]
    if uses_patterns(namespaces):

        async def namespace_names() -> list[str]:
            return settled_names(await client.list(resource_path("Namespace")), datetime.now(UTC))

        tasks.append(
            asyncio.create_task(
                reconcile_forever(insights, namespace_names, namespaces, ready, interval=settings.sweep_interval)
            )
        )
    try:
        await kopf.operator(
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=True,
            memo=memo,
            ready_flag=ready,
            stop_flag=supervisor.stop_flag,
            insights=insights,
        )
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def open_history(settings: Settings) -> HistoryStore:
    """The history store, migrated if the database answers; if it does not, runs go on and are mirrored once it
    is back (the store migrates on first use)."""
    history = HistoryStore.from_settings(settings)
    try:
        await asyncio.wait_for(history.upgrade(), timeout=15)
    except HistoryUnavailable:
        pass  # the store's availability has said so, once, with its cause, and asks again with backoff
    except TimeoutError:
        log.warning("history store %s did not answer at start-up; it is asked again on first use", history.description)
    return history


async def _announce(ready: asyncio.Event, namespaces: list[str], supervisor: Supervisor, memo: kopf.Memo) -> None:
    await ready.wait()
    # Ready only once the admission webhooks are served and registered: until then, creating a TestRun fails.
    await memo.webhooks_registered.wait()
    supervisor.operator_ready()
    log.info("operator ready, watching %s", ", ".join(namespaces) if namespaces else "all namespaces")
