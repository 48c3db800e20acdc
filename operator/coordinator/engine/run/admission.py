"""Starting a run: read and render its scenario, check it and its requester's rights, wait for a slot, and write
Running.

Nothing is changed on any target here. A run that cannot start ends Error (RunEnded) with the object and field
at fault, or with reason Forbidden when its requester may not do what it would do; a run over the concurrency cap
stays Pending (Queued) and is retried.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, NoReturn

from pydantic import ValidationError

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.adapters.sharedreads import shared_get
from coordinator.api.models import (
    REQUESTED_BY_ANNOTATION,
    ChaosScenarioSpec,
    Parameter,
    Phase,
    Requester,
    StepRecord,
)
from coordinator.domain import conditions as cond
from coordinator.domain.fieldpaths import format_path, validation_problem
from coordinator.domain.lifecycle import DEPRECATED, deprecation_warning, run_refusal
from coordinator.domain.parameters import REFERENCE, ParameterError, render, resolve_parameters
from coordinator.domain.permissions import scenario_read_need
from coordinator.engine import notifications, observers
from coordinator.engine.authorization import refusals, scenario_refusals
from coordinator.engine.pausing import PAUSES, run_scope
from coordinator.engine.run.errors import RunEnded, Waiting
from coordinator.engine.run.stages import Stage
from coordinator.engine.run.state import RunState
from coordinator.engine.targets import NamespacePolicy
from coordinator.faults import kind_problems

# Held while a run checks the global cap and writes Running, so two runs cannot both take the last slot.
_ADMISSION = asyncio.Lock()
# The reason of a run its requester may not make (engine/authorization.py).
FORBIDDEN = "Forbidden"


def render_scenario(run: str, scenario: str, raw: Mapping[str, Any], overrides: Mapping[str, object]) -> dict[str, Any]:
    """The scenario spec ``raw`` with the run's parameters filled in.

    Raises RunEnded (Error, reason InvalidParameters) naming every problem with its object and field: the run's
    ``spec.parameters.<name>`` or the scenario's field holding a bad reference or default. A spec whose
    declarations are themselves malformed is returned as it is, for the model validation to report.
    """
    try:
        declared = [Parameter.model_validate(item) for item in raw.get("parameters") or []]
    except (ValidationError, TypeError, AttributeError):
        return dict(raw)
    try:
        return render(raw, resolve_parameters(declared, overrides))
    except ParameterError as exc:
        owned = [f"{run if p.field.startswith('spec.parameters.') else scenario}: {p}" for p in exc.problems]
        raise RunEnded(Phase.ERROR, "InvalidParameters", "; ".join(owned)) from exc


def _reference_at(raw: Any, loc: tuple[int | str, ...]) -> str | None:
    """The parameter reference the raw spec held at ``loc`` (a pydantic error location), if any."""
    node = raw
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    if isinstance(node, str) and (match := REFERENCE.search(node)):
        return f"parameter {match.group(1)}"
    return None


def load_snapshot(state: RunState) -> ChaosScenarioSpec:
    """The scenario the run started with (status.scenarioSnapshot), set on ``state``."""
    raw = state.status.scenarioSnapshot
    if raw is None:
        raise RunEnded(Phase.ERROR, "StatusLost", "status.scenarioSnapshot is missing; cannot resume")
    state.scenario = ChaosScenarioSpec.model_validate(json.loads(raw))
    return state.scenario


class Admission:
    """PENDING/QUEUED -> STARTED: the scenario is read, rendered, checked and snapshotted; Running is written."""

    def __init__(self, state: RunState, policy: NamespacePolicy) -> None:
        self.state = state
        self.policy = policy

    async def scenario(self) -> tuple[ChaosScenarioSpec, str, int]:
        """The run's scenario with its parameters filled in, its namespace/name and its generation."""
        state = self.state
        ref = state.spec.scenario
        namespace = ref.namespace or state.run.namespace
        where = f"TestRun {state.run.ref}"
        if namespace != state.run.namespace:
            allowed, reason = await self.policy(namespace)
            if not allowed:
                raise RunEnded(Phase.ERROR, "ScenarioNotAllowed", f"{where}: spec.scenarioRef.namespace: {reason}")
        try:
            # shared with the runs that ask for it at the same time, read after this one asked (adapters/sharedreads.py)
            obj = await shared_get(state.client, resource_path("ChaosScenario", namespace, ref.name))
        except ApiError as exc:
            if exc.not_found:
                raise RunEnded(
                    Phase.ERROR,
                    "ScenarioNotFound",
                    f"{where}: spec.scenarioRef.name: ChaosScenario {namespace}/{ref.name} not found",
                ) from exc
            raise
        raw = obj.get("spec") or {}
        named = f"ChaosScenario {namespace}/{ref.name}"
        rendered = render_scenario(where, named, raw, state.spec.parameters)
        try:
            scenario = ChaosScenarioSpec.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors()[0]
            field, problem = validation_problem(first)
            reference = _reference_at(raw, first["loc"])
            raise RunEnded(
                Phase.ERROR,
                "InvalidParameters" if reference else "InvalidScenario",
                f"{named}: {field}: {problem}" + (f" (the value of {reference})" if reference else ""),
            ) from exc
        problems = kind_problems(scenario)
        if problems:
            path, problem = problems[0]
            raise RunEnded(Phase.ERROR, "InvalidScenario", f"{named}: {format_path(path)}: {problem}")
        refused = run_refusal(named, scenario.lifecycle, state.spec.dryRun)
        if refused is not None:
            raise RunEnded(Phase.ERROR, *refused)
        return scenario, f"{namespace}/{ref.name}", int(obj["metadata"].get("generation") or 1)

    async def start(self) -> None:
        state = self.state
        requester = await self.requester()
        await self.wait_while_paused()  # the run's and its scenario's namespaces, before reading the scenario
        scenario, name, generation = await self.scenario()
        await self.wait_while_paused(scenario)  # and its target namespaces (a waiting run asks no access reviews)
        await self.authorize(requester, scenario, name.split("/")[0])
        # Admission and the Running write happen under one lock, so two runs cannot both take the last slot.
        async with _ADMISSION:
            await self.admit()
            status = state.status
            started = state.clock.now()
            status.phase = Phase.RUNNING
            status.reason = "Started"
            status.message = f"running scenario {name}"
            status.scenario = name
            status.scenarioGeneration = generation
            status.startedAt = started
            status.deadline = started + timedelta(seconds=state.spec.timeout_seconds)
            status.currentStep = 0
            status.targets = 0
            status.steps = [StepRecord(name=s.name) for s in scenario.steps]
            # The run keeps the scenario it started with (parameters filled in): editing the scenario mid-run
            # does not change this run.
            status.scenarioSnapshot = json.dumps(scenario.model_dump(mode="json", exclude_none=True))
            status.conditions = cond.running_conditions(status.conditions, state.generation)
            state.scenario = scenario
            # The Running write goes out at once when the concurrency cap counts it, or when probes will take a
            # while before the first plan; otherwise it rides on the step's plan write, which comes next (one
            # status write fewer per run; a crash before it leaves the run Pending, with nothing touched). A run
            # that waited (queued or paused) says at once that it no longer waits.
            waited = state.position.stage is Stage.QUEUED
            # A webhook that wants ``started`` is called after the write that says so (engine/notifications.py).
            event = notifications.queue(state)
            if state.settings.max_concurrent_runs or scenario.steadyState or not scenario.steps or waited or event:
                await state.persist()
        notifications.send(state, event)
        observers.notify("run_started", state.info)
        await state.event("Started", f"running scenario {name}")
        if scenario.lifecycle == DEPRECATED:
            await state.event("ScenarioDeprecated", deprecation_warning(f"ChaosScenario {name}"), warning=True)

    # --- who asked for the run, and whether they may (docs/security.md) -----------------------------------------

    async def requester(self) -> Requester:
        """The run's requester, from the annotation the admission webhook writes, recorded in status.requestedBy.

        Ends the run Error (Forbidden) without a readable one, or when the requester may not read a scenario in
        another namespace (checked before the operator reads it, so nothing of it shows in a message).
        """
        state = self.state
        where = f"TestRun {state.run.ref}"
        value = (state.metadata.get("annotations") or {}).get(REQUESTED_BY_ANNOTATION)
        if value is None:
            raise RunEnded(
                Phase.ERROR,
                FORBIDDEN,
                f"{where}: no requester recorded: the annotation {REQUESTED_BY_ANNOTATION} is missing (set by the "
                "operator's admission webhook); a run acts only with its requester's rights",
            )
        try:
            requester = Requester.from_annotation(value)
        except ValueError as exc:
            raise RunEnded(
                Phase.ERROR,
                FORBIDDEN,
                f"{where}: no requester recorded (set by the operator's admission webhook): {exc}",
            ) from exc
        state.status.requestedBy = requester
        ref = state.spec.scenarioRef
        if ref is not None and ref.namespace and ref.namespace != state.run.namespace:
            refused = await refusals(state.client, requester, [scenario_read_need(ref.namespace)])
            if refused:
                raise RunEnded(Phase.ERROR, FORBIDDEN, "; ".join(refused))
        return requester

    async def authorize(self, requester: Requester, scenario: ChaosScenarioSpec, namespace: str) -> None:
        """End the run Error (Forbidden) when its requester may not do what the rendered scenario does (or it
        targets Nodes while COORDINATOR_NODE_TARGETING is off): before anything is changed, on every start."""
        state = self.state
        refused = await scenario_refusals(state.client, state.settings, requester, scenario, namespace)
        if refused:
            raise RunEnded(Phase.ERROR, FORBIDDEN, "; ".join(refused))

    # --- the emergency stop (engine/pausing.py) ---------------------------------------------------------------

    async def wait_while_paused(self, scenario: ChaosScenarioSpec | None = None) -> None:
        """Keep the run Pending (reason Paused) while a namespace it touches, or the cluster, is paused
        (engine/pausing.py); raises Waiting, and the kopf layer retries. An abort is honoured while paused."""
        state = self.state
        state.check_stop()
        ref = state.spec.scenarioRef
        namespace = (ref.namespace if ref is not None else None) or state.run.namespace
        target = scenario.target if scenario is not None else None
        pause = PAUSES.pausing(run_scope(state.run.namespace, namespace, target))
        if pause is None:
            return
        message = pause.waiting_message()
        await self._wait("Paused", message, announce=(state.status.reason, state.status.message) != ("Paused", message))

    # --- the concurrency cap --------------------------------------------------------------------------------------

    async def admit(self) -> None:
        """Keep the run Pending (reason Queued) while COORDINATOR_MAX_CONCURRENT_RUNS runs are Running.

        Raises Waiting while queued; the kopf layer retries, so the run starts once a slot is free. An abort is
        honoured while queued. Admission is serialised within this process (``_ADMISSION``); the count covers
        the watched namespaces (cluster-wide when they are patterns or all), read from the API server.
        """
        state = self.state
        cap = state.settings.max_concurrent_runs
        if not cap:
            return
        state.check_stop()
        watched = state.settings.watched
        client = state.client
        if watched and not state.settings.watches_patterns:
            # A single-namespace install may not list TestRuns cluster-wide (its Role covers only its namespaces).
            runs = [run for ns in watched for run in await client.list(resource_path("TestRun", ns))]
        else:
            runs = await client.list(resource_path("TestRun"))
        # A workflow run takes no slot: only its children inject (a slot held by a parent would starve them).
        running = sum(
            1
            for run in runs
            if (run.get("status") or {}).get("phase") == Phase.RUNNING
            and run["metadata"].get("uid") != state.run.uid
            and not (run.get("spec") or {}).get("workflowRef")
        )
        if running < cap:
            return
        message = f"queued: {running} TestRun(s) are Running and COORDINATOR_MAX_CONCURRENT_RUNS is {cap}"
        await self._wait("Queued", message, announce=state.status.reason != "Queued")

    async def _wait(self, reason: str, message: str, announce: bool) -> NoReturn:
        """Keep the run Pending with ``reason``: written and posted as an Event when ``announce``; raises Waiting."""
        state = self.state
        if announce:
            state.status.phase = Phase.PENDING
            state.status.reason = reason
            state.status.message = message
            await state.persist()
            await state.event(reason, message)
        raise Waiting(message)
