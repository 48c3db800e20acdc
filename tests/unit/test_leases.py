"""Leader election: the pure lease rules, and LeaderElector against an in-memory Lease with compare-and-swap."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from coordinator.adapters.kube import ApiError
from coordinator.domain.leases import Decision, LeaseRecord, decide, next_spec, released_spec
from coordinator.engine.leadership import LeaderElector, lease_path
from support.fake_kube import FakeKube

NOW = "2025-01-01T00:00:00.000000Z"

# The elector's retry and renew periods, and the tests' waits, pass in the event loop's fake time (looptime): no
# test waits for real, and none depends on how busy the machine is.
pytestmark = pytest.mark.looptime


# --- the rules ---------------------------------------------------------------------------------------------------


def test_a_missing_or_released_lease_is_free() -> None:
    assert decide(None, "me", observed_at=0, now=0) == Decision.ACQUIRE
    released = LeaseRecord(holder=None, duration_seconds=15, renew_time=NOW)
    assert decide(released, "me", observed_at=100, now=100) == Decision.ACQUIRE


def test_the_holder_renews() -> None:
    mine = LeaseRecord(holder="me", duration_seconds=15, renew_time=NOW)
    assert decide(mine, "me", observed_at=0, now=1000) == Decision.RENEW


def test_someone_elses_lease_is_taken_only_after_its_duration_on_our_clock() -> None:
    theirs = LeaseRecord(holder="other", duration_seconds=15, renew_time=NOW)
    assert decide(theirs, "me", observed_at=100, now=100) == Decision.WAIT
    assert decide(theirs, "me", observed_at=100, now=114.9) == Decision.WAIT
    assert decide(theirs, "me", observed_at=100, now=115) == Decision.ACQUIRE


def test_record_reads_the_lease_spec() -> None:
    spec = {
        "holderIdentity": "pod-a",
        "leaseDurationSeconds": 15,
        "renewTime": NOW,
        "acquireTime": NOW,
        "leaseTransitions": 3,
    }
    assert LeaseRecord.from_spec(spec) == LeaseRecord("pod-a", 15.0, NOW, 3, NOW)
    assert LeaseRecord.from_spec({"holderIdentity": ""}).holder is None
    assert LeaseRecord.from_spec(None) == LeaseRecord(None, 0.0, None)


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    mine = LeaseRecord("me", 15, "earlier", transitions=2, acquire_time="first")
    spec = next_spec(mine, "me", 15, NOW)
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "first",
        "renewTime": NOW,
        "leaseTransitions": 2,
    }


def test_takeover_counts_a_transition() -> None:
    theirs = LeaseRecord("other", 15, "earlier", transitions=2, acquire_time="first")
    spec = next_spec(theirs, "me", 6.4, NOW)
    assert spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == NOW
    assert spec["leaseDurationSeconds"] == 6
    assert next_spec(None, "me", 0.2, NOW)["leaseDurationSeconds"] == 1, "never a zero-second lease"
    assert next_spec(None, "me", 15, NOW)["leaseTransitions"] == 0


def test_release_clears_the_holder_and_shortens_the_lease() -> None:
    mine = LeaseRecord("me", 15, "earlier", transitions=2, acquire_time="first")
    assert released_spec(mine, NOW) == {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": "first",
        "renewTime": NOW,
        "leaseTransitions": 2,
    }


# --- the elector ------------------------------------------------------------------------------------------------


LEASE = lease_path("ops", "lease")
DOWN = ApiError(503, "ServiceUnavailable", "the API server is down")


def holder(kube: FakeKube) -> str | None:
    obj = kube.objects.get(LEASE)
    return obj["spec"].get("holderIdentity") if obj else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _elector(leases: FakeKube, identity: str, clock: Clock, **kwargs: Any) -> LeaderElector:
    return LeaderElector(
        leases,  # type: ignore[arg-type]
        namespace="ops",
        name="lease",
        identity=identity,
        lease_duration=kwargs.pop("lease_duration", 15.0),
        renew_deadline=kwargs.pop("renew_deadline", 10.0),
        retry_period=kwargs.pop("retry_period", 2.0),
        clock=clock,
        **kwargs,
    )


async def test_first_candidate_creates_the_lease_the_second_waits() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    assert await a.try_acquire_or_renew() is True
    assert holder(leases) == "a"
    assert await b.try_acquire_or_renew() is False
    assert b.holder == "a"
    clock.now += 14
    assert await b.try_acquire_or_renew() is False, "b saw the record 14s ago: not expired yet"
    assert holder(leases) == "a"


async def test_a_lease_that_stops_being_renewed_is_taken_over() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    await a.try_acquire_or_renew()
    assert await b.try_acquire_or_renew() is False
    clock.now += 15
    assert await b.try_acquire_or_renew() is True
    spec = leases.objects[LEASE]["spec"]
    assert spec["holderIdentity"] == "b"
    assert spec["leaseTransitions"] == 1


async def test_renewals_keep_a_standby_waiting() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    await a.try_acquire_or_renew()
    for _ in range(10):
        clock.now += 5
        assert await a.try_acquire_or_renew() is True
        assert await b.try_acquire_or_renew() is False, "every renewal restarts b's expiry clock"


async def test_of_two_racing_takeovers_only_one_wins() -> None:
    leases, clock = FakeKube(), Clock()
    a, b, c = (_elector(leases, name, clock) for name in "abc")
    await a.try_acquire_or_renew()
    await b.try_acquire_or_renew()
    await c.try_acquire_or_renew()
    clock.now += 20
    # Both read the same expired record; the resourceVersion in the patch lets only the first write land.
    first, second = await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew())
    assert sorted([first, second]) == [False, True]
    assert holder(leases) in ("b", "c")


async def test_acquire_waits_for_the_lease_and_reports_leadership() -> None:
    leases, clock = FakeKube(), Clock()
    changes: list[bool] = []
    a = _elector(leases, "a", clock)
    b = _elector(leases, "b", clock, retry_period=0.01, renew_deadline=0.02, lease_duration=1, on_change=changes.append)
    await a.try_acquire_or_renew()
    stopping = asyncio.Event()
    waiting = asyncio.create_task(b.acquire(stopping))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    clock.now += 20  # a is gone
    assert await asyncio.wait_for(waiting, 2) is True
    assert b.leader
    assert changes == [True]


async def test_acquire_returns_false_when_stopped_while_standing_by() -> None:
    leases, clock = FakeKube(), Clock()
    await _elector(leases, "a", clock).try_acquire_or_renew()
    b = _elector(leases, "b", clock, retry_period=0.01, renew_deadline=0.02, lease_duration=1)
    stopping = asyncio.Event()
    waiting = asyncio.create_task(b.acquire(stopping))
    await asyncio.sleep(0.03)
    stopping.set()
    assert await asyncio.wait_for(waiting, 2) is False
    assert not b.leader


async def test_acquire_survives_api_errors() -> None:
    leases, clock = FakeKube(), Clock()
    b = _elector(leases, "b", clock, retry_period=0.01, renew_deadline=0.02, lease_duration=1)
    leases.fail(DOWN, times=None)
    waiting = asyncio.create_task(b.acquire(asyncio.Event()))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    leases.recover()
    assert await asyncio.wait_for(waiting, 2) is True


async def test_hold_gives_up_after_the_renew_deadline() -> None:
    leases = FakeKube()
    changes: list[bool] = []
    a = LeaderElector(
        leases,  # type: ignore[arg-type]
        "ops",
        "lease",
        "a",
        lease_duration=0.5,
        renew_deadline=0.2,
        retry_period=0.02,
        clock=asyncio.get_running_loop().time,
        on_change=changes.append,
    )
    assert await a.acquire(asyncio.Event())
    holding = asyncio.create_task(a.hold())
    await asyncio.sleep(0.1)
    assert not holding.done(), "renewals succeed: still leading"
    leases.fail(DOWN, times=None)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(holding, 2)
    assert 0.1 <= loop.time() - started < 0.5, "gave up at the renew deadline, before the lease expired"
    assert not a.leader
    assert changes == [True, False]


async def test_hold_gives_up_at_once_when_someone_else_holds_the_lease() -> None:
    leases, clock = FakeKube(), Clock()
    a = _elector(leases, "a", clock, retry_period=0.01, renew_deadline=0.5, lease_duration=1)
    assert await a.acquire(asyncio.Event())
    # Somebody overwrote the lease (e.g. we were paused for longer than the lease lasts).
    obj = leases.objects[LEASE]
    obj["spec"]["holderIdentity"] = "intruder"
    await asyncio.wait_for(a.hold(), 2)
    assert not a.leader
    assert a.holder == "intruder"


async def test_release_hands_the_lease_back_at_once() -> None:
    leases, clock = FakeKube(), Clock()
    a, b = _elector(leases, "a", clock), _elector(leases, "b", clock)
    assert await a.acquire(asyncio.Event())
    assert await b.try_acquire_or_renew() is False
    await a.release()
    assert not a.leader
    assert holder(leases) is None
    assert await b.try_acquire_or_renew() is True, "no waiting for the old lease to expire"


async def test_release_leaves_a_lease_someone_else_took() -> None:
    leases, clock = FakeKube(), Clock()
    a = _elector(leases, "a", clock)
    assert await a.acquire(asyncio.Event())
    leases.objects[LEASE]["spec"]["holderIdentity"] = "b"
    await a.release()
    assert holder(leases) == "b"


def test_timings_must_leave_room_to_stop() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        _elector(FakeKube(), "a", Clock(), renew_deadline=15.0)
