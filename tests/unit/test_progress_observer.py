"""Live progress (history/redis.py ProgressObserver): a run's updates coalesce while its write is in flight."""

from __future__ import annotations

import asyncio
from typing import Any

from coordinator.api.models import Injection, InjectionState, TargetRef
from coordinator.domain.runs import RunInfo
from coordinator.history.redis import LocalProgress, ProgressObserver

RUN = RunInfo(namespace="team", name="run-1", uid="uid-1", scenario="team/kill")
OTHER = RunInfo(namespace="team", name="run-2", uid="uid-2", scenario="team/kill")


class SlowProgress(LocalProgress):
    """A store whose writes take until the test lets them go, recording what each write carried."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.puts: list[tuple[str, dict[str, Any]]] = []

    async def put(self, uid: str, fields: dict[str, Any]) -> None:
        self.puts.append((uid, dict(fields)))
        await self.gate.wait()
        await super().put(uid, fields)


def injection(n: int) -> Injection:
    return Injection(
        id=f"0/0/pod-{n}",
        step=0,
        fault="pod-kill",
        target=TargetRef(kind="Pod", namespace="team", name=f"pod-{n}", uid=f"p{n}"),
        state=InjectionState.IRREVERSIBLE,
    )


async def test_a_burst_of_injections_costs_two_writes_and_keeps_the_latest() -> None:
    store = SlowProgress()
    observer = ProgressObserver(store)
    observer.run_started(RUN)
    await asyncio.sleep(0)  # the first write is now in flight, held at the gate
    for n in range(1000):
        observer.fault_injected(RUN, injection(n))
    store.gate.set()
    await observer.drain()
    assert observer.writes == 2
    assert store.puts[0][1]["phase"] == "Running"
    assert store.puts[1][1]["lastEvent"] == "injected pod-kill into pod-999"
    record = await store.get(RUN.uid)
    assert record is not None
    assert record["phase"] == "Running"  # fields of earlier writes are kept
    assert record["lastEvent"] == "injected pod-kill into pod-999"


async def test_runs_are_written_independently() -> None:
    store = SlowProgress()
    observer = ProgressObserver(store)
    observer.run_started(RUN)
    observer.run_started(OTHER)
    await asyncio.sleep(0)
    assert sorted(uid for uid, _ in store.puts) == ["uid-1", "uid-2"]  # neither waits for the other
    store.gate.set()
    await observer.drain()
    assert await store.get(RUN.uid) is not None
    assert await store.get(OTHER.uid) is not None


async def test_an_update_after_the_last_write_starts_a_new_one() -> None:
    store = SlowProgress()
    store.gate.set()
    observer = ProgressObserver(store)
    observer.run_started(RUN)
    await observer.drain()
    observer.fault_injected(RUN, injection(1))
    await observer.drain()
    assert observer.writes == 2
    record = await store.get(RUN.uid)
    assert record is not None
    assert record["lastEvent"] == "injected pod-kill into pod-1"


async def test_a_failing_store_does_not_stop_later_updates() -> None:
    class Down(LocalProgress):
        def __init__(self) -> None:
            super().__init__()
            self.fail = True

        async def put(self, uid: str, fields: dict[str, Any]) -> None:
            if self.fail:
                raise OSError("connection refused")
            await super().put(uid, fields)

    store = Down()
    observer = ProgressObserver(store)
    observer.run_started(RUN)
    await observer.drain()
    assert await store.get(RUN.uid) is None
    store.fail = False
    observer.fault_injected(RUN, injection(2))
    await observer.drain()
    record = await store.get(RUN.uid)
    assert record is not None
    assert record["lastEvent"] == "injected pod-kill into pod-2"
