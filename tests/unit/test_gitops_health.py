"""The Argo CD health checks shipped in manifests/argocd, run in a real Lua as Argo CD evaluates them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

HEALTH = Path(__file__).resolve().parents[2] / "manifests" / "argocd" / "argocd-cm-health.yaml"
KEY = "resource.customizations.health.chaos.coordinator.dev_{kind}"


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    script = yaml.safe_load(HEALTH.read_text())["data"][KEY.format(kind=kind)]
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script)
    return str(result.status), str(result.message)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, "Progressing"),
        ({"phase": "Running"}, "Progressing"),
        ({"phase": "Passed", "message": "1 step(s) completed"}, "Healthy"),
        ({"phase": "Failed", "message": "assertion x failed"}, "Degraded"),
        ({"phase": "Error", "message": "agent not running"}, "Degraded"),
        ({"phase": "TimedOut"}, "Degraded"),
        ({"phase": "Cancelled"}, "Degraded"),
    ],
)
def test_testrun_health_follows_the_phase(status: dict[str, Any], expected: str) -> None:
    got, message = health("TestRun", {"spec": {}, "status": status})
    assert got == expected
    if status.get("message"):
        assert status["message"] in message


def test_a_testrun_without_status_is_progressing() -> None:
    assert health("TestRun", {"spec": {}})[0] == "Progressing"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"spec": {}}, "Healthy"),
        ({"spec": {"suspend": True}, "status": {"lastRun": {"phase": "Failed"}}}, "Suspended"),
        ({"spec": {}, "status": {"lastRun": {"name": "r1", "phase": "Passed"}}}, "Healthy"),
        ({"spec": {}, "status": {"lastRun": {"name": "r2", "phase": "Error"}}}, "Degraded"),
    ],
)
def test_scenario_health_follows_its_last_run(obj: dict[str, Any], expected: str) -> None:
    assert health("ChaosScenario", obj)[0] == expected
