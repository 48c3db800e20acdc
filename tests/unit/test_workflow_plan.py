"""The workflow's pure decisions: the DAG checks, which nodes start or are skipped, StopOnFailure, the verdict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from pydantic import ValidationError

from coordinator.api.models import WORKFLOW_NODE_LABEL, NodePhase, Phase, TestRunSpec, WorkflowNodeStatus
from coordinator.api.workflow import ChaosWorkflowSpec, FailurePolicy, WorkflowNode, dag_problems, find_cycle
from coordinator.domain.workflow import child_name, child_parameters, mean_score, node_phase_of, plan, verdict
from coordinator.engine.workflow.children import Children, Wakeups, newer

T0 = datetime(2026, 12, 6, tzinfo=UTC)


def nodes(*specs: tuple[str, list[str], str]) -> list[WorkflowNode]:
    return [
        WorkflowNode.model_validate({"name": n, "scenarioRef": {"name": "s"}, "dependsOn": deps, "when": when})
        for n, deps, when in specs
    ]


def status(phases: dict[str, NodePhase], **times: tuple[int | None, int | None]) -> list[WorkflowNodeStatus]:
    out = []
    for name, phase in phases.items():
        start, end = times.get(name, (None, None))
        out.append(
            WorkflowNodeStatus(
                name=name,
                phase=phase,
                startedAt=T0 + timedelta(seconds=start) if start is not None else None,
                completedAt=T0 + timedelta(seconds=end) if end is not None else None,
            )
        )
    return out


P, R, S = NodePhase.PENDING, NodePhase.RUNNING, NodePhase.SKIPPED


def test_roots_start_first_and_dependents_wait() -> None:
    dag = nodes(("a", [], "Passed"), ("b", [], "Passed"), ("c", ["a", "b"], "Passed"))
    decided = plan(dag, status({"a": P, "b": P, "c": P}), FailurePolicy.STOP_ON_FAILURE)
    assert decided.start == ["a", "b"]
    assert not decided.skip
    assert not decided.done
    decided = plan(dag, status({"a": NodePhase.PASSED, "b": R, "c": P}), FailurePolicy.STOP_ON_FAILURE)
    assert decided.start == []
    decided = plan(dag, status({"a": NodePhase.PASSED, "b": NodePhase.PASSED, "c": P}), FailurePolicy.CONTINUE)
    assert decided.start == ["c"]


@pytest.mark.parametrize(
    ("dep", "when", "starts"),
    [
        (NodePhase.PASSED, "Passed", True),
        (NodePhase.FAILED, "Passed", False),
        (NodePhase.SKIPPED, "Passed", False),
        (NodePhase.FAILED, "Failed", True),
        (NodePhase.ERROR, "Failed", True),
        (NodePhase.TIMED_OUT, "Failed", True),
        (NodePhase.PASSED, "Failed", False),
        (NodePhase.CANCELLED, "Failed", False),
        (NodePhase.PASSED, "Always", True),
        (NodePhase.SKIPPED, "Always", True),
        (NodePhase.FAILED, "Always", True),
    ],
)
def test_when_decides_after_the_dependencies_end(dep: NodePhase, when: str, starts: bool) -> None:
    dag = nodes(("a", [], "Passed"), ("b", ["a"], when))
    decided = plan(dag, status({"a": dep, "b": P}), FailurePolicy.CONTINUE)
    assert decided.start == (["b"] if starts else [])
    assert [s.node for s in decided.skip] == ([] if starts else ["b"])
    assert decided.done is (not starts)


def test_a_skip_cascades_within_one_plan() -> None:
    dag = nodes(("a", [], "Passed"), ("b", ["a"], "Passed"), ("c", ["b"], "Passed"), ("d", ["c"], "Always"))
    decided = plan(dag, status({"a": NodePhase.FAILED, "b": P, "c": P, "d": P}), FailurePolicy.CONTINUE)
    assert [s.node for s in decided.skip] == ["b", "c"]
    assert decided.start == ["d"]
    assert "dependency a ended Failed" in decided.skip[0].message


def test_stop_on_failure_aborts_what_ran_before_it_and_spares_the_failure_branches() -> None:
    dag = nodes(
        ("long", [], "Passed"),
        ("bad", [], "Passed"),
        ("next", ["long"], "Passed"),
        ("alarm", ["bad"], "Failed"),
        ("tidy", ["bad"], "Always"),
    )
    phases = {"long": R, "bad": NodePhase.FAILED, "next": P, "alarm": P, "tidy": P}
    decided = plan(dag, status(phases, long=(0, None), bad=(0, 5)), FailurePolicy.STOP_ON_FAILURE)
    assert decided.abort == ["long"]
    assert decided.stopping == "bad"
    assert decided.start == ["alarm", "tidy"]
    assert decided.skip == []  # next waits for long to end (Cancelled), then is skipped
    phases.update(long=NodePhase.CANCELLED, alarm=R, tidy=R)
    later = status(phases, long=(0, 7), bad=(0, 5), alarm=(6, None), tidy=(6, None))
    decided = plan(dag, later, FailurePolicy.STOP_ON_FAILURE)
    assert decided.abort == [], "the branches the stop started are not aborted"
    assert [s.node for s in decided.skip] == ["next"]
    assert "StopOnFailure" in decided.skip[0].message
    decided = plan(dag, later, FailurePolicy.CONTINUE)
    assert decided.abort == []


def test_the_verdict_orders_error_failed_cancelled_passed() -> None:
    def v(**phases: NodePhase) -> Phase:
        return verdict(status(phases)).phase

    assert v(a=NodePhase.PASSED, b=S) == Phase.PASSED
    assert v(a=NodePhase.PASSED, b=NodePhase.CANCELLED) == Phase.CANCELLED
    assert v(a=NodePhase.CANCELLED, b=NodePhase.FAILED) == Phase.FAILED
    assert v(a=NodePhase.TIMED_OUT) == Phase.FAILED
    assert v(a=NodePhase.FAILED, b=NodePhase.ERROR) == Phase.ERROR
    failed = verdict(status({"a": NodePhase.FAILED, "b": NodePhase.FAILED}))
    assert failed.reason == "NodeFailed"
    assert failed.message.startswith("node a ended Failed")
    assert "(and 1 more)" in failed.message


def test_child_names_are_stable_and_fit() -> None:
    assert child_name("gameday", "kill") == "gameday-kill"
    long = child_name("p" * 60, "node-x")
    assert len(long) <= 63
    assert long.endswith("-node-x")
    assert long == child_name("p" * 60, "node-x")
    assert long != child_name("p" * 59 + "q", "node-x"), "cut parents stay apart"


def test_scores_and_parameters() -> None:
    assert mean_score([80, None, 60]) == 70
    assert mean_score([None]) is None, "unknown is never a score"
    assert child_parameters({"n": 2, "b": True, "f": 1.5, "s": "x"}) == {"n": 2, "b": "true", "f": "1.5", "s": "x"}
    assert node_phase_of(None) == NodePhase.RUNNING
    assert node_phase_of("Pending") == NodePhase.RUNNING
    assert node_phase_of("TimedOut") == NodePhase.TIMED_OUT


def test_cycles_and_unknown_dependencies_are_named() -> None:
    dag = nodes(("a", ["c"], "Passed"), ("b", ["a"], "Passed"), ("c", ["b"], "Passed"), ("d", ["x", "d"], "Passed"))
    problems = dag_problems(dag)
    assert (3, "dependsOn", "unknown node 'x'") in problems
    assert (3, "dependsOn", "a node cannot depend on itself") in problems
    assert any("dependency cycle: a -> c -> b -> a" in message for _, _, message in problems), problems
    assert find_cycle({"a": ["b"], "b": []}) is None
    with pytest.raises(ValidationError, match="dependency cycle"):
        ChaosWorkflowSpec.model_validate(
            {
                "nodes": [
                    {"name": "a", "suspend": {}, "dependsOn": ["b"]},
                    {"name": "b", "suspend": {}, "dependsOn": ["a"]},
                ]
            }
        )


def test_model_rules() -> None:
    with pytest.raises(ValidationError, match="exactly one of scenarioRef and suspend"):
        WorkflowNode.model_validate({"name": "a"})
    with pytest.raises(ValidationError, match="takes no parameters"):
        WorkflowNode.model_validate({"name": "a", "suspend": {}, "parameters": {"x": 1}})
    with pytest.raises(ValidationError, match="audit_trail"):
        ChaosWorkflowSpec.model_validate(
            {"nodes": [{"name": "a", "suspend": {}}], "assertions": [{"name": "t", "type": "audit_trail"}]}
        )
    with pytest.raises(ValidationError, match=r"exactly one of spec\.scenarioRef and spec\.workflowRef"):
        TestRunSpec.model_validate({"scenarioRef": {"name": "s"}, "workflowRef": {"name": "w"}})
    with pytest.raises(ValueError, match="runs a workflow"):
        _ = TestRunSpec.model_validate({"workflowRef": {"name": "w"}}).scenario


# --- the children the watch reports ---------------------------------------------------------------------------


def _child(name: str, node: str, rv: str, owner: str = "parent-uid", phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": rv,
            "labels": {WORKFLOW_NODE_LABEL: node},
            "ownerReferences": [{"uid": owner, "controller": True}],
        },
        "status": {"phase": phase},
    }


async def test_the_watch_hands_changed_children_to_a_followed_parent_only() -> None:
    board = Wakeups()
    board.wake("ns", "other", _child("other-a", "a", "5"))
    assert board.take("ns", "other") == {}, "nobody follows that parent: nothing kept"
    board.follow("ns", "run")
    board.wake("ns", "run", _child("run-a", "a", "7"))
    assert await board.wait("ns", "run", within=0.01) is True
    assert set(board.take("ns", "run")) == {"run-a"}
    assert board.take("ns", "run") == {}
    assert await board.wait("ns", "run", within=0.01) is False
    board.forget("ns", "run")
    board.wake("ns", "run", _child("run-a", "a", "8"))
    assert board.take("ns", "run") == {}


def test_changes_apply_only_when_newer_and_owned() -> None:
    children = Children(cast(Any, None), "ns", "run", "parent-uid")
    seen: dict[str, Any] = {"a": _child("run-a", "a", "10")}
    children.apply_changes(seen, {"run-a": _child("run-a", "a", "9", phase="Passed")})
    assert seen["a"]["status"]["phase"] == "Running", "an older version never replaces a newer one"
    children.apply_changes(seen, {"run-a": _child("run-a", "a", "11", phase="Passed")})
    assert seen["a"]["status"]["phase"] == "Passed"
    children.apply_changes(seen, {"run-b": _child("run-b", "b", "12", owner="someone-else")})
    assert "b" not in seen, "a child of a same-named parent of the past is not ours"
    children.apply_changes(seen, {"run-a": None})
    assert seen == {}
    assert newer(_child("x", "x", "abc"), _child("x", "x", "1")), "opaque versions: the report wins"
