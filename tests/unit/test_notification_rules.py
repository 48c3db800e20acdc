"""Notifications (issue 24, item 4): the models, the payloads, the backoff, the rights a urlFrom Secret needs, and
the delivery loop against a real HTTP receiver on 127.0.0.1 (only the waits between tries are not real)."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from coordinator.adapters.kube import resource_path
from coordinator.api.models import ChaosScenarioSpec, Phase, Requester, TestRunStatus
from coordinator.api.notifications import Notification, NotificationEvent, NotificationRecord, NotificationState
from coordinator.api.probes import AssertionResult
from coordinator.api.workflow import ChaosWorkflowSpec
from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, parse_cidrs
from coordinator.domain.notifications import (
    MAX_ATTEMPTS,
    PAYLOAD_VERSION,
    backoff_delays,
    event_of,
    json_payload,
    payload,
    pending_records,
    retryable,
)
from coordinator.domain.permissions import notification_needs, refusal_message, scenario_needs
from coordinator.domain.runs import RunInfo
from coordinator.engine.authorization import review
from coordinator.engine.notifications import CORRELATION_HEADER, EVENT_HEADER, Undeliverable, drain, post, specs_of
from coordinator.engine.run import RunHandle, RunMachine
from coordinator.engine.run.state import RunState
from coordinator.probes.reach import guarded_session
from coordinator.settings import Settings
from support.fake_kube import FakeKube, LiveBody

NS = "shop"
RUN = RunInfo(NS, "run-1", "uid-123", f"{NS}/checkout")
STEP = {"name": "s", "duration": "1s", "faults": [{"type": "pod-kill"}]}


def scenario(*notifications: dict[str, Any]) -> ChaosScenarioSpec:
    return ChaosScenarioSpec.model_validate(
        {"target": {"kind": "Pod", "names": ["web"]}, "steps": [STEP], "notifications": list(notifications)}
    )


def finished(phase: Phase = Phase.FAILED) -> TestRunStatus:
    return TestRunStatus(
        phase=phase,
        reason="AssertionFailed",
        message="assertion fast failed",
        scenario=f"{NS}/checkout",
        startedAt=datetime(2026, 12, 6, 20, 0, 0, tzinfo=UTC),
        completedAt=datetime(2026, 12, 6, 20, 0, 5, tzinfo=UTC),
        durationSeconds=5.0,
        duration="5s",
        resilienceScore=40,
        assertions=[
            AssertionResult(name="fast", type="recovery_time", expected="10", passed=False),
            AssertionResult(name="ok", type="probe_success_rate", expected="90", passed=True),
        ],
    )


# --- the models ---------------------------------------------------------------------------------------------


def test_a_webhook_wants_every_event_by_default_and_json() -> None:
    (hook,) = scenario({"name": "team", "url": "https://hooks.example.com/x"}).notifications
    assert hook.events == list(NotificationEvent)
    assert hook.format == "json"
    assert hook.timeout == 10


@pytest.mark.parametrize(
    "hook",
    [
        {"name": "both", "url": "https://a.example/x", "urlFrom": {"secretKeyRef": {"name": "s", "key": "url"}}},
        {"name": "neither"},
        {"name": "user-info", "url": "https://user:pw@a.example/x"},
        {"name": "ftp", "url": "ftp://a.example/x"},
        {"name": "no-events", "url": "https://a.example/x", "events": []},
        {"name": "odd-event", "url": "https://a.example/x", "events": ["timedout"]},
        {"name": "slow", "url": "https://a.example/x", "timeout": 120},
    ],
)
def test_invalid_webhooks_are_refused(hook: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        scenario(hook)


def test_webhook_names_are_unique_and_workflows_have_them_too() -> None:
    with pytest.raises(ValidationError, match="notification"):
        scenario({"name": "a", "url": "https://a.example/x"}, {"name": "a", "url": "https://b.example/x"})
    workflow = ChaosWorkflowSpec.model_validate(
        {
            "nodes": [{"name": "n", "scenarioRef": {"name": "s"}}],
            "notifications": [{"name": "a", "url": "https://a.example/x", "events": ["failed"]}],
        }
    )
    assert workflow.notifications[0].events == ["failed"]


def test_the_webhooks_are_read_from_the_runs_snapshot() -> None:
    spec = scenario({"name": "a", "url": "https://a.example/x", "format": "slack"})
    status = TestRunStatus(scenarioSnapshot=spec.model_dump_json(exclude_none=True))
    (hook,) = specs_of(status)
    assert (hook.name, hook.format) == ("a", "slack")
    assert specs_of(TestRunStatus()) == [], "a run that never started has no webhooks"


# --- events, records, backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (Phase.RUNNING, "started"),
        (Phase.PASSED, "passed"),
        (Phase.FAILED, "failed"),
        (Phase.ERROR, "error"),
        (Phase.TIMED_OUT, "error"),
        (Phase.CANCELLED, "cancelled"),
        (Phase.PENDING, None),
        (None, None),
    ],
)
def test_each_phase_is_one_event(phase: Phase | None, event: str | None) -> None:
    assert event_of(phase) == event


def test_pending_records_go_to_the_webhooks_that_want_the_event_once() -> None:
    hooks = [
        Notification(name="all", url="https://a.example/x"),
        Notification(name="failures", url="https://a.example/y", events=[NotificationEvent.FAILED]),
    ]
    first = pending_records(hooks, NotificationEvent.PASSED, [])
    assert [(r.name, r.event, r.state) for r in first] == [("all", "passed", "Pending")]
    failed = pending_records(hooks, NotificationEvent.FAILED, first)
    assert [r.name for r in failed] == ["all", "failures"]
    assert pending_records(hooks, NotificationEvent.FAILED, [*first, *failed]) == [], "a resumed run adds none twice"


def test_backoff_doubles_and_is_bounded() -> None:
    assert backoff_delays() == [2.0, 4.0, 8.0, 16.0]
    assert len(backoff_delays()) == MAX_ATTEMPTS - 1
    assert backoff_delays(8, first=5.0, cap=30.0) == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0, 30.0]
    assert backoff_delays(1) == []


@pytest.mark.parametrize(("status", "again"), [(500, True), (503, True), (429, True), (408, True), (404, False)])
def test_only_answers_that_may_change_are_retried(status: int, again: bool) -> None:
    assert retryable(status) is again


# --- payloads -------------------------------------------------------------------------------------------------


def test_the_json_payload_says_what_the_docs_say() -> None:
    body = json_payload(RUN, finished(), NotificationEvent.FAILED, workflow=False)
    assert body == {
        "version": PAYLOAD_VERSION,
        "event": "failed",
        "run": {"namespace": NS, "name": "run-1", "uid": "uid-123"},
        "correlationId": "uid-123",
        "scenario": f"{NS}/checkout",
        "workflow": None,
        "phase": "Failed",
        "reason": "AssertionFailed",
        "message": "assertion fast failed",
        "startedAt": "2026-12-06T20:00:00.000000Z",
        "completedAt": "2026-12-06T20:00:05.000000Z",
        "durationSeconds": 5.0,
        "verdict": {
            "resilienceScore": 40,
            "recoveryTimeSeconds": None,
            "assertions": {"total": 2, "passed": 1, "failed": ["fast"]},
            "probes": [],
        },
    }


def test_a_started_payload_has_no_verdict_and_a_workflow_is_named_as_one() -> None:
    status = TestRunStatus(phase=Phase.RUNNING, reason="Started", workflow=f"{NS}/flow")
    body = json_payload(RunInfo(NS, "run-2", "u2", f"{NS}/flow"), status, NotificationEvent.STARTED, workflow=True)
    assert (body["event"], body["verdict"], body["completedAt"]) == ("started", None, None)
    assert (body["scenario"], body["workflow"]) == (None, f"{NS}/flow")


def test_the_slack_payload_is_an_incoming_webhook_message() -> None:
    hook = Notification(name="chat", url="https://hooks.slack.com/services/T/B/x", format="slack")
    body = payload(hook, RUN, finished(), NotificationEvent.FAILED, workflow=False)
    assert set(body) == {"text", "blocks"}
    assert "run-1" in body["text"]
    assert "failed" in body["text"]
    assert [b["type"] for b in body["blocks"]] == ["section", "section", "context"]
    details = body["blocks"][1]["text"]
    assert details["type"] == "mrkdwn"
    assert "Resilience score: 40" in details["text"]
    assert "Failed assertions: fast" in details["text"]
    assert "uid-123" in body["blocks"][2]["elements"][0]["text"]


# --- the rights a urlFrom needs -------------------------------------------------------------------------------


def test_a_url_from_a_secret_needs_get_on_that_secret() -> None:
    spec = scenario(
        {"name": "plain", "url": "https://a.example/x"},
        {"name": "hidden", "urlFrom": {"secretKeyRef": {"name": "hooks", "key": "slack"}}},
    )
    (need,) = [n for n in scenario_needs(spec, NS) if n.resource == "secrets"]
    assert need.access == ("get", "", "secrets", "", NS, "hooks")
    assert need.needed_by == "spec.notifications[1].urlFrom"
    asked = review(RUN_REQUESTER, need.access)["spec"]["resourceAttributes"]
    assert asked == {"verb": "get", "group": "", "resource": "secrets", "namespace": NS, "name": "hooks"}
    assert refusal_message("alice", need.access, [need.needed_by]) == (
        'alice cannot get resource "secrets" named "hooks" in the namespace "shop" '
        "(needed by spec.notifications[1].urlFrom)"
    )
    assert notification_needs(spec.notifications[:1], NS) == []


# --- delivery against a real receiver --------------------------------------------------------------------------


class Receiver:
    """Answers each POST with the next status of ``answers`` (the last one repeats) and records it."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.bodies: list[Any] = []
        self.headers: list[dict[str, str]] = []
        self.port = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        status = self.answers[min(len(self.bodies), len(self.answers)) - 1]
        return web.json_response({}, status=status)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextlib.asynccontextmanager
async def receiver(answers: list[int]) -> AsyncIterator[Receiver]:
    found = Receiver(answers)
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    found.port = runner.addresses[0][1]
    try:
        yield found
    finally:
        await runner.cleanup()


RUN_REQUESTER = Requester(username="alice")
DENIED = parse_cidrs(DEFAULT_DENIED_CIDRS)


async def deliver(url: str) -> tuple[int, str, list[float]]:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    session = guarded_session(DENIED)
    try:
        attempts, error = await post(session, url, {"event": "failed"}, 2, DENIED, "uid-123", "failed", sleep)
    finally:
        await session.close()
    return attempts, error, waited


async def test_two_server_errors_then_success_is_three_tries() -> None:
    async with receiver([500, 500, 200]) as found:
        attempts, error, waited = await deliver(found.url)
        assert (attempts, error, waited) == (3, "", [2.0, 4.0])
        assert found.bodies == [{"event": "failed"}] * 3
        assert {h[CORRELATION_HEADER] for h in found.headers} == {"uid-123"}
        assert {h[EVENT_HEADER] for h in found.headers} == {"failed"}


async def test_a_receiver_that_always_fails_gets_every_try_then_gives_up() -> None:
    async with receiver([503]) as found:
        attempts, error, waited = await deliver(found.url)
        assert (attempts, waited) == (MAX_ATTEMPTS, backoff_delays())
        assert error.startswith("HTTP 503")
        assert len(found.bodies) == MAX_ATTEMPTS


async def test_a_client_error_is_not_retried() -> None:
    async with receiver([404]) as found:
        attempts, error, _ = await deliver(found.url)
        assert (attempts, len(found.bodies)) == (1, 1)
        assert error.startswith("HTTP 404")


async def test_a_receiver_that_is_down_fails_after_every_try() -> None:
    async with receiver([200]) as found:
        url = found.url
    attempts, error, _ = await deliver(url)  # the server is gone: connection refused
    assert attempts == MAX_ATTEMPTS
    assert "ClientConnectorError" in error


async def test_a_denied_address_is_never_called() -> None:
    with pytest.raises(Undeliverable, match=r"169\.254\.0\.0/16"):
        await deliver("http://169.254.169.254/latest/meta-data/")
    assert ipaddress.ip_address("169.254.169.254") in DENIED[0]


def test_records_say_delivered_or_failed() -> None:
    record = NotificationRecord(name="a", event=NotificationEvent.FAILED, state=NotificationState.DELIVERED, attempts=3)
    assert record.model_dump(mode="json", exclude_none=True) == {
        "name": "a",
        "event": "failed",
        "state": "Delivered",
        "attempts": 3,
    }


# --- the run machine: Pending with the event's write, delivered after it, re-sent after a crash ------------------

RUN_PATH = resource_path("TestRun", NS, "run")


def fake_world(url: str) -> FakeKube:
    kube = FakeKube()
    kube.add(
        resource_path("Namespace", name=NS),
        {"metadata": {"name": NS, "labels": {"chaos.coordinator.dev/allow": "true"}}},
    )
    missing = {"name": "db", "type": "k8s", "mode": "before", "k8s": {"kind": "Deployment", "name": "db"}}
    spec = {
        "target": {"kind": "Deployment", "names": ["web"]},
        "steps": [{"name": "s", "duration": "1s", "faults": [{"type": "scale", "scale": {"replicas": 0}}]}],
        "steadyState": {"probes": [missing]},
        "notifications": [{"name": "team", "url": url, "events": ["failed"]}],
    }
    kube.add(resource_path("ChaosScenario", NS, "scn"), {"metadata": {"name": "scn", "namespace": NS}, "spec": spec})
    kube.add(
        RUN_PATH,
        {"metadata": {"name": "run", "namespace": NS, "uid": "run-uid"}, "spec": {"scenarioRef": {"name": "scn"}}},
    )
    return kube


async def execute(kube: FakeKube) -> None:
    settings = Settings(poll_interval=1, recovery_interval=1)
    machine = RunMachine(kube, settings, RunHandle(body=LiveBody(kube, RUN_PATH), stopped=lambda: False))
    await machine.execute()


async def test_the_verdict_is_written_with_a_pending_record_then_delivered_and_resent_after_a_crash() -> None:
    async with receiver([200]) as found:
        kube = fake_world(found.url)
        await execute(kube)
        finals = [
            s
            for s in kube.written("MODIFIED", resource_path("TestRun", NS))
            if (s.get("status") or {}).get("phase") == "Failed"
        ]
        assert finals[0]["status"]["notifications"] == [
            {"name": "team", "event": "failed", "state": "Pending", "attempts": 0}
        ]
        await drain()
        (record,) = kube.stored(RUN_PATH)["status"]["notifications"]
        assert (record["state"], record["attempts"]) == ("Delivered", 1)
        assert [b["event"] for b in found.bodies] == ["failed"]
        assert kube.stored(RUN_PATH)["status"]["reason"] == "BaselineFailed"

        # The operator died after the verdict's write, before the delivery: the next one delivers it.
        kube.objects[RUN_PATH]["status"] = finals[0]["status"]
        await execute(kube)
        (record,) = kube.stored(RUN_PATH)["status"]["notifications"]
        assert (record["state"], record["attempts"]) == ("Delivered", 1)
        assert len(found.bodies) == 2, "at least once: the receiver sees the event again"
        await execute(kube)
        assert len(found.bodies) == 2, "a delivered record is not sent again"


async def test_a_record_write_of_an_older_machine_loses_no_other_record() -> None:
    kube = fake_world("http://127.0.0.1:9/hook")
    pending = {"state": "Pending", "attempts": 0}
    kube.objects[RUN_PATH]["status"] = {
        "phase": "Failed",
        "notifications": [
            {"name": "team", "event": "started", **pending},
            {"name": "team", "event": "failed", **pending},
            {"name": "chat", "event": "failed", "state": "Delivered", "attempts": 1},
        ],
    }
    # The machine that started the run still holds its own view: started delivered, the rest unknown or older.
    stale = RunState(kube, Settings(), RunHandle(body=LiveBody(kube, RUN_PATH), stopped=lambda: False))
    stale.status.notifications = [
        NotificationRecord(name="team", event=NotificationEvent.STARTED, state=NotificationState.DELIVERED, attempts=2),
        NotificationRecord(name="chat", event=NotificationEvent.FAILED, state=NotificationState.PENDING),
    ]
    await stale.record_notifications()
    stored = {
        (r["name"], r["event"]): (r["state"], r["attempts"]) for r in kube.stored(RUN_PATH)["status"]["notifications"]
    }
    assert stored == {
        ("team", "started"): ("Delivered", 2),
        ("team", "failed"): ("Pending", 0),
        ("chat", "failed"): ("Delivered", 1),
    }
    assert kube.stored(RUN_PATH)["status"]["phase"] == "Failed", "the write moves nothing"
