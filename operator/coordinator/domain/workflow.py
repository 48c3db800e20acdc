"""A workflow run's decisions, as pure functions of its spec and its nodes' phases.

The workflow run (engine/workflow/) observes its children, then asks ``plan`` what to do next: which nodes start,
which are skipped (their ``when`` does not hold, or the workflow stops on a failure), and whether the running
nodes must be aborted. ``verdict`` says how the workflow ends once every node has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.api.models import NODE_DONE, NodePhase, Phase, WorkflowNodeStatus
from coordinator.api.workflow import FailurePolicy, When, WorkflowNode
from coordinator.domain.schedule import MAX_NAME_LENGTH

# A node that ended like this counts as failed for ``when: Failed`` and for StopOnFailure.
FAILING = frozenset({NodePhase.FAILED, NodePhase.ERROR, NodePhase.TIMED_OUT})
ACTIVE = frozenset({NodePhase.RUNNING, NodePhase.SUSPENDED})

# A child TestRun's phase -> its node's phase.
_NODE_OF_RUN = {
    Phase.PENDING: NodePhase.RUNNING,
    Phase.RUNNING: NodePhase.RUNNING,
    Phase.PASSED: NodePhase.PASSED,
    Phase.FAILED: NodePhase.FAILED,
    Phase.ERROR: NodePhase.ERROR,
    Phase.CANCELLED: NodePhase.CANCELLED,
    Phase.TIMED_OUT: NodePhase.TIMED_OUT,
}


def node_phase_of(run_phase: str | None) -> NodePhase:
    """The phase of the node whose child TestRun is in ``run_phase`` (a child without a phase yet is Running)."""
    if run_phase is None:
        return NodePhase.RUNNING
    return _NODE_OF_RUN.get(Phase(run_phase), NodePhase.RUNNING)


def child_name(parent: str, node: str) -> str:
    """The child TestRun of ``node``: ``<parent>-<node>``, at most 63 characters, the same on every call (a
    restarted operator's create is a 409, never a second child). A long parent name is cut, and a hash of it keeps
    cut names of different parents apart."""
    name = f"{parent}-{node}"
    if len(name) <= MAX_NAME_LENGTH:
        return name
    digest = "-" + hashlib.sha256(parent.encode()).hexdigest()[:6]
    prefix = parent[: MAX_NAME_LENGTH - len(node) - 1 - len(digest)].rstrip("-.")
    return f"{prefix}{digest}-{node}"


@dataclass(frozen=True)
class Skip:
    node: str
    message: str


@dataclass
class Plan:
    """What the workflow run does next."""

    start: list[str] = field(default_factory=list)  # nodes whose dependencies ended and whose ``when`` holds
    skip: list[Skip] = field(default_factory=list)
    abort: list[str] = field(default_factory=list)  # active nodes to stop: the workflow stops on a failure
    stopping: str | None = None  # the failed node StopOnFailure stops for
    done: bool = False  # every node has ended


def _when_holds(node: WorkflowNode, deps: Sequence[tuple[str, NodePhase]]) -> tuple[bool, str]:
    if node.when == When.ALWAYS:
        return True, ""
    if node.when == When.FAILED:
        if any(phase in FAILING for _, phase in deps):
            return True, ""
        return False, "when: Failed, and no dependency failed"
    not_passed = [(name, phase) for name, phase in deps if phase != NodePhase.PASSED]
    if not not_passed:
        return True, ""
    name, phase = not_passed[0]
    return False, f"when: Passed, and dependency {name} ended {phase}"


def plan(nodes: Sequence[WorkflowNode], status: Sequence[WorkflowNodeStatus], policy: FailurePolicy) -> Plan:
    """The next moves of a workflow run whose nodes are as ``status`` says (pure; nodes in spec order).

    A node starts once every dependency has ended and its ``when`` holds, else it is Skipped (a Skipped node has
    ended: what depends on it decides in turn). Under StopOnFailure the first failure aborts the active nodes and
    skips every node not started yet, except those whose ``when`` is Failed or Always: they still run once their
    dependencies have ended (the workflow's clean-up and alarm branches).
    """
    result = Plan()
    failures = [s for s in status if s.phase in FAILING]
    # The first failure in time (a node without an end time counts as the latest).
    failed = min(failures, key=lambda s: (s.completedAt is None, s.completedAt or 0), default=None)
    stopping = policy == FailurePolicy.STOP_ON_FAILURE and failed is not None
    if stopping and failed is not None:
        result.stopping = failed.name
        # The nodes that were active when the failure came; those started since are the Failed/Always branches the
        # stop itself started.
        since = failed.completedAt
        result.abort = [
            s.name
            for s in status
            if s.phase in ACTIVE and (since is None or s.startedAt is None or s.startedAt <= since)
        ]
    # Decisions cascade through the DAG within one call: a node skipped here ends its dependents' wait at once.
    phases = {s.name: s.phase for s in status}
    for _ in range(len(nodes) + 1):
        changed = False
        for node in nodes:
            if phases.get(node.name, NodePhase.PENDING) != NodePhase.PENDING:
                continue
            deps = [(name, phases.get(name, NodePhase.PENDING)) for name in node.dependsOn]
            if any(phase not in NODE_DONE for _, phase in deps):
                continue
            if stopping and node.when == When.PASSED:
                message = f"the workflow stopped when node {result.stopping} failed (failurePolicy StopOnFailure)"
                result.skip.append(Skip(node.name, message))
                phases[node.name] = NodePhase.SKIPPED
                changed = True
                continue
            holds, why = _when_holds(node, deps)
            if holds:
                result.start.append(node.name)
                phases[node.name] = NodePhase.RUNNING
            else:
                result.skip.append(Skip(node.name, why))
                phases[node.name] = NodePhase.SKIPPED
                changed = True
        if not changed:
            break
    result.done = all(phases.get(node.name) in NODE_DONE for node in nodes)
    return result


@dataclass(frozen=True)
class WorkflowVerdict:
    phase: Phase
    reason: str
    message: str


def verdict(status: Sequence[WorkflowNodeStatus]) -> WorkflowVerdict:
    """How a workflow run ends once every node has: Error when a node errored (the test could not run as
    written), else Failed when one failed or timed out, else Cancelled when one was aborted from outside, else
    Passed. Skipped nodes count for nothing: a ``when`` that did not hold is the workflow going as designed."""
    for phase, run_phase, reason in (
        (NodePhase.ERROR, Phase.ERROR, "NodeError"),
        (NodePhase.FAILED, Phase.FAILED, "NodeFailed"),
        (NodePhase.TIMED_OUT, Phase.FAILED, "NodeTimedOut"),
        (NodePhase.CANCELLED, Phase.CANCELLED, "NodeCancelled"),
    ):
        hit = [s for s in status if s.phase == phase]
        if hit:
            first = hit[0]
            detail = f": {first.message}" if first.message else ""
            others = f" (and {len(hit) - 1} more)" if len(hit) > 1 else ""
            return WorkflowVerdict(run_phase, reason, f"node {first.name} ended {phase}{detail}{others}")
    return WorkflowVerdict(Phase.PASSED, "Completed", summary(status))


def summary(status: Sequence[WorkflowNodeStatus]) -> str:
    counts: dict[str, int] = {}
    for s in status:
        counts[s.phase] = counts.get(s.phase, 0) + 1
    return ", ".join(f"{count} node(s) {phase}" for phase, count in counts.items())


def mean_score(scores: Iterable[int | None]) -> int | None:
    """The mean of the known scores, rounded; None when none is known (unknown is never reported as a score)."""
    known = [s for s in scores if s is not None]
    return round(sum(known) / len(known)) if known else None


def child_parameters(rendered: Mapping[str, Any]) -> dict[str, int | str]:
    """A node's rendered parameters as a TestRun's (int or string: the CRD's int-or-string)."""
    values: dict[str, int | str] = {}
    for name, value in rendered.items():
        if isinstance(value, bool):
            values[name] = "true" if value else "false"
        elif isinstance(value, int | str):
            values[name] = value
        else:
            values[name] = str(value)
    return values
