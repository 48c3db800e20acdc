"""The run page's timeline model, built purely from a TestRun (dashboard/timeline.py)."""

from __future__ import annotations

import json
from typing import Any

from coordinator.dashboard.runs import embedded_json
from coordinator.dashboard.timeline import build, depths, epoch_ms, from_history, target_key

T = 1_772_366_400_000.0  # 2026-03-01T12:00:00Z in ms


def at(seconds: float) -> str:
    """T + ``seconds`` as the operator writes timestamps."""
    whole = int(seconds)
    micro = round((seconds - whole) * 1_000_000)
    minute, second = divmod(whole, 60)
    return f"2026-03-01T12:{minute:02d}:{second:02d}.{micro:06d}Z"


def pod(name: str) -> dict[str, str]:
    return {"kind": "Pod", "namespace": "shop", "name": name}


def holding_run() -> dict[str, Any]:
    """A run in its second step: step 0 reverted (recovered in 4 s), step 1 holding, probes sampled."""
    return {
        "metadata": {"namespace": "shop", "name": "run-1", "uid": "u1", "resourceVersion": "42"},
        "spec": {"scenarioRef": {"name": "kill"}},
        "status": {
            "phase": "Running",
            "scenario": "shop/kill",
            "startedAt": at(0),
            "step": "hold-2",
            "steps": [
                {"name": "hold-1", "outcome": "Reverted", "injectedAt": at(1), "endsAt": at(6), "revertedAt": at(6.5),
                 "recoveryTimeSeconds": 4.0},
                {"name": "hold-2", "outcome": "Injected", "injectedAt": at(10), "endsAt": at(20)},
            ],
            "injections": [
                {"id": "0/0/Pod/shop/web-a", "step": 0, "fault": "pod-failure", "target": pod("web-a"),
                 "state": "Reverted", "appliedAt": at(1.2), "revertedAt": at(6.4)},
                {"id": "0/0/Pod/shop/web-b", "step": 0, "fault": "pod-failure", "target": pod("web-b"),
                 "state": "Reverted", "appliedAt": at(1.3), "revertedAt": at(6.3)},
                {"id": "1/0/Pod/shop/web-a", "step": 1, "fault": "pod-failure", "target": pod("web-a"),
                 "state": "Applied", "appliedAt": at(10.1)},
                {"id": "1/1/Node/n1", "step": 1, "faultIndex": 1, "fault": "node-cordon",
                 "target": {"kind": "Node", "name": "n1"}, "state": "Recorded"},
            ],
            "probes": [
                {"name": "api", "type": "http", "mode": "continuous", "samples": 3, "passed": 2, "failed": 1,
                 "recent": [{"at": at(2), "ok": True}, {"at": at(3), "ok": False}, {"at": at(4), "ok": True}]},
            ],
            "resilienceScore": 66,
        },
    }  # fmt: skip


def test_times_are_epoch_milliseconds() -> None:
    assert epoch_ms(at(1.5)) == T + 1500
    assert epoch_ms("2026-03-01T12:00:00Z") == T
    assert epoch_ms(None) is None
    assert epoch_ms("not a time") is None


def test_steps_are_spans_with_their_recovery_interval() -> None:
    model = build(holding_run(), now=T + 15_000)
    first, second = model["steps"]
    assert (first["name"], first["start"], first["end"], first["reverted"]) == ("hold-1", T + 1000, T + 6500, True)
    assert first["recoveryEnd"] == T + 5000, "recovery runs from the injection for recoveryTimeSeconds"
    assert second["end"] == T + 20_000, "a holding step spans to its endsAt"
    assert second["reverted"] is False
    assert second["recoveryEnd"] is None


def test_each_change_is_a_bar_on_its_targets_row() -> None:
    model = build(holding_run(), now=T + 15_000)
    rows = {row["key"]: row["changes"] for row in model["targets"]}
    assert list(rows) == ["Pod/shop/web-a", "Pod/shop/web-b", "Node/n1"], "one row per target, in ledger order"
    web_a = rows["Pod/shop/web-a"]
    assert [(c["state"], c["start"], c["end"], c["stepName"]) for c in web_a] == [
        ("Reverted", T + 1200, T + 6400, "hold-1"),
        ("Applied", T + 10_100, None, "hold-2"),
    ], "a change still applied is open-ended"
    assert rows["Node/n1"][0]["start"] is None, "planned, not applied: no bar yet"


def test_probe_samples_are_marks() -> None:
    probe = build(holding_run(), now=T + 15_000)["probes"][0]
    assert probe["name"] == "api"
    assert probe["marks"] == [{"at": T + 2000, "ok": True}, {"at": T + 3000, "ok": False}, {"at": T + 4000, "ok": True}]


def test_an_active_run_reaches_now_and_a_finished_one_its_last_moment() -> None:
    running = build(holding_run(), now=T + 25_000)
    assert running["run"]["active"] is True
    assert (running["begin"], running["end"]) == (T, T + 25_000)
    finished = holding_run()
    finished["status"] |= {"phase": "Passed", "completedAt": at(30), "reason": "Completed", "message": "ok"}
    done = build(finished, now=T + 99_000)
    assert done["run"]["active"] is False
    assert done["end"] == T + 30_000, "a finished run does not stretch to now"
    assert done["verdict"] == {
        "phase": "Passed",
        "reason": "Completed",
        "message": "ok",
        "score": 66,
        "recoverySeconds": None,
        "duration": "",
        "step": "hold-2",
    }


def test_a_pending_run_has_an_empty_timeline_a_second_wide() -> None:
    model = build({"metadata": {"namespace": "shop", "name": "new"}, "spec": {"abort": True}}, now=T)
    assert (model["begin"], model["end"]) == (T, T + 1000)
    assert model["steps"] == model["targets"] == model["probes"] == model["nodes"] == []
    assert model["verdict"]["phase"] == "Pending"
    assert model["run"]["abortRequested"] is True


def test_assertions_show_expected_against_actual() -> None:
    run = holding_run()
    run["status"]["assertions"] = [
        {"name": "up", "type": "availability", "expected": ">= 99", "actual": "66.67", "passed": False,
         "message": "below"},
    ]  # fmt: skip
    assert build(run, now=T)["assertions"] == [
        {"name": "up", "type": "availability", "expected": ">= 99", "actual": "66.67", "passed": False,
         "message": "below"},
    ]  # fmt: skip


def test_a_workflow_runs_nodes_are_layered_by_dependency_depth() -> None:
    snapshot = {
        "nodes": [
            {"name": "kill-cache", "scenarioRef": {"name": "c"}},
            {"name": "kill-web", "scenarioRef": {"name": "w"}},
            {"name": "approve", "suspend": {}, "dependsOn": ["kill-cache", "kill-web"]},
            {"name": "kill-db", "scenarioRef": {"name": "d"}, "dependsOn": ["approve"]},
            {"name": "report", "scenarioRef": {"name": "r"}, "dependsOn": ["kill-cache", "kill-db"]},
        ]
    }
    run = {
        "metadata": {"namespace": "shop", "name": "gd"},
        "spec": {"workflowRef": {"name": "game-day"}},
        "status": {
            "phase": "Running",
            "workflow": "shop/game-day",
            "workflowSnapshot": json.dumps(snapshot),
            "nodes": [
                {"name": "kill-cache", "phase": "Passed", "testRun": "gd-kill-cache"},
                {"name": "kill-web", "phase": "Running", "testRun": "gd-kill-web"},
                {"name": "approve", "phase": "Pending"},
            ],
        },
    }
    model = build(run, now=T)
    nodes = {n["name"]: n for n in model["nodes"]}
    assert [n["name"] for n in model["nodes"]] == ["kill-cache", "kill-web", "approve", "kill-db", "report"]
    assert {name: n["depth"] for name, n in nodes.items()} == {
        "kill-cache": 0,
        "kill-web": 0,
        "approve": 1,
        "kill-db": 2,
        "report": 3,
    }
    assert nodes["kill-cache"]["testRun"] == "gd-kill-cache"
    assert nodes["kill-db"]["phase"] == "Pending", "a node without status yet is Pending"
    assert nodes["approve"]["kind"] == "suspend"
    assert ["kill-db", "report"] in model["edges"]
    assert len(model["edges"]) == 5
    assert model["run"]["workflow"] == "shop/game-day"


def test_depths_survive_unknown_dependencies_and_cycles() -> None:
    assert depths({"a": ["ghost"], "b": ["a"]}) == {"a": 0, "b": 1}
    cyclic = depths({"a": ["b"], "b": ["a"], "c": ["a"]})
    assert set(cyclic) == {"a", "b", "c"}
    assert cyclic["c"] > cyclic["a"]


def test_a_workflow_run_without_a_snapshot_still_lists_its_nodes() -> None:
    run = {"metadata": {}, "spec": {}, "status": {"nodes": [{"name": "a", "phase": "Passed"}], "workflowSnapshot": "{"}}
    assert [(n["name"], n["depth"], n["phase"]) for n in build(run, now=T)["nodes"]] == [("a", 0, "Passed")]


def test_a_history_record_becomes_a_testrun_document() -> None:
    run = holding_run()
    record = {"uid": "u1", "namespace": "shop", "name": "run-1", "status": run["status"] | {"phase": "Passed"}}
    model = build(from_history(record), now=T + 99_000, source="history")
    run_facts = model["run"]
    assert (run_facts["namespace"], run_facts["name"], run_facts["uid"]) == ("shop", "run-1", "u1")
    assert run_facts["source"] == "history"
    assert model["run"]["active"] is False
    assert len(model["targets"]) == 3


def test_target_keys() -> None:
    assert target_key(pod("web-a")) == "Pod/shop/web-a"
    assert target_key({"kind": "Node", "name": "n1"}) == "Node/n1"


def test_the_embedded_model_cannot_end_its_script_element() -> None:
    text = str(embedded_json({"message": "</script><script>alert(1)</script>&"}))
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert json.loads(text) == {"message": "</script><script>alert(1)</script>&"}
