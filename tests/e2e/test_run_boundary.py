"""Errors become results: every sub-step of a run, broken on purpose, ends the run with every change reverted.

The run machine runs in this process against the real API server (the session's operator watches only its own
namespaces, so it leaves these runs alone), and each test breaks one sub-step: the run must end ``Error`` with a
reason and a message naming where it was, and the Deployment it scaled must be back at its replicas. A transient
failure is retried, and abort and the run's timeout are honoured between the attempts of a failing retry loop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from conftest import make_deployment
from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.engine.run import RetryLater, RunHandle, RunMachine
from coordinator.faults import driver_for
from coordinator.settings import Settings
from support.chaos import GROUP, VERSION, Chaos

REPLICAS = 3


class Runs:
    def __init__(self, api_client: client.ApiClient, apps: client.AppsV1Api, kube: KubeClient, namespace: str) -> None:
        self.chaos = Chaos(api_client, namespace)
        self.apps = apps
        self.kube = kube
        self.namespace = namespace
        self.settings = Settings(poll_interval=0.2, recovery_interval=0.2)
        make_deployment(apps, namespace, "web", replicas=REPLICAS)
        self.chaos.scenario(
            "scale-down",
            {
                "target": {"kind": "Deployment", "labelSelector": {"matchLabels": {"app": "web"}}},
                "steps": [
                    {"name": "shrink", "duration": "1s", "faults": [{"type": "scale", "scale": {"replicas": 1}}]},
                    {"name": "again", "duration": "1s", "faults": [{"type": "scale", "scale": {"replicas": 0}}]},
                ],
            },
        )

    def start(self, **spec: Any) -> str:
        return self.chaos.run("scale-down", name=f"run-{uuid.uuid4().hex[:6]}", **spec)

    def executor(self, name: str) -> RunMachine:
        stored: dict[str, Any] = self.chaos.get_run(name)
        return RunMachine(self.kube, self.settings, RunHandle(body=stored, stopped=lambda: False), stored=stored)

    def replicas(self) -> int:
        return int(self.apps.read_namespaced_deployment("web", self.namespace).spec.replicas)

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.chaos.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, "testruns", name, body)


@pytest.fixture
def runs(api_client: client.ApiClient, apps: client.AppsV1Api, kube: KubeClient, unwatched_namespace: str) -> Runs:
    return Runs(api_client, apps, kube, unwatched_namespace)


def broken_after(machine: RunMachine, where: str, exc: Exception) -> None:
    """Make the machine's ``<collaborator>.<method>`` do its work, then raise ``exc`` (a fault applied, then an
    error)."""
    part, method = where.split(".")
    executor = getattr(machine, part)
    original: Callable[..., Any] = getattr(executor, method)
    if not asyncio.iscoroutinefunction(original):

        def broken_sync(*args: Any, **kwargs: Any) -> Any:
            original(*args, **kwargs)
            raise exc

        setattr(executor, method, broken_sync)
        return

    async def broken(*args: Any, **kwargs: Any) -> Any:
        await original(*args, **kwargs)
        raise exc

    setattr(executor, method, broken)


# Each sub-step of a run, in the order a run meets them; broken after it did its work.
SUB_STEPS = [
    ("admission.start", "start"),
    ("probes.open", "spec.steadyState"),
    ("probes.baseline", "spec.steadyState"),
    ("steps.plan", "spec.steps[0] (shrink)"),
    ("steps.apply", "spec.steps[0] (shrink)"),
    ("steps.hold", "spec.steps[0] (shrink)"),
    ("probes.await_recovery", "spec.steps[0] (shrink)"),
    ("probes.after_checks", "the checks after the last step"),
]


@pytest.mark.parametrize(("method", "where"), SUB_STEPS)
async def test_an_unexpected_error_in_any_sub_step_ends_the_run_error_with_everything_reverted(
    runs: Runs, method: str, where: str
) -> None:
    name = runs.start()
    executor = runs.executor(name)
    broken_after(executor, method, OverflowError("date value out of range"))
    await executor.execute()
    status = runs.chaos.status(name)
    assert status["phase"] == "Error", status
    assert status["reason"] == "InternalError"
    assert status["message"].startswith(f"{where}: unexpected OverflowError: date value out of range"), status
    assert "every change was reverted" in status["message"]
    assert runs.replicas() == REPLICAS, "the scaled Deployment is back"
    assert all(i["state"] in ("Reverted", "Failed") for i in status.get("injections", [])), status["injections"]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Failed"] == "True"
    assert conditions["Succeeded"] == "False"


async def test_a_failing_revert_keeps_the_change_in_the_ledger_and_the_next_attempt_reverts_it(
    runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = runs.start()
    executor = runs.executor(name)
    broken_after(executor, "steps.hold", ValueError("boom"))
    driver = driver_for("scale")

    async def refuse(*_: Any) -> None:
        raise KeyError("spec")

    monkeypatch.setattr(driver, "revert", refuse)
    with pytest.raises(RetryLater, match="could not revert 1 change"):
        await executor.execute()
    status = runs.chaos.status(name)
    assert status["phase"] == "Running", "never claimed reverted"
    assert status["ending"] == {"phase": "Error", "reason": "InternalError", "message": status["ending"]["message"]}
    assert status["ending"]["message"].startswith("spec.steps[0] (shrink): unexpected ValueError: boom")
    assert [i["state"] for i in status["injections"]] == ["Applied"]
    assert runs.replicas() == 1
    monkeypatch.undo()
    await runs.executor(name).execute()  # the retry finishes the end (it does not resume the run): revert works
    status = runs.chaos.status(name)
    assert status["phase"] == "Error", status
    assert "ending" not in status
    assert status["reason"] == "InternalError"
    assert runs.replicas() == REPLICAS


async def test_abort_ends_a_run_stuck_in_a_transient_retry_loop(runs: Runs) -> None:
    name = runs.start()
    executor = runs.executor(name)
    broken_after(executor, "steps.hold", ApiError(503, "ServiceUnavailable", "the API server is away"))
    with pytest.raises(RetryLater):
        await executor.execute()
    assert runs.replicas() == 1, "a transient failure leaves the fault for the retry"
    retry = runs.executor(name)
    broken_after(retry, "steps.hold", ApiError(503, "ServiceUnavailable", "still away"))
    with pytest.raises(RetryLater):
        await retry.execute()
    runs.patch(name, {"spec": {"abort": True}})
    await runs.executor(name).execute()  # the next attempt: abort comes before the failing sub-step
    status = runs.chaos.status(name)
    assert status["phase"] == "Cancelled", status
    assert runs.replicas() == REPLICAS


async def test_the_timeout_ends_a_run_stuck_in_a_transient_retry_loop(runs: Runs) -> None:
    name = runs.start(timeout="2s")
    executor = runs.executor(name)
    broken_after(executor, "steps.apply", ApiError(500, "InternalError", "etcd is slow"))
    with pytest.raises(RetryLater):
        await executor.execute()
    await asyncio.sleep(2.1)
    retry = runs.executor(name)
    broken_after(retry, "steps.apply", ApiError(500, "InternalError", "etcd is slow"))
    await retry.execute()
    status = runs.chaos.status(name)
    assert status["phase"] == "TimedOut", status
    assert runs.replicas() == REPLICAS
