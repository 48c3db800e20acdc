"""The workflow run: a TestRun with spec.workflowRef, driving one child TestRun per node of its ChaosWorkflow.

PENDING -> STARTED (the workflow read, rendered and snapshotted; every node Pending) -> (BASELINED: the workflow's
before/edge probes passed) -> node updates (STARTED/BASELINED again) -> FINISHED; or ENDING -> FINISHED when the run
ends while nodes are active: it aborts them and waits until each child has reverted everything and ended.

Its memory is its status and its children: a restarted operator lists the children (found by label, owned by this
run's UID) and goes on; a node's child has a fixed name, so no node is ever created twice. Each loop reads the
children, releases suspend gates, asks ``domain.workflow.plan`` what to do, and does it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from pydantic import ValidationError

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.durations import parse_duration
from coordinator.api.models import (
    RESUME_ANNOTATION,
    TERMINAL_PHASES,
    WORKFLOW_NODE_LABEL,
    NodePhase,
    Phase,
    RunEnding,
    WorkflowNodeStatus,
)
from coordinator.api.probes import AssertionType
from coordinator.api.workflow import ChaosWorkflowSpec, WorkflowNode
from coordinator.domain import conditions as cond
from coordinator.domain.fieldpaths import validation_problem
from coordinator.domain.permissions import notification_needs
from coordinator.domain.timestamps import parse_iso
from coordinator.domain.verdict import evaluate_assertion, failed_probe, resilience_score
from coordinator.domain.workflow import (
    ACTIVE,
    Plan,
    child_parameters,
    mean_score,
    node_phase_of,
    plan,
    verdict,
)
from coordinator.engine import notifications, observers
from coordinator.engine.authorization import refusals
from coordinator.engine.clock import SYSTEM_CLOCK, Clock
from coordinator.engine.run.admission import FORBIDDEN, Admission, render_scenario
from coordinator.engine.run.errors import WAITING_REASON, RetryLater, RunEnded, RunInterrupted, is_transient
from coordinator.engine.run.finish import Finisher, Mirror
from coordinator.engine.run.machine import unexpected_error
from coordinator.engine.run.probes import ProbeSupervisor, assertion_failed
from coordinator.engine.run.state import RunHandle, RunState
from coordinator.engine.targets import NamespacePolicy
from coordinator.engine.workflow.children import WAKEUPS, Children, child_body
from coordinator.settings import Settings

log = logging.getLogger(__name__)

# Seconds between full reads of the children when no child event woke the run (a missed event costs this much).
RELIST_INTERVAL = 5.0
# Seconds a woken run waits for more child events before it reads the children (100 children change together).
SETTLE = 0.02


class WorkflowProbes(ProbeSupervisor):
    """The workflow's own steady state, held across every node. Its score joins the nodes' scores."""

    def record(self) -> None:
        status = self.state.status
        if self.session is not None:
            status.probes = [s.to_result() for s in self.session.stats.values()]
        own = None
        if self.session is not None:
            own = resilience_score(self.session.stats.values(), status.assertions, injected=True)
        status.resilienceScore = mean_score([*(n.resilienceScore for n in status.nodes), own])


class WorkflowMachine:
    """Drives one workflow run from its stored status to a terminal phase, or until the process must stop."""

    def __init__(
        self,
        client: KubeApi,
        settings: Settings,
        handle: RunHandle,
        stored: Mapping[str, Any] | None = None,
        mirror: Mirror | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.state = RunState(client, settings, handle, stored, clock)
        self.stored = stored if stored is not None else handle.body
        self.workflow: ChaosWorkflowSpec | None = None
        self.probes = WorkflowProbes(self.state, source=self.need_workflow, owner=self.owner)
        self.finisher = Finisher(self.state, self.probes, mirror)
        run = self.state.run
        self.children = Children(client, run.namespace, run.name, run.uid)
        self.seen: dict[str, Mapping[str, Any]] = {}

    def owner(self) -> str:
        return f"ChaosWorkflow {self.state.status.workflow or self.state.scenario_ref}"

    def need_workflow(self) -> ChaosWorkflowSpec:
        if self.workflow is None:
            raw = self.state.status.workflowSnapshot
            if raw is None:
                raise RunEnded(Phase.ERROR, "StatusLost", "status.workflowSnapshot is missing; cannot resume")
            self.workflow = ChaosWorkflowSpec.model_validate(json.loads(raw))
        return self.workflow

    # --- the boundary -------------------------------------------------------------------------------------------

    async def execute(self) -> None:
        """Drive the run to a terminal phase; every way out through ``finish`` first stops every active node."""
        state = self.state
        if state.status.phase in TERMINAL_PHASES:
            await notifications.resume(state)  # deliveries a crash left Pending
            return
        try:
            try:
                await self._advance()
            except (RunEnded, RunInterrupted, RetryLater, ApiError):
                raise
            except Exception as exc:
                raise RunEnded(Phase.ERROR, "InternalError", unexpected_error(state, exc)) from exc
        except RunEnded as end:
            await self.wind_down(end)
            await self.finisher.finish(end)
        except ApiError as exc:
            if is_transient(exc):
                raise RetryLater(str(exc)) from exc
            failed = RunEnded(Phase.ERROR, "ApiError", f"Kubernetes API: {exc}")
            await self.wind_down(failed)
            await self.finisher.finish(failed)
        finally:
            WAKEUPS.forget(state.run.namespace, self.children.label)
            await self.probes.close()

    async def _advance(self) -> None:
        state = self.state
        status = state.status
        if status.ending is not None:
            raise RunEnded(Phase(status.ending.phase), status.ending.reason, status.ending.message)
        if status.phase in (None, Phase.PENDING):
            state.doing = "start"
            await self.start()
        workflow = self.need_workflow()
        state.check_stop()
        state.doing = "spec.steadyState"
        self.probes.open()
        await self.probes.baseline()
        state.doing = "spec.nodes"
        await self.run_nodes(workflow)
        state.doing = "the checks after the last node"
        await self.probes.after_checks()
        raise self.verdict(workflow)

    # --- start -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """PENDING -> STARTED: the requester, a pause, the workflow read and rendered; every node Pending."""
        state = self.state
        admission = Admission(state, NamespacePolicy(state.client, state.settings))
        requester = await admission.requester()
        await admission.wait_while_paused()
        workflow, name, generation = await self.read_workflow()
        # The nodes' children check their own scenarios' rights; the workflow's own webhooks are checked here.
        refused = await refusals(
            state.client, requester, notification_needs(workflow.notifications, state.run.namespace)
        )
        if refused:
            raise RunEnded(Phase.ERROR, FORBIDDEN, "; ".join(refused))
        started = state.clock.now()
        status = state.status
        status.phase = Phase.RUNNING
        status.reason = "Started"
        status.message = f"running workflow {name}"
        status.workflow = name
        status.scenarioGeneration = generation
        status.startedAt = started
        status.deadline = started + timedelta(seconds=state.spec.timeout_seconds)
        status.nodes = [WorkflowNodeStatus(name=node.name) for node in workflow.nodes]
        status.workflowSnapshot = json.dumps(workflow.model_dump(mode="json", exclude_none=True))
        status.conditions = cond.running_conditions(status.conditions, state.generation)
        self.workflow = workflow
        event = notifications.queue(state)
        await state.persist()
        notifications.send(state, event)
        observers.notify("run_started", state.info)
        await state.event("Started", f"running workflow {name}")

    async def read_workflow(self) -> tuple[ChaosWorkflowSpec, str, int]:
        state = self.state
        ref = state.spec.workflowRef
        assert ref is not None
        where = f"TestRun {state.run.ref}"
        named = f"ChaosWorkflow {state.run.namespace}/{ref.name}"
        obj = await state.client.get_or_none(resource_path("ChaosWorkflow", state.run.namespace, ref.name))
        if obj is None:
            raise RunEnded(Phase.ERROR, "WorkflowNotFound", f"{where}: spec.workflowRef.name: {named} not found")
        raw = obj.get("spec") or {}
        rendered = render_scenario(where, named, raw, state.spec.parameters)
        try:
            workflow = ChaosWorkflowSpec.model_validate(rendered)
        except ValidationError as exc:
            field, problem = validation_problem(exc.errors()[0])
            raise RunEnded(Phase.ERROR, "InvalidWorkflow", f"{named}: {field}: {problem}") from exc
        return workflow, f"{state.run.namespace}/{ref.name}", int(obj["metadata"].get("generation") or 1)

    # --- the nodes ----------------------------------------------------------------------------------------------

    async def run_nodes(self, workflow: ChaosWorkflowSpec) -> None:
        """Until every node has ended: observe the children, release gates, start and skip nodes, sample probes."""
        state = self.state
        started = state.status.startedAt.timestamp() if state.status.startedAt else state.clock.time()
        relisted = -RELIST_INTERVAL
        woken = False
        WAKEUPS.follow(state.run.namespace, self.children.label)
        while True:
            state.check_stop()
            changed = False
            if state.clock.time() - relisted >= RELIST_INTERVAL:
                # A full read now and then: a change the watch missed (or made before this process) is seen here.
                WAKEUPS.take(state.run.namespace, self.children.label)
                self.seen = await self.children.by_node()
                relisted = state.clock.time()
                changed |= self.observe(complete=True)
            elif woken:
                self.children.apply_changes(self.seen, WAKEUPS.take(state.run.namespace, self.children.label))
                changed |= self.observe(complete=False)
            changed |= await self.release_gates()
            decided = plan(workflow.nodes, state.status.nodes, workflow.failurePolicy)
            changed |= await self.apply(workflow, decided)
            if decided.done:
                if changed:
                    self.probes.record()
                return
            if changed:
                self.probes.record()
                await state.persist()
            if self.probes.session is not None:
                running = any(n.phase == NodePhase.RUNNING for n in state.status.nodes)
                stopping = await self.probes.session.tick(faults_active=running, started=started)
                if stopping is not None:
                    stats = self.probes.session.stats[stopping.name]
                    raise RunEnded(
                        Phase.FAILED,
                        "ProbeFailed",
                        f"probe {stopping.name} failed ({stats.last_error}) with stopOnFailure: every node stopped",
                    )
            woken = await WAKEUPS.wait(state.run.namespace, self.children.label, state.settings.poll_interval)
            if woken:
                await state.clock.sleep(SETTLE)

    def node(self, name: str) -> WorkflowNodeStatus:
        return next(n for n in self.state.status.nodes if n.name == name)

    def observe(self, complete: bool) -> bool:
        """Bring each started scenario node up to date with its child; True when a node changed. ``complete``: the
        children were just read in full, so a child not among them is gone (otherwise it may not be seen yet)."""
        changed = False
        for record in self.state.status.nodes:
            if record.testRun is None or record.phase not in ACTIVE:
                continue
            child = self.seen.get(record.name)
            if child is None and not complete:
                continue
            before = record.model_dump()
            if child is None:
                record.phase = NodePhase.ERROR
                record.reason = "TestRunDeleted"
                record.message = f"its TestRun {record.testRun} was deleted before it ended"
                record.completedAt = self.state.clock.now()
            else:
                self.copy_child(record, child)
                if record.reason == WAITING_REASON and record.message:
                    record.message = self.name_siblings(record.message)
            changed |= record.model_dump() != before
        return changed

    def name_siblings(self, message: str) -> str:
        """A child's wait message with each sibling's UID replaced by its node: two branches that hit the same
        target are serialized by the target locks, and the workflow's status says which node waits for which."""
        for node, child in self.seen.items():
            uid = child["metadata"].get("uid")
            if uid and uid in message:
                message = message.replace(f"TestRun {uid}", uid).replace(uid, f"node {node}")
        return message

    def copy_child(self, record: WorkflowNodeStatus, child: Mapping[str, Any]) -> None:
        status = child.get("status") or {}
        record.phase = node_phase_of(status.get("phase"))
        record.reason = status.get("reason") or record.reason
        record.message = status.get("message") or record.message
        if status.get("resilienceScore") is not None:
            record.resilienceScore = int(status["resilienceScore"])
        if status.get("recoveryTimeSeconds") is not None:
            record.recoveryTimeSeconds = float(status["recoveryTimeSeconds"])
        if record.phase not in ACTIVE and record.completedAt is None:
            completed = status.get("completedAt")
            record.completedAt = parse_iso(completed) if completed else self.state.clock.now()

    async def release_gates(self) -> bool:
        """End the suspend gates whose wait is over: their duration passed, or chaos.coordinator.dev/resume=true
        was set on this run (which the run then removes, so the next gate waits for its own approval)."""
        state = self.state
        workflow = self.need_workflow()
        specs = {n.name: n for n in workflow.nodes}
        waiting = [n for n in state.status.nodes if n.phase == NodePhase.SUSPENDED]
        if not waiting:
            return False
        annotations = state.handle.body.get("metadata", {}).get("annotations") or {}
        approved = annotations.get(RESUME_ANNOTATION) == "true"
        now = state.clock.now()
        changed = False
        for record in waiting:
            suspend = specs[record.name].suspend
            duration = suspend.duration if suspend is not None else None
            due = (
                record.startedAt is not None
                and duration is not None
                and now >= record.startedAt + timedelta(seconds=parse_duration(duration))
            )
            if approved or due:
                record.phase = NodePhase.PASSED
                record.reason = "Resumed" if approved else "Waited"
                record.message = (
                    f"resumed by the annotation {RESUME_ANNOTATION}=true" if approved else f"waited {duration}"
                )
                record.completedAt = now
                changed = True
        if approved:
            await state.client.patch(
                resource_path("TestRun", state.run.namespace, state.run.name),
                {"metadata": {"annotations": {RESUME_ANNOTATION: None}}},
            )
            await state.event("Resumed", f"suspend gate(s) {', '.join(r.name for r in waiting)} resumed")
        return changed

    async def apply(self, workflow: ChaosWorkflowSpec, decided: Plan) -> bool:
        """Carry out a plan: skip, abort (StopOnFailure) and start nodes. True when a node changed."""
        state = self.state
        now = state.clock.now()
        changed = False
        for skip in decided.skip:
            record = self.node(skip.node)
            record.phase, record.reason, record.message = NodePhase.SKIPPED, "Skipped", skip.message
            record.completedAt = now
            changed = True
        to_abort = [self.node(name) for name in decided.abort]
        if to_abort:
            await self.stop_nodes(to_abort, f"node {decided.stopping} failed (failurePolicy StopOnFailure)")
            changed |= any(r.phase == NodePhase.CANCELLED for r in to_abort)
        specs = {n.name: n for n in workflow.nodes}
        bodies = []
        for name in decided.start:
            record = self.node(name)
            spec = specs[name]
            record.startedAt = now
            if spec.suspend is not None:
                record.phase = NodePhase.SUSPENDED
                record.reason = "Suspended"
                record.message = self.gate_message(spec)
                await state.event("Suspended", f"node {name}: {record.message}")
            elif name in self.seen:
                # Its child exists already (made before a crash, or by a batch that failed in part): adopted, not
                # POSTed again through admission.
                record.phase = NodePhase.RUNNING
                record.testRun = self.seen[name]["metadata"]["name"]
                self.copy_child(record, self.seen[name])
            else:
                body = child_body(self.stored, name, self.child_spec(spec))
                bodies.append(body)
                record.phase = NodePhase.RUNNING
                record.reason = "Created"
                record.message = None
                record.testRun = body["metadata"]["name"]
            changed = True
        if bodies:
            for child in await self.children.create(bodies):
                self.seen[str(child["metadata"]["labels"][WORKFLOW_NODE_LABEL])] = child
        return changed

    def gate_message(self, spec: WorkflowNode) -> str:
        duration = spec.suspend.duration if spec.suspend is not None else None
        approve = f"chaos.coordinator.dev/resume=true on TestRun {self.state.run.name}"
        if duration:
            return f"waiting {duration}, or until {approve}"
        return f"waiting for approval: {approve}"

    def child_spec(self, spec: WorkflowNode) -> dict[str, Any]:
        assert spec.scenarioRef is not None
        body: dict[str, Any] = {"scenarioRef": {"name": spec.scenarioRef.name}}
        if spec.parameters:
            body["parameters"] = child_parameters(spec.parameters)
        if spec.timeout:
            body["timeout"] = spec.timeout
        if self.state.spec.dryRun:
            body["dryRun"] = True
        if self.state.spec.seed is not None:
            body["seed"] = self.state.spec.seed
        return body

    async def stop_nodes(self, records: list[WorkflowNodeStatus], why: str) -> None:
        """Abort the running children (each reverts everything and ends Cancelled); cancel the waiting gates."""
        now = self.state.clock.now()
        running = []
        for record in records:
            if record.phase == NodePhase.SUSPENDED:
                record.phase, record.reason, record.message = NodePhase.CANCELLED, "Cancelled", why
                record.completedAt = now
            elif record.phase == NodePhase.RUNNING and record.testRun:
                running.append(record.testRun)
        await self.children.abort(running)

    # --- the end ------------------------------------------------------------------------------------------------

    def verdict(self, workflow: ChaosWorkflowSpec) -> RunEnded:
        """How the run ends once every node has: the nodes' outcome, then the workflow's own probes and
        assertions (recovery_time: the slowest node's)."""
        status = self.state.status
        recoveries = [n.recoveryTimeSeconds for n in status.nodes if n.recoveryTimeSeconds is not None]
        status.recoveryTimeSeconds = max(recoveries) if recoveries else None
        stats = self.probes.session.stats if self.probes.session is not None else {}
        status.assertions = [
            evaluate_assertion(a, stats, status.recoveryTimeSeconds)
            for a in workflow.assertions
            if a.type != AssertionType.AUDIT_TRAIL
        ]
        self.probes.record()
        nodes = verdict(status.nodes)
        if nodes.phase != Phase.PASSED:
            return RunEnded(nodes.phase, nodes.reason, nodes.message)
        bad_probe = failed_probe(stats.values())
        if bad_probe is not None:
            return RunEnded(
                Phase.FAILED, "ProbeFailed", f"probe {bad_probe.name} failed: {bad_probe.last_error or 'failed'}"
            )
        bad = next((a for a in status.assertions if not a.passed), None)
        if bad is not None:
            return assertion_failed(bad)
        return RunEnded(Phase.PASSED, "Completed", nodes.message)

    async def wind_down(self, end: RunEnded) -> None:
        """Before a run that ends early writes its end: stop every active node, and wait until each child has
        reverted everything and ended. The end is written first (status.ending), so a restarted operator finishes
        this end instead of resuming the nodes."""
        state = self.state
        status = state.status
        now = state.clock.now()
        for record in status.nodes:
            if record.phase == NodePhase.PENDING:
                record.phase, record.reason = NodePhase.SKIPPED, "Skipped"
                record.message = f"the workflow run ended ({end.reason}) before this node started"
                record.completedAt = now
        active = [r for r in status.nodes if r.phase in ACTIVE]
        if not active:
            return
        if status.ending is None:
            status.ending = RunEnding(phase=end.phase, reason=end.reason, message=end.message)
            await state.persist()  # -> ENDING
        await self.stop_nodes(active, f"the workflow run ended: {end.reason}")
        while any(r.phase in ACTIVE for r in status.nodes):
            if state.handle.stopped():
                raise RunInterrupted("operator stopping or TestRun deleted")
            self.seen = await self.children.by_node()
            if self.observe(complete=True):
                await state.persist()
            if any(r.phase in ACTIVE for r in status.nodes):
                await WAKEUPS.wait(state.run.namespace, self.children.label, state.settings.poll_interval)
