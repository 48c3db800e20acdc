"""The run's correlation ID (its UID) on what it sends out: the traceparent and X-Correlation-ID headers of its
http probes (against a real server on loopback) and the annotation on its Events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from coordinator.adapters.kube import KubeClient
from coordinator.api.models import TargetRef
from coordinator.api.probes import Probe
from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, parse_cidrs
from coordinator.domain.tracing import trace_id, traceparent
from coordinator.engine.events import CORRELATION_ANNOTATION, event_metadata, involved_object, target_object
from coordinator.engine.probing import ProbeReach, ProbeSession
from coordinator.probes import http as http_probe
from support.http_target import RecordingServer, recording_server

UID = "0b6f1f8e-5c1a-4d1e-9a53-2f3c7f1b9e10"
TRACEPARENT = re.compile(r"00-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-01")


# --- traceparent (pure) ----------------------------------------------------------------------------------------


def test_the_trace_id_is_the_uids_hex_digits() -> None:
    assert trace_id(UID) == "0b6f1f8e5c1a4d1e9a532f3c7f1b9e10"
    assert trace_id(UID.upper()) == trace_id(UID)


def test_an_id_that_is_not_a_uuid_still_gives_a_valid_trace_id() -> None:
    for odd in ("run-uid-1", "00000000-0000-0000-0000-000000000000"):
        trace = trace_id(odd)
        assert re.fullmatch("[0-9a-f]{32}", trace), trace
        assert trace != "0" * 32, "all zeros is W3C's invalid trace ID"
    assert trace_id("run-uid-1") == trace_id("run-uid-1"), "stable: one run, one trace"


def test_traceparent_is_version_00_sampled_with_a_fresh_span_per_request() -> None:
    first, second = traceparent(UID), traceparent(UID)
    for value in (first, second):
        found = TRACEPARENT.fullmatch(value)
        assert found is not None, value
        assert found["trace"] == "0b6f1f8e5c1a4d1e9a532f3c7f1b9e10"
        assert found["span"] != "0" * 16
    assert first != second, "each request is its own span of the run's trace"
    assert traceparent(UID, "00f067aa0ba902b7") == "00-0b6f1f8e5c1a4d1e9a532f3c7f1b9e10-00f067aa0ba902b7-01"


def test_headers_the_probe_sets_win_case_insensitively() -> None:
    added = http_probe.request_headers({"Accept": "text/plain"}, UID)
    assert added["Accept"] == "text/plain"
    assert added["X-Correlation-ID"] == UID
    assert TRACEPARENT.fullmatch(added["traceparent"])
    own = {"TraceParent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-correlation-id": "mine"}
    assert http_probe.request_headers(own, UID) == own, "nothing added, nothing rewritten"
    assert http_probe.request_headers({"A": "b"}, None) == {"A": "b"}, "no run, no correlation headers"


# --- Events (pure) ---------------------------------------------------------------------------------------------


def test_events_on_a_run_carry_its_uid_and_events_on_targets_the_runs() -> None:
    run = {"apiVersion": "chaos.coordinator.dev/v1alpha1", "kind": "TestRun", "metadata": {"name": "r", "uid": UID}}
    meta = event_metadata(involved_object({**run, "metadata": {**run["metadata"], "namespace": "shop"}}), None)
    assert meta["annotations"] == {CORRELATION_ANNOTATION: UID}
    assert meta["name"].startswith("r.")
    assert meta["namespace"] == "shop"
    pod = involved_object(target_object(TargetRef(kind="Pod", namespace="shop", name="web-1", uid="pod-uid")))
    assert event_metadata(pod, UID)["annotations"] == {CORRELATION_ANNOTATION: UID}
    assert "annotations" not in event_metadata(pod, None), "an Event about no run names none (not the pod's UID)"
    scenario = {"kind": "ChaosScenario", "metadata": {"name": "s", "namespace": "shop", "uid": "s-uid"}}
    assert "annotations" not in event_metadata(involved_object(scenario), None)


# --- the headers a real server receives ------------------------------------------------------------------------


@pytest.fixture
async def recorder() -> AsyncIterator[RecordingServer]:
    async with recording_server() as found:
        yield found


def _session(probe: Probe, correlation_id: str | None) -> ProbeSession:
    reach = ProbeReach(frozenset(), parse_cidrs(DEFAULT_DENIED_CIDRS))
    return ProbeSession(cast(KubeClient, None), [probe], "shop", reach=reach, correlation_id=correlation_id)


def _probe(port: int, **http: Any) -> Probe:
    return Probe.model_validate(
        {"name": "api", "mode": "before", "type": "http", "http": {"url": f"http://127.0.0.1:{port}/", **http}}
    )


async def test_a_runs_http_probe_sends_its_correlation_headers(recorder: RecordingServer) -> None:
    session = _session(_probe(recorder.port, headers={"Accept": "application/json"}), UID)
    try:
        for _ in range(2):
            assert (await session.sample(session.probes[0])).ok
    finally:
        await session.close()
    spans = set()
    for received in recorder.headers:
        assert received["X-Correlation-ID"] == UID
        assert received["Accept"] == "application/json", "the probe's own headers go as they are"
        found = TRACEPARENT.fullmatch(received["traceparent"])
        assert found is not None, received["traceparent"]
        assert found["trace"] == UID.replace("-", "")
        spans.add(found["span"])
    assert len(spans) == 2, "a new span ID per request"


async def test_headers_the_user_set_reach_the_server_unchanged(recorder: RecordingServer) -> None:
    mine = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    session = _session(_probe(recorder.port, headers={"traceparent": mine, "X-Correlation-Id": "ticket-42"}), UID)
    try:
        assert (await session.sample(session.probes[0])).ok
    finally:
        await session.close()
    (received,) = recorder.headers
    assert received["traceparent"] == mine
    assert received["X-Correlation-ID"] == "ticket-42"
    lowered = [name.lower() for name in received]
    assert lowered.count("traceparent") == 1
    assert lowered.count("x-correlation-id") == 1
