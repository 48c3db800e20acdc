"""The shared in-memory API server (tests/support/fake_kube.py) behaves as the API server does where our code
depends on it: unit tests that use it are only as good as it is."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest

from coordinator.adapters.kube import (
    MERGE_PATCH,
    STRATEGIC_PATCH,
    ApiError,
    Credentials,
    KubeApi,
    KubeClient,
    resource_path,
)
from support.fake_kube import Call, Crash, FakeKube, merge_patch, path_of

RUN = resource_path("TestRun", "ns", "run-1")
RUNS = resource_path("TestRun", "ns")


def run(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "metadata": {"name": "run-1", "namespace": "ns", "labels": {"team": "shop"}},
        "spec": {"scenarioRef": {"name": "s"}, **spec},
    }


def pod(name: str, namespace: str = "ns", **labels: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": "n1"},
    }


def seed(kube: FakeKube, obj: dict[str, Any]) -> dict[str, Any]:
    return kube.add(path_of(obj), obj)


def test_the_fake_and_the_client_both_have_the_protocols_methods_and_signatures() -> None:
    client = KubeClient(Credentials(host="https://127.0.0.1:6443", ssl_context=False, token=None, token_file=None))
    assert isinstance(client, KubeApi)
    assert isinstance(FakeKube(), KubeApi)
    members = [name for name in dir(KubeApi) if not name.startswith("_")]
    assert {"patch", "list", "watch"} <= set(members)
    for name in members:
        expected = inspect.signature(getattr(KubeApi, name))
        assert inspect.signature(getattr(FakeKube, name)) == expected, name
        assert inspect.signature(getattr(KubeClient, name)) == expected, name


async def test_create_fills_in_what_the_server_owns_and_refuses_a_second_one() -> None:
    kube = FakeKube()
    created = await kube.create(RUNS, run())
    metadata = created["metadata"]
    assert (metadata["name"], metadata["namespace"], metadata["generation"]) == ("run-1", "ns", 1)
    assert metadata["resourceVersion"] == "1"
    assert metadata["uid"]
    assert metadata["creationTimestamp"]
    assert await kube.get(RUN) == created
    with pytest.raises(ApiError) as refused:
        await kube.create(RUNS, run())
    assert (refused.value.status, refused.value.reason) == (409, "AlreadyExists")
    named = await kube.create(RUNS, {"kind": "TestRun", "metadata": {"generateName": "run-"}, "spec": {}})
    assert named["metadata"]["name"].startswith("run-")
    assert named["metadata"]["name"] != "run-"


async def test_missing_objects_are_404_and_empty_collections_are_empty() -> None:
    kube = FakeKube()
    with pytest.raises(ApiError) as missing:
        await kube.get(RUN)
    assert missing.value.not_found
    assert await kube.get_or_none(RUN) is None
    assert (await kube.get(RUNS))["items"] == []
    assert await kube.list(RUNS) == []
    for write in (kube.patch(RUN, {"spec": {}}), kube.delete(RUN)):
        with pytest.raises(ApiError) as absent:
            await write
        assert absent.value.not_found


async def test_reads_are_copies() -> None:
    kube = FakeKube()
    seed(kube, run())
    got = await kube.get(RUN)
    got["spec"]["changed"] = True
    (await kube.list(RUNS))[0]["spec"]["changed"] = True
    assert "changed" not in kube.stored(RUN)["spec"]


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_is_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before


async def test_patch_bumps_the_resource_version_and_generation_only_for_spec() -> None:
    kube = FakeKube()
    seed(kube, run(a=1))
    labelled = await kube.patch(RUN, {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["labels"] == {"team": "shop", "x": "y"}
    assert (labelled["metadata"]["resourceVersion"], labelled["metadata"]["generation"]) == ("2", 1)
    changed = await kube.patch(RUN, {"spec": {"a": None, "b": 2}})
    assert changed["spec"] == {"scenarioRef": {"name": "s"}, "b": 2}
    assert (changed["metadata"]["resourceVersion"], changed["metadata"]["generation"]) == ("3", 2)
    same = await kube.patch(RUN, {"spec": {"b": 2}})
    assert same["metadata"]["resourceVersion"] == "3", "a no-op write changes nothing"


async def test_a_stale_resource_version_in_a_patch_is_a_conflict() -> None:
    kube = FakeKube()
    version = seed(kube, run())["metadata"]["resourceVersion"]
    await kube.patch(RUN, {"metadata": {"resourceVersion": version}, "spec": {"a": 1}})
    with pytest.raises(ApiError) as stale:
        await kube.patch(RUN, {"metadata": {"resourceVersion": version}, "spec": {"a": 2}})
    assert (stale.value.status, stale.value.reason) == (409, "Conflict")
    assert kube.stored(RUN)["spec"]["a"] == 1


async def test_status_is_written_only_through_its_subresource() -> None:
    kube = FakeKube()
    seed(kube, run())
    ignored = await kube.patch(RUN, {"status": {"phase": "Running"}, "spec": {"a": 1}})
    assert "status" not in ignored
    assert ignored["spec"]["a"] == 1
    written = await kube.patch(f"{RUN}/status", {"status": {"phase": "Running"}, "spec": {"a": 2}})
    assert written["status"] == {"phase": "Running"}
    assert written["spec"]["a"] == 1
    assert written["metadata"]["generation"] == 2, "a status write is not a new generation"
    assert (await kube.get(f"{RUN}/status"))["status"] == {"phase": "Running"}
    await kube.patch(f"{RUN}/status", {"status": {"phase": None, "verdict": "Passed"}})
    assert kube.stored(RUN)["status"] == {"verdict": "Passed"}


async def test_a_lease_has_no_status_subresource() -> None:
    kube = FakeKube()
    path = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/lock"
    kube.add(path, {"spec": {"holderIdentity": "a"}})
    assert (await kube.patch(path, {"status": {"x": 1}}))["status"] == {"x": 1}


async def test_delete_waits_for_the_finalizers() -> None:
    kube = FakeKube()
    seed(kube, run() | {"metadata": {"name": "run-1", "namespace": "ns", "finalizers": ["ours"]}})
    deleting = await kube.delete(RUN)
    assert deleting["metadata"]["deletionTimestamp"]
    assert (await kube.get(RUN))["metadata"]["deletionTimestamp"]
    await kube.patch(RUN, {"metadata": {"finalizers": None}})
    assert await kube.get_or_none(RUN) is None
    seed(kube, run())
    await kube.delete(RUN)
    assert await kube.get_or_none(RUN) is None


async def test_lists_select_by_label_and_field_across_namespaces() -> None:
    kube = FakeKube()
    for obj in (pod("b", app="web"), pod("a", app="web", tier="x"), pod("c", app="db"), pod("a", "other", app="web")):
        seed(kube, obj)
    kube.objects[resource_path("Pod", "ns", "c")]["spec"]["nodeName"] = "n2"

    def names(items: list[dict[str, Any]]) -> list[str]:
        return [f"{item['metadata']['namespace']}/{item['metadata']['name']}" for item in items]

    in_ns = resource_path("Pod", "ns")
    assert names(await kube.list(in_ns)) == ["ns/a", "ns/b", "ns/c"]
    assert names(await kube.list(in_ns, label_selector="app=web,!tier")) == ["ns/b"]
    assert names(await kube.list(in_ns, label_selector="app in (db,cache)")) == ["ns/c"]
    assert names(await kube.list(in_ns, field_selector="spec.nodeName=n2")) == ["ns/c"]
    assert names(await kube.list(in_ns, field_selector="metadata.name!=a,spec.nodeName!=n2")) == ["ns/b"]
    assert names(await kube.list(resource_path("Pod"), label_selector="app=web")) == ["ns/a", "ns/b", "other/a"]
    summaries = await kube.list_summaries(in_ns, label_selector="app=web", metadata_only=True)
    assert [s.summary["metadata"]["name"] for s in summaries] == ["a", "b"]
    assert summaries[0].object()["kind"] == "PartialObjectMetadata"
    assert "spec" not in summaries[0].object()


async def test_a_strategic_merge_patch_merges_named_list_items() -> None:
    kube = FakeKube()
    path = seed(kube, pod("a") | {"spec": {"containers": [{"name": "app", "image": "v1"}, {"name": "side"}]}})
    path_of = resource_path("Pod", "ns", path["metadata"]["name"])
    patched = await kube.patch(path_of, {"spec": {"containers": [{"name": "app", "image": "v2"}]}}, STRATEGIC_PATCH)
    assert patched["spec"]["containers"] == [{"name": "app", "image": "v2"}, {"name": "side"}]
    replaced = await kube.patch(path_of, {"spec": {"containers": [{"name": "app", "image": "v3"}]}})
    assert replaced["spec"]["containers"] == [{"name": "app", "image": "v3"}], "a merge patch replaces lists"
    with pytest.raises(ApiError) as refused:
        await kube.patch(path_of, [{"op": "remove", "path": "/spec"}], "application/json-patch+json")
    assert refused.value.status == 415


async def test_calls_are_logged_and_failures_injected() -> None:
    kube = FakeKube()
    seed(kube, run())
    kube.fail(ApiError(503, "ServiceUnavailable", "down"), verb="patch")
    with pytest.raises(ApiError) as down:
        await kube.patch(RUN, {"spec": {"a": 1}})
    assert down.value.status == 503
    await kube.patch(RUN, {"spec": {"a": 1}})
    kube.fail(ApiError(500, "InternalError", "boom"), times=None)
    for _ in range(3):
        with pytest.raises(ApiError):
            await kube.get(RUN)
    kube.recover()
    await kube.get(RUN)
    assert kube.calls_of("patch") == [Call("patch", RUN, {"spec": {"a": 1}})] * 2
    assert [call.verb for call in kube.calls] == ["patch", "patch", "get", "get", "get", "get"]


async def test_request_dispatches_like_the_client() -> None:
    kube = FakeKube()
    await kube.request("POST", RUNS, body=run())
    await kube.request("PATCH", RUN, body={"spec": {"a": 1}}, content_type=MERGE_PATCH)
    current = await kube.request("GET", RUN)
    current["spec"]["a"] = 2
    replaced = await kube.request("PUT", RUN, body=current)
    assert replaced["spec"]["a"] == 2
    with pytest.raises(ApiError) as stale:
        await kube.request("PUT", RUN, body=current)
    assert stale.value.conflict
    await kube.request("DELETE", RUN)
    assert kube.objects == {}
    kube.texts[f"{RUN}/log"] = "hello"
    assert await kube.get_text(f"{RUN}/log") == "hello"


async def test_a_watch_sees_existing_objects_then_changes() -> None:
    kube = FakeKube()
    seed(kube, run())
    seen: list[tuple[str, Any]] = []

    async def watching() -> None:
        async for event in kube.watch(RUNS, timeout_seconds=5):
            seen.append((event["type"], event["object"]["spec"].get("a")))
            if len(seen) == 3:
                return

    watcher = asyncio.create_task(watching())
    await asyncio.sleep(0)
    await kube.patch(RUN, {"spec": {"a": 1}})
    await kube.delete(RUN)
    await asyncio.wait_for(watcher, 5)
    assert seen == [("ADDED", None), ("MODIFIED", 1), ("DELETED", 1)]
    since = [e["type"] async for e in kube.watch(RUNS, resource_version="1", timeout_seconds=0)]
    assert since == ["MODIFIED", "DELETED"]


@pytest.mark.looptime
async def test_version_params_and_latency_are_served_like_the_api_server() -> None:
    kube = FakeKube()
    assert (await kube.get("/version"))["gitVersion"].startswith("v1.")
    await kube.list_summaries(resource_path("Pod", "ns"), label_selector="app=web", metadata_only=True)
    assert kube.calls[-1].params == {"labelSelector": "app=web", "metadataOnly": True}
    kube.latency = 7
    loop = asyncio.get_running_loop()
    started = loop.time()
    await kube.get_or_none(RUN)
    assert loop.time() - started == pytest.approx(7)


async def test_hooks_see_each_write_and_a_crash_leaves_the_change_made() -> None:
    kube = FakeKube()
    seed(kube, run())
    refused: list[Call] = []

    def before(call: Call) -> None:
        if call.verb == "delete":
            refused.append(call)
            raise ApiError(403, "Forbidden", "not you")

    def after(call: Call) -> None:
        if call.verb == "patch":
            raise Crash

    kube.before, kube.after = before, after
    with pytest.raises(Crash):
        await kube.patch(RUN, {"spec": {"a": 1}})
    assert kube.stored(RUN)["spec"]["a"] == 1, "the server made the change before the process died"
    with pytest.raises(ApiError) as forbidden:
        await kube.delete(RUN)
    assert forbidden.value.status == 403
    assert [c.verb for c in refused] == ["delete"]
    created = await kube.create(RUNS, run() | {"metadata": {"name": "run-2", "namespace": "ns"}})
    assert kube.mutations("create") == [
        Call("create", f"{RUNS}/run-2", run() | {"metadata": {"name": "run-2", "namespace": "ns"}})
    ]
    kube.before = kube.after = None
    with pytest.raises(ApiError) as stale:
        await kube.delete(f"{RUNS}/run-2", {"preconditions": {"uid": "someone-else"}})
    assert stale.value.conflict
    await kube.delete(f"{RUNS}/run-2", {"preconditions": {"uid": created["metadata"]["uid"]}})
    assert [c.verb for c in kube.mutations()] == ["patch", "delete", "create", "delete", "delete"]
