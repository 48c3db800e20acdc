"""Shared GETs (adapters/sharedreads.py): callers share a read only when it was sent after they asked."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from coordinator.adapters.kube import ApiError, KubeApi
from coordinator.adapters.sharedreads import (
    SharedReads,
    shared_get,
    shared_get_or_none,
    shared_reads,
    shared_review,
)

pytestmark = pytest.mark.unit

PATH = "/apis/chaos.coordinator.dev/v1alpha1/namespaces/team/chaosscenarios/kill"


class GatedServer:
    """A client whose GETs each wait until the test lets them answer, with the value stored when they were sent
    (as an API server reads the object when the request arrives)."""

    def __init__(self) -> None:
        self.value = 1
        self.sent: list[int] = []  # the value each GET read, in the order they were sent
        self.gates: list[asyncio.Event] = []
        self.error: ApiError | None = None
        self.arrived = asyncio.Event()

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        read = self.value
        self.sent.append(read)
        gate = asyncio.Event()
        self.gates.append(gate)
        self.arrived.set()
        await gate.wait()
        if self.error is not None:
            raise self.error
        return {"spec": {"value": read, "path": path}}

    async def answer(self, index: int) -> None:
        """Let GET number ``index`` answer, once it has been sent (within a second)."""
        async with asyncio.timeout(1):
            while len(self.gates) <= index:
                self.arrived.clear()
                await self.arrived.wait()
        self.gates[index].set()


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def reads_of(server: GatedServer) -> SharedReads:
    return SharedReads(cast(KubeApi, server))


async def test_callers_asking_while_a_get_is_in_flight_share_the_next_one() -> None:
    server = GatedServer()
    reads = reads_of(server)
    first = asyncio.create_task(reads.get(PATH))
    await settle()
    assert server.sent == [1]
    later = [asyncio.create_task(reads.get(PATH)) for _ in range(50)]
    await settle()
    assert server.sent == [1], "a GET already in flight is not joined, and the next waits for it to end"
    await server.answer(0)
    await server.answer(1)
    assert (await first)["spec"]["value"] == 1
    assert {(await t)["spec"]["value"] for t in later} == {1}
    assert server.sent == [1, 1]
    assert reads.sent == 2


async def test_a_caller_never_gets_an_answer_read_before_it_asked() -> None:
    """The scenario is edited while a GET of it is in flight; a run asking after the edit sees the edit."""
    server = GatedServer()
    reads = reads_of(server)
    before = asyncio.create_task(reads.get(PATH))
    await settle()
    server.value = 2  # the edit, after the first GET was read
    after = asyncio.create_task(reads.get(PATH))
    await settle()
    await server.answer(0)
    assert (await before)["spec"]["value"] == 1
    await server.answer(1)
    assert (await after)["spec"]["value"] == 2
    assert server.sent == [1, 2]


async def test_a_path_has_one_get_in_flight_and_one_waiting() -> None:
    server = GatedServer()
    reads = reads_of(server)
    tasks = [asyncio.create_task(reads.get(PATH))]
    await settle()
    for round_ in range(1, 4):
        tasks += [asyncio.create_task(reads.get(PATH)) for _ in range(10)]
        await settle()
        assert len(server.sent) == round_
        await server.answer(round_ - 1)
        await settle()
    await server.answer(3)
    await asyncio.gather(*tasks)
    assert len(server.sent) == 4, "31 callers over 4 GETs"
    assert reads._reads == {}, "a read with nothing in flight is forgotten"


async def test_other_paths_are_not_shared() -> None:
    server = GatedServer()
    reads = reads_of(server)
    a = asyncio.create_task(reads.get(PATH))
    b = asyncio.create_task(reads.get(PATH + "-other"))
    await settle()
    assert len(server.sent) == 2
    await server.answer(0)
    await server.answer(1)
    assert (await a)["spec"]["path"] == PATH
    assert (await b)["spec"]["path"] == PATH + "-other"


async def test_every_caller_gets_its_own_copy() -> None:
    server = GatedServer()
    reads = reads_of(server)
    await settle()
    first = asyncio.create_task(reads.get(PATH))
    await settle()
    a, b = asyncio.create_task(reads.get(PATH)), asyncio.create_task(reads.get(PATH))
    await server.answer(0)
    await first
    await server.answer(1)
    one, two = await a, await b
    one["spec"]["value"] = "changed"
    assert two["spec"]["value"] == 1


async def test_an_error_reaches_every_caller_sharing_the_get_and_the_next_get_is_fresh() -> None:
    server = GatedServer()
    reads = reads_of(server)
    first = asyncio.create_task(reads.get(PATH))
    await settle()
    sharing = [asyncio.create_task(reads.get(PATH)) for _ in range(3)]
    await server.answer(0)
    await first
    server.error = ApiError(404, "NotFound", "chaosscenarios kill not found")
    await server.answer(1)
    for task in sharing:
        with pytest.raises(ApiError) as caught:
            await task
        assert caught.value.not_found
    server.error = None
    again = asyncio.create_task(reads.get(PATH))
    await server.answer(2)
    assert (await again)["spec"]["value"] == 1
    assert len(server.sent) == 3


async def test_a_cancelled_caller_leaves_the_get_to_the_others() -> None:
    server = GatedServer()
    reads = reads_of(server)
    first = asyncio.create_task(reads.get(PATH))
    await settle()
    leaving, staying = asyncio.create_task(reads.get(PATH)), asyncio.create_task(reads.get(PATH))
    await server.answer(0)
    await first
    await settle()
    leaving.cancel()
    await server.answer(1)
    assert (await staying)["spec"]["value"] == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_one_shared_reads_per_client() -> None:
    server = GatedServer()
    client = cast(KubeApi, server)
    assert shared_reads(client) is shared_reads(client)
    assert shared_reads(client) is not shared_reads(cast(KubeApi, GatedServer()))
    task = asyncio.create_task(shared_get(client, PATH))
    await server.answer(0)
    assert (await task)["spec"]["value"] == 1


class Reviewer:
    """A client answering SubjectAccessReviews, counting them; each waits until the test lets it answer."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.allowed = True
        self.gate = asyncio.Event()

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        allowed = self.allowed  # the authorizer answers as things are when the review arrives
        self.bodies.append(body)
        await self.gate.wait()
        return {**body, "status": {"allowed": allowed}}

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        raise ApiError(404, "NotFound", f"{path} not found")


def sar(user: str, verb: str) -> dict[str, Any]:
    attributes = {"verb": verb, "resource": "pods", "namespace": "team"}
    return {"kind": "SubjectAccessReview", "spec": {"user": user, "resourceAttributes": attributes}}


async def test_the_same_review_asked_meanwhile_is_shared_and_another_is_not() -> None:
    reviewer = Reviewer()
    client = cast(KubeApi, reviewer)
    path = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    first = asyncio.create_task(shared_review(client, path, sar("alice", "delete")))
    await settle()
    reviewer.allowed = False  # the right is revoked after the first review was sent
    same = [asyncio.create_task(shared_review(client, path, sar("alice", "delete"))) for _ in range(20)]
    # the same review with its keys in another order is the same review
    reordered = {"spec": {"resourceAttributes": sar("alice", "delete")["spec"]["resourceAttributes"], "user": "alice"}}
    same.append(asyncio.create_task(shared_review(client, path, {**reordered, "kind": "SubjectAccessReview"})))
    other = asyncio.create_task(shared_review(client, path, sar("bob", "delete")))
    await settle()
    assert len(reviewer.bodies) == 2, "alice's review in flight, bob's sent; alice's second waits"
    reviewer.gate.set()
    assert (await first)["status"]["allowed"] is True
    answers = [await t for t in same]
    assert len(reviewer.bodies) == 3
    assert {a["status"]["allowed"] for a in answers} == {False}, "the revocation is seen by every later asker"
    assert (await other)["spec"]["user"] == "bob"


async def test_shared_get_or_none_is_none_for_an_object_that_does_not_exist() -> None:
    assert await shared_get_or_none(cast(KubeApi, Reviewer()), PATH) is None
    server = GatedServer()
    task = asyncio.create_task(shared_get_or_none(cast(KubeApi, server), PATH))
    await server.answer(0)
    assert await task == {"spec": {"value": 1, "path": PATH}}
