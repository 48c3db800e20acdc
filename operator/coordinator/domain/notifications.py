"""What a notification says and when it is tried again (pure): the payloads, the run event of a phase, the backoff.

The JSON payload is documented in docs/notifications.md (``PAYLOAD_VERSION``); a change to its shape that a
receiver could notice bumps the version. The Slack payload is an incoming-webhook message: ``text`` (the fallback
shown in notifications) and ``blocks``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from coordinator.api.base import format_timestamp
from coordinator.api.models import Phase, TestRunStatus
from coordinator.api.notifications import (
    Notification,
    NotificationEvent,
    NotificationFormat,
    NotificationRecord,
    NotificationState,
)
from coordinator.domain.runs import RunInfo

PAYLOAD_VERSION = "v1"
# Tries of one delivery, and the waits between them: 2 s, 4 s, 8 s, 16 s (about a minute with the tries' own
# timeouts). A receiver away for longer misses the event, and the status says so.
MAX_ATTEMPTS = 5
FIRST_DELAY = 2.0
MAX_DELAY = 30.0
MAX_ERROR_TEXT = 300

_EVENT_OF_PHASE = {
    Phase.RUNNING: NotificationEvent.STARTED,
    Phase.PASSED: NotificationEvent.PASSED,
    Phase.FAILED: NotificationEvent.FAILED,
    Phase.ERROR: NotificationEvent.ERROR,
    Phase.TIMED_OUT: NotificationEvent.ERROR,
    Phase.CANCELLED: NotificationEvent.CANCELLED,
}


def event_of(phase: Phase | str | None) -> NotificationEvent | None:
    """The run event a phase is (TimedOut is an ``error``: the experiment did not run its course), or None."""
    return _EVENT_OF_PHASE.get(Phase(phase)) if phase else None


def backoff_delays(attempts: int = MAX_ATTEMPTS, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> list[float]:
    """The waits before the 2nd, 3rd, ... try: doubling from ``first``, each at most ``cap``."""
    return [min(first * 2**i, cap) for i in range(max(attempts - 1, 0))]


def retryable(status: int) -> bool:
    """Whether an HTTP answer is worth another try: a server error, a timeout or too many requests. Any other
    4xx says the request itself is wrong, and it would be wrong again."""
    return status >= 500 or status in (408, 429)


def pending_records(
    notifications: Sequence[Notification], event: NotificationEvent, recorded: Sequence[NotificationRecord]
) -> list[NotificationRecord]:
    """A Pending record for each webhook that wants ``event`` and has none for it yet (a resumed run adds none
    twice)."""
    have = {(r.name, r.event) for r in recorded}
    return [
        NotificationRecord(name=n.name, event=event, state=NotificationState.PENDING)
        for n in notifications
        if event in n.events and (n.name, event) not in have
    ]


def _verdict(status: TestRunStatus) -> dict[str, Any]:
    assertions = status.assertions
    return {
        "resilienceScore": status.resilienceScore,
        "recoveryTimeSeconds": status.recoveryTimeSeconds,
        "assertions": {
            "total": len(assertions),
            "passed": sum(1 for a in assertions if a.passed),
            "failed": [a.name for a in assertions if not a.passed],
        },
        "probes": [{"name": p.name, "successPercent": p.successPercent} for p in status.probes],
    }


def _time(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment else None


def json_payload(run: RunInfo, status: TestRunStatus, event: NotificationEvent, workflow: bool) -> dict[str, Any]:
    """The documented JSON payload of ``event`` for the run ``run`` as ``status`` records it."""
    return {
        "version": PAYLOAD_VERSION,
        "event": str(event),
        "run": {"namespace": run.namespace, "name": run.name, "uid": run.uid},
        "correlationId": run.uid,
        "scenario": None if workflow else run.scenario,
        "workflow": run.scenario if workflow else None,
        "phase": str(status.phase) if status.phase else None,
        "reason": status.reason,
        "message": status.message,
        "startedAt": _time(status.startedAt),
        "completedAt": _time(status.completedAt),
        "durationSeconds": status.durationSeconds,
        "verdict": _verdict(status) if event != NotificationEvent.STARTED else None,
    }


_ICONS = {
    NotificationEvent.STARTED: ":arrow_forward:",
    NotificationEvent.PASSED: ":white_check_mark:",
    NotificationEvent.FAILED: ":x:",
    NotificationEvent.ERROR: ":warning:",
    NotificationEvent.CANCELLED: ":no_entry_sign:",
}


def slack_payload(run: RunInfo, status: TestRunStatus, event: NotificationEvent, workflow: bool) -> dict[str, Any]:
    """A Slack incoming-webhook message for ``event``: ``text`` for the notification, ``blocks`` for the channel."""
    kind = "workflow" if workflow else "scenario"
    title = f"{_ICONS[event]} TestRun {run.namespace}/{run.name} {event} ({kind} {run.scenario})"
    lines = [f"*{status.phase}*" + (f" ({status.reason})" if status.reason else "")]
    if status.message:
        lines.append(status.message)
    if event != NotificationEvent.STARTED:
        if status.resilienceScore is not None:
            lines.append(f"Resilience score: {status.resilienceScore}")
        failed = [a.name for a in status.assertions if not a.passed]
        if failed:
            lines.append(f"Failed assertions: {', '.join(failed)}")
        if status.duration:
            lines.append(f"Duration: {status.duration}")
    return {
        "text": title,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"correlation ID {run.uid}"}]},
        ],
    }


def payload(
    notification: Notification, run: RunInfo, status: TestRunStatus, event: NotificationEvent, workflow: bool
) -> dict[str, Any]:
    """The body POSTed to ``notification`` for ``event``, in its format."""
    if notification.format == NotificationFormat.SLACK:
        return slack_payload(run, status, event, workflow)
    return json_payload(run, status, event, workflow)
