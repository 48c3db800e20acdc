"""Notifications: HTTP webhooks the operator calls when a run of a ChaosScenario or ChaosWorkflow starts or ends.

Each webhook names its URL (or a Secret key holding it), the run events it wants and the payload's format: the
documented JSON (docs/notifications.md) or a Slack-compatible message. Delivery is retried with backoff and recorded
in the run's ``status.notifications``; it never changes the run's verdict (engine/notifications.py).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, field_validator

from coordinator.api.base import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN, Model, Timestamp, unique_names
from coordinator.api.probes import ProbeUrl

MAX_NOTIFICATIONS = 8
MAX_TIMEOUT_SECONDS = 30


class NotificationEvent(StrEnum):
    STARTED = "started"
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # Error and TimedOut: the experiment did not run its course
    CANCELLED = "cancelled"


class NotificationFormat(StrEnum):
    JSON = "json"
    SLACK = "slack"


class NotificationState(StrEnum):
    PENDING = "Pending"  # recorded with the status write of its event, not delivered yet
    DELIVERED = "Delivered"
    FAILED = "Failed"  # every try failed, or the address is denied, or the URL could not be read


class SecretKeyRef(Model):
    name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="The Secret, in the scenario's namespace."
    )
    key: str = Field(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253, description="The key holding the URL.")


class UrlSource(Model):
    """Where the URL is read from when it holds a token (a Slack incoming webhook's URL is a secret)."""

    secretKeyRef: SecretKeyRef = Field(
        description="A key of a Secret in the scenario's (or workflow's) namespace. The operator reads it with its "
        "own rights when it delivers; whoever runs the scenario must be allowed to get that Secret."
    )


class Notification(Model):
    """One HTTP webhook: a POST of the run's outcome to ``url`` on each of ``events``."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The webhook's name, unique.")
    url: ProbeUrl | None = Field(
        default=None,
        description="The http(s) URL to POST to. Addresses in the operator's COORDINATOR_PROBE_DENY_CIDRS "
        "(link-local, cloud metadata) are never called.",
    )
    urlFrom: UrlSource | None = Field(default=None, description="Read the URL from a Secret instead.")
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(NotificationEvent),
        min_length=1,
        max_length=len(NotificationEvent),
        description="The run events to post: started, passed, failed, error (Error and TimedOut) and cancelled; "
        "all of them when omitted.",
    )
    format: NotificationFormat = Field(
        default=NotificationFormat.JSON,
        description="json (the documented payload, docs/notifications.md) or slack (an incoming-webhook message "
        "with text and blocks).",
    )
    timeout: Annotated[int, Field(ge=1, le=MAX_TIMEOUT_SECONDS)] = Field(
        default=10, description="Seconds each try may take."
    )

    cel_rules = (("has(self.url) != has(self.urlFrom)", "exactly one of url and urlFrom is required"),)

    @field_validator("events")
    @classmethod
    def _distinct_events(cls, events: list[NotificationEvent]) -> list[NotificationEvent]:
        return list(dict.fromkeys(events))


class Notifications(Model):
    """The ``notifications`` field shared by ChaosScenario and ChaosWorkflow."""

    notifications: list[Notification] = Field(
        default_factory=list,
        max_length=MAX_NOTIFICATIONS,
        description="HTTP webhooks called when a run starts and ends (see Notification). A delivery that fails "
        "is retried with backoff and recorded in the TestRun's status.notifications; it never changes the run.",
    )

    @field_validator("notifications")
    @classmethod
    def _unique_notifications(cls, notifications: list[Notification]) -> list[Notification]:
        for notification in notifications:
            if (notification.url is None) == (notification.urlFrom is None):
                raise ValueError(f"notification {notification.name}: exactly one of url and urlFrom is required")
        return unique_names(notifications, "notification")


class NotificationRecord(Model):
    """One delivery of one run event to one webhook."""

    name: str = Field(description="The webhook's name.")
    event: NotificationEvent = Field(description="The run event delivered.")
    state: NotificationState = Field(description="Pending, Delivered or Failed.")
    attempts: int = Field(default=0, description="How many tries were made.")
    lastError: str | None = Field(default=None, description="Why the last try failed, if it did.")
    at: Timestamp | None = Field(default=None, description="When it was delivered, or when the last try failed.")
