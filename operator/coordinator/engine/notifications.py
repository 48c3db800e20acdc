"""Delivering a run's notifications: the webhooks of its scenario's (or workflow's) ``spec.notifications``.

When a run is written Running, and when it is written in a terminal phase, each webhook that wants that event gets a
``Pending`` record in ``status.notifications``, written with that same status write (``queue``). After the write,
a background task POSTs the payload (``send``), with up to ``MAX_ATTEMPTS`` tries and a doubling wait between them,
and records the outcome (Delivered or Failed, the tries, the last error) in a small write of
``status.notifications`` alone (``RunState.record_notifications``, which never moves the run; engine/run/stages.py).
The verdict is written before any delivery starts, so a receiver that is slow, down or wrong never delays or
changes it.

A crash between the event's write and the delivery leaves the record Pending: the operator that picks the run up
again delivers it (``resume``; the TestRun daemon runs for a finished run while a record is Pending). Delivery is
therefore at least once: a receiver can see an event twice (the same ``correlationId`` and ``event``), never
zero times while the TestRun exists.

The URL is called through the probes' guarded session (probes/reach.py): never an address in
COORDINATOR_PROBE_DENY_CIDRS, no proxy from the environment, no redirects. A ``urlFrom`` Secret is read with the
operator's rights when the delivery starts; the requester's right to get it was checked when the run started.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from pydantic import ValidationError
from yarl import URL

from coordinator.adapters.kube import ApiError, resource_path
from coordinator.api.models import TestRunStatus
from coordinator.api.notifications import Notification, NotificationEvent, NotificationRecord, NotificationState
from coordinator.api.probes import URL_MESSAGE, URL_PATTERN
from coordinator.domain.addresses import IPNetwork, denied_by
from coordinator.domain.notifications import (
    MAX_ERROR_TEXT,
    backoff_delays,
    event_of,
    payload,
    pending_records,
    retryable,
)
from coordinator.engine import observers
from coordinator.engine.run.state import RunState
from coordinator.probes.reach import AddressDenied, guarded_session

log = logging.getLogger(__name__)

CORRELATION_HEADER = "X-Correlation-ID"
EVENT_HEADER = "X-Coordinator-Event"
_URL = re.compile(URL_PATTERN)

# Deliveries in flight, kept referenced until they end (asyncio holds tasks weakly).
_IN_FLIGHT: set[asyncio.Task[None]] = set()
Sleep = Callable[[float], Awaitable[None]]


class Undeliverable(Exception):
    """A delivery that no retry can help: a denied address, a URL that cannot be read or is not one."""


def specs_of(status: TestRunStatus) -> list[Notification]:
    """The webhooks of the scenario or workflow the run executes, from its snapshot (empty before it started)."""
    raw = status.workflowSnapshot or status.scenarioSnapshot
    if not raw:
        return []
    try:
        return [Notification.model_validate(item) for item in json.loads(raw).get("notifications") or []]
    except (ValueError, ValidationError, AttributeError):
        return []


def queue(state: RunState) -> NotificationEvent | None:
    """Add a Pending record for each webhook that wants the event of the run's phase (to go out with the next
    status write); returns that event when any webhook wants it."""
    status = state.status
    event = event_of(status.phase)
    if event is None:
        return None
    added = pending_records(specs_of(status), event, status.notifications)
    status.notifications = [*status.notifications, *added]
    return event if added else None


def send(state: RunState, event: NotificationEvent | None) -> None:
    """Deliver ``event``'s Pending records in the background (after the status write that recorded them)."""
    if event is None:
        return
    task = asyncio.create_task(deliver_pending(state, event), name=f"notify {state.run.ref} {event}")
    _IN_FLIGHT.add(task)
    task.add_done_callback(_IN_FLIGHT.discard)


async def resume(state: RunState) -> None:
    """Deliver every record still Pending (left by a crash before its delivery), in the foreground."""
    if any(r.state == NotificationState.PENDING for r in state.status.notifications):
        await deliver_pending(state, None)


async def drain() -> None:
    """Wait for every delivery in flight (tests; at shutdown they are cancelled, and their records stay Pending
    for the next operator to deliver)."""
    while _IN_FLIGHT:
        await asyncio.gather(*list(_IN_FLIGHT), return_exceptions=True)


async def deliver_pending(state: RunState, event: NotificationEvent | None, sleep: Sleep = asyncio.sleep) -> None:
    """Deliver the Pending records of ``event`` (every Pending record when None), each webhook concurrently."""
    status = state.status
    specs = {n.name: n for n in specs_of(status)}
    todo = [
        r
        for r in status.notifications
        if r.state == NotificationState.PENDING and (event is None or r.event == event) and r.name in specs
    ]
    if not todo:
        return
    session = guarded_session(state.settings.probe_deny_cidrs)
    try:
        await asyncio.gather(*(_deliver(state, session, specs[r.name], r, sleep) for r in todo))
    finally:
        await session.close()


async def _deliver(
    state: RunState,
    session: aiohttp.ClientSession,
    spec: Notification,
    record: NotificationRecord,
    sleep: Sleep,
) -> None:
    workflow = state.status.workflow is not None
    body = payload(spec, state.info, state.status, NotificationEvent(record.event), workflow)
    try:
        url = await url_of(state, spec)
        record.attempts, error = await post(
            session, url, body, spec.timeout, state.settings.probe_deny_cidrs, state.run.uid, str(record.event), sleep
        )
    except Undeliverable as exc:
        error = str(exc)  # nothing was sent
    record.state = NotificationState.FAILED if error else NotificationState.DELIVERED
    record.lastError = error[:MAX_ERROR_TEXT] if error else None
    record.at = state.clock.now()
    if error:
        log.warning("TestRun %s: notification %s (%s) not delivered: %s", state.run.ref, spec.name, record.event, error)
    observers.notify("notification_sent", state.info, record)
    try:
        await state.record_notifications()
    except ApiError as exc:
        # The delivery happened (or failed) either way; only its record is missing, and a resumed run sends again.
        log.warning("TestRun %s: notification %s not recorded: %s", state.run.ref, spec.name, exc)


async def url_of(state: RunState, spec: Notification) -> str:
    """The webhook's URL: ``url``, or the key of its Secret read with the operator's rights."""
    if spec.url is not None:
        return spec.url
    assert spec.urlFrom is not None  # the model requires exactly one
    ref = spec.urlFrom.secretKeyRef
    namespace = state.scenario_namespace
    where = f"notification {spec.name}: urlFrom.secretKeyRef"
    try:
        secret = await state.client.get(resource_path("Secret", namespace, ref.name))
    except ApiError as exc:
        if exc.not_found:
            raise Undeliverable(f"{where}: Secret {namespace}/{ref.name} not found") from None
        raise Undeliverable(f"{where}: Secret {namespace}/{ref.name} cannot be read: {exc}") from None
    encoded = (secret.get("data") or {}).get(ref.key)
    if encoded is None:
        raise Undeliverable(f"{where}: Secret {namespace}/{ref.name} has no key {ref.key}")
    try:
        url = base64.b64decode(encoded, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        raise Undeliverable(f"{where}: the key {ref.key} is not text") from None
    if _URL.fullmatch(url) is None:
        # The value is a secret: never repeated in the status.
        raise Undeliverable(f"{where}: the value of {ref.key} is {URL_MESSAGE}")
    return url


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    limit_seconds: float,
    denied: Sequence[IPNetwork],
    correlation_id: str,
    event: str,
    sleep: Sleep = asyncio.sleep,
) -> tuple[int, str]:
    """POST ``body`` to ``url`` until it is accepted (2xx) or ``MAX_ATTEMPTS`` tries failed; returns the tries
    made and the last error ("" when delivered). A denied address is not tried at all (Undeliverable)."""
    host = (URL(url).raw_host or "").strip("[]")
    network = denied_by(host, denied)
    if network is not None:
        raise Undeliverable(str(AddressDenied(host, host, network)))
    headers = {CORRELATION_HEADER: correlation_id, EVENT_HEADER: event}
    delays = backoff_delays()
    error = ""
    for attempt in range(1, len(delays) + 2):
        try:
            async with session.post(
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit_seconds),
                allow_redirects=False,
            ) as response:
                if 200 <= response.status < 300:
                    return attempt, ""
                error = f"HTTP {response.status} {response.reason or ''}".strip()
                if not retryable(response.status):
                    return attempt, error
        except AddressDenied as exc:
            raise Undeliverable(str(exc)) from None
        except TimeoutError:
            error = f"no answer within {limit_seconds:g}s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt <= len(delays):
            await sleep(delays[attempt - 1])
    return len(delays) + 1, error
