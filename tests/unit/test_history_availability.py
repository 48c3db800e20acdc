"""One view of a history outage for every writer: one log line when it starts and one when it ends, a prober
with backoff instead of a retry per waiting run, and an explanation for /readyz."""

from __future__ import annotations

import asyncio
import logging

import pytest

from coordinator.domain.timestamps import parse_iso
from coordinator.history import availability
from coordinator.history.availability import HistoryAvailability
from coordinator.history.mirror import skip_requested, waited_out

# The prober's backoff and the tests' waits pass in the event loop's fake time (looptime).
pytestmark = pytest.mark.looptime


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(availability, "TRANSIENT_BACKOFF", (0.02, 0.05))
    monkeypatch.setattr(availability, "PERMANENT_BACKOFF", (0.05, 0.1))


async def test_many_waiting_writers_make_one_line_at_the_start_and_one_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    probes = 0
    back = False

    async def probe() -> None:
        nonlocal probes
        probes += 1
        if back:
            gate.succeeded()
        else:
            gate.failed("ConnectionRefusedError: [Errno 111]", permanent=False)

    gate = HistoryAvailability(probe, "postgresql://db")
    for _ in range(100):  # a hundred runs failing to write
        gate.failed("ConnectionRefusedError: [Errno 111]", permanent=False)
    waiters = [asyncio.create_task(gate.wait()) for _ in range(100)]
    await asyncio.sleep(0.3)
    assert not any(w.done() for w in waiters)
    assert "100 finished run(s) wait" in gate.explain()
    assert 2 <= probes <= 15, "one prober with backoff, not a retry per waiting run"
    back = True
    assert all(await asyncio.wait_for(asyncio.gather(*waiters), timeout=2))
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "unavailable" in m]) == 1, messages
    assert len([m for m in messages if "is back after" in m]) == 1, messages
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    await gate.close()


async def test_a_refusing_database_is_one_error_with_its_cause_and_is_asked_again_less_often(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probes = 0

    async def probe() -> None:
        nonlocal probes
        probes += 1
        gate.failed("InvalidPasswordError: password authentication failed", permanent=True)

    gate = HistoryAvailability(probe, "postgresql://db")
    gate.failed("InvalidPasswordError: password authentication failed", permanent=True)
    assert not await gate.wait(within=0.3)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "InvalidPasswordError" in errors[0]
    assert "COORDINATOR_DATABASE_URL" in errors[0]
    assert 1 <= probes <= 4, "asked again with the longer backoff"
    explained = gate.explain()
    assert "needs a person" in explained
    assert "InvalidPasswordError" in explained
    assert "next attempt in" in explained
    await gate.close()


async def test_an_outage_that_turns_out_permanent_is_reported_as_such_once(caplog: pytest.LogCaptureFixture) -> None:
    async def probe() -> None:
        return None

    gate = HistoryAvailability(probe, "postgresql://db")
    gate.failed("ConnectionRefusedError", permanent=False)
    gate.failed("InvalidPasswordError", permanent=True)
    gate.failed("InvalidPasswordError", permanent=True)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR]
    await gate.close()


async def test_an_available_database_costs_nothing() -> None:
    async def probe() -> None:
        raise AssertionError("never asked while it is up")

    gate = HistoryAvailability(probe, "postgresql://db")
    assert await gate.wait()
    assert gate.explain() == "available"
    await gate.close()


def test_a_deleted_run_waits_for_the_history_from_its_deletion_for_the_bound() -> None:
    meta = {"deletionTimestamp": "2026-12-06T08:00:00Z"}
    deleted = parse_iso("2026-12-06T08:00:00Z").timestamp()
    assert waited_out(meta, 900, now=deleted + 100) == 800
    assert waited_out(meta, 900, now=deleted + 901) < 0, "past the bound: it goes, whatever the database says"
    assert not skip_requested(meta)
    assert skip_requested({"annotations": {"chaos.coordinator.dev/skip-history": "true"}})
    assert not skip_requested({"annotations": {"chaos.coordinator.dev/skip-history": "no"}})
