"""The pure parts of the Kubernetes adapter (API paths, API versions, errors, the rate limiter, listed
objects' summaries) and the sweeper's reading of record annotations."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import orjson
import pytest

from coordinator.adapters.kube import (
    ApiError,
    Credentials,
    KubeClient,
    Listed,
    RateLimiter,
    api_version_of,
    listed_items,
    resource_path,
)
from coordinator.domain.selection import Candidate
from coordinator.engine.sweeper import records_of
from coordinator.faults.base import ANNOTATION_PREFIX

# --- resource_path -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("Pod",), "/api/v1/pods"),
        (("Pod", "shop"), "/api/v1/namespaces/shop/pods"),
        (("Pod", "shop", "checkout-6d8f9c7b5-x7k2p"), "/api/v1/namespaces/shop/pods/checkout-6d8f9c7b5-x7k2p"),
        (("Pod", "shop", "checkout-1", "eviction"), "/api/v1/namespaces/shop/pods/checkout-1/eviction"),
        (("Deployment", "shop", "checkout"), "/apis/apps/v1/namespaces/shop/deployments/checkout"),
        (("Deployment", "shop", "checkout", "scale"), "/apis/apps/v1/namespaces/shop/deployments/checkout/scale"),
        (("StatefulSet", "db", "postgres"), "/apis/apps/v1/namespaces/db/statefulsets/postgres"),
        (("DaemonSet",), "/apis/apps/v1/daemonsets"),
        (("ReplicaSet", "shop"), "/apis/apps/v1/namespaces/shop/replicasets"),
        (
            ("NetworkPolicy", "shop", "chaos-partition-3f2b9c1e-1"),
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/chaos-partition-3f2b9c1e-1",
        ),
        (("PodDisruptionBudget", "shop"), "/apis/policy/v1/namespaces/shop/poddisruptionbudgets"),
        (("Event", "shop"), "/api/v1/namespaces/shop/events"),
        (
            ("TestRun", "chaos", "checkout-restart-7x2k", "status"),
            "/apis/chaos.coordinator.dev/v1alpha1/namespaces/chaos/testruns/checkout-restart-7x2k/status",
        ),
        (("ChaosScenario",), "/apis/chaos.coordinator.dev/v1alpha1/chaosscenarios"),
    ],
)
def test_namespaced_paths(args: tuple[str, ...], expected: str) -> None:
    assert resource_path(*args) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("Node",), "/api/v1/nodes"),
        (("Node", None, "worker-1"), "/api/v1/nodes/worker-1"),
        (("Node", None, "worker-1", "status"), "/api/v1/nodes/worker-1/status"),
        (("Namespace", None, "shop"), "/api/v1/namespaces/shop"),
        (("Namespace",), "/api/v1/namespaces"),
    ],
)
def test_cluster_scoped_paths(args: tuple[str, ...], expected: str) -> None:
    assert resource_path(*args) == expected


def test_a_namespace_given_for_a_cluster_scoped_kind_is_ignored() -> None:
    assert resource_path("Node", "shop", "worker-1") == "/api/v1/nodes/worker-1"
    assert resource_path("Namespace", "shop", "payments") == "/api/v1/namespaces/payments"


def test_an_empty_namespace_means_all_namespaces() -> None:
    assert resource_path("Pod", "") == "/api/v1/pods"


def test_a_subresource_without_a_name_is_dropped() -> None:
    assert resource_path("Pod", "shop", None, "eviction") == "/api/v1/namespaces/shop/pods"


def test_names_are_url_quoted() -> None:
    assert resource_path("Pod", "shop", "a b?c") == "/api/v1/namespaces/shop/pods/a%20b%3Fc"
    # Node names may be dotted hostnames; dots and dashes stay as they are.
    assert resource_path("Node", None, "ip-10-0-1-17.ec2.internal") == "/api/v1/nodes/ip-10-0-1-17.ec2.internal"


def test_unknown_kind() -> None:
    with pytest.raises(KeyError):
        resource_path("CronJob", "shop")


# --- api_version_of ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("Pod", "v1"),
        ("Node", "v1"),
        ("Namespace", "v1"),
        ("Event", "v1"),
        ("Deployment", "apps/v1"),
        ("StatefulSet", "apps/v1"),
        ("DaemonSet", "apps/v1"),
        ("ReplicaSet", "apps/v1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("ChaosScenario", "chaos.coordinator.dev/v1alpha1"),
        ("TestRun", "chaos.coordinator.dev/v1alpha1"),
    ],
)
def test_api_version_of(kind: str, expected: str) -> None:
    assert api_version_of(kind) == expected


# --- ApiError ------------------------------------------------------------------------------------------------


def test_api_error_not_found() -> None:
    body = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
    exc = ApiError(404, "NotFound", 'pods "checkout-1" not found', body)
    assert exc.not_found is True
    assert exc.conflict is False
    assert str(exc) == '404 NotFound: pods "checkout-1" not found'
    assert exc.body == body
    assert exc.body is not body


def test_api_error_conflict() -> None:
    exc = ApiError(409, "AlreadyExists", 'networkpolicies "chaos-partition-3f2b9c1e-1" already exists')
    assert exc.conflict is True
    assert exc.not_found is False
    assert exc.body == {}


# --- RateLimiter ---------------------------------------------------------------------------------------------


async def test_rate_limiter_burst_does_not_wait() -> None:
    limiter = RateLimiter(qps=100, burst=5)
    start = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert limiter.throttled_seconds == 0.0
    assert time.monotonic() - start < 0.05


async def test_rate_limiter_paces_after_the_burst() -> None:
    limiter = RateLimiter(qps=100, burst=5)
    start = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    for _ in range(5):
        await limiter.acquire()
    elapsed = time.monotonic() - start
    # Five requests over the burst at 100/s: about 10 ms each.
    assert 0.025 <= limiter.throttled_seconds <= 0.0501
    assert elapsed >= 0.9 * limiter.throttled_seconds
    assert elapsed < 1.0


async def test_rate_limiter_sixth_acquire_waits_about_one_interval() -> None:
    limiter = RateLimiter(qps=100, burst=5)
    for _ in range(5):
        await limiter.acquire()
    before = time.monotonic()
    await limiter.acquire()
    waited = time.monotonic() - before
    assert 0.005 <= limiter.throttled_seconds <= 0.0101
    assert waited >= 0.9 * limiter.throttled_seconds


async def test_rate_limiter_refills_over_time() -> None:
    limiter = RateLimiter(qps=100, burst=5)
    for _ in range(5):
        await limiter.acquire()
    await asyncio.sleep(0.06)  # enough for the whole burst to come back
    for _ in range(5):
        await limiter.acquire()
    assert limiter.throttled_seconds == 0.0


async def test_rate_limiter_serves_concurrent_callers_in_turn() -> None:
    limiter = RateLimiter(qps=200, burst=2)
    served: list[int] = []

    async def caller(index: int) -> None:
        await limiter.acquire()
        served.append(index)

    start = time.monotonic()
    await asyncio.gather(*(caller(index) for index in range(12)))
    elapsed = time.monotonic() - start
    # Ten over the burst at 200/s: the k-th of them waits k x 5 ms, so the last one 50 ms; 275 ms in all.
    assert 0.25 <= limiter.throttled_seconds <= 0.2751
    assert elapsed >= 0.045
    assert served == list(range(12))


async def test_rate_limiter_keeps_its_rate_on_a_busy_event_loop() -> None:
    """The rate holds however long the loop's turns take: waiters do not hand a lock on once per turn.

    The old limiter sat behind an asyncio.Lock; once the bucket ran dry, the queued callers got the lock one per
    turn of the event loop, so a busy loop (8 ms turns here) served 125 requests/s whatever the qps said.
    """
    limiter = RateLimiter(qps=1000, burst=10)
    done = False

    async def busy() -> None:
        while not done:
            time.sleep(0.008)  # noqa: ASYNC251 -- a loop turn spent on other work, on purpose
            await asyncio.sleep(0)

    worker = asyncio.create_task(busy())
    await asyncio.sleep(0)
    start = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(50)))
    elapsed = time.monotonic() - start
    done = True
    await worker
    # 40 over the burst at 1,000/s are due within 40 ms; a lock handed on per 8 ms turn would take 320 ms.
    assert elapsed < 0.15


# --- records_of (the sweeper's view of a target) -------------------------------------------------------------

RUN_UID = "3f2b9c1e-8d4a-4c55-9e0f-1a2b3c4d5e6f"


def record(fault: str, inj_id: str, original: dict[str, object] | None) -> dict[str, object]:
    return {
        "fault": fault,
        "id": inj_id,
        "original": json.dumps(original, sort_keys=True) if original is not None else None,
        "run": "chaos/checkout-restart-7x2k",
        "runUid": RUN_UID,
    }


def deployment_with(annotations: dict[str, str] | None) -> dict[str, object]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "checkout",
            "namespace": "shop",
            "uid": "uid-checkout",
            "labels": {"app": "checkout", "chaos.coordinator.dev/injected": "true"},
            "annotations": annotations,
        },
        "spec": {"replicas": 0},
    }


def test_records_of_reads_every_record_annotation() -> None:
    scale = record("scale", "0.0/scale/Deployment/shop/checkout", {"replicas": 3})
    restart = record("rollout-restart", "1.0/rollout-restart/Deployment/shop/checkout", None)
    obj = deployment_with(
        {
            "deployment.kubernetes.io/revision": "4",
            f"{ANNOTATION_PREFIX}3f2b9c1e-0a1b2c3d4e": json.dumps(scale, sort_keys=True),
            "kubectl.kubernetes.io/last-applied-configuration": '{"apiVersion":"apps/v1"}',
            f"{ANNOTATION_PREFIX}3f2b9c1e-5f6a7b8c9d": json.dumps(restart, sort_keys=True),
        }
    )
    assert records_of("Deployment", obj) == [
        (f"{ANNOTATION_PREFIX}3f2b9c1e-0a1b2c3d4e", scale),
        (f"{ANNOTATION_PREFIX}3f2b9c1e-5f6a7b8c9d", restart),
    ]
    assert json.loads(str(records_of("Deployment", obj)[0][1]["original"])) == {"replicas": 3}


@pytest.mark.parametrize("annotations", [None, {}, {"deployment.kubernetes.io/revision": "4"}])
def test_records_of_an_object_without_records(annotations: dict[str, str] | None) -> None:
    assert records_of("Deployment", deployment_with(annotations)) == []


def test_records_of_an_object_without_annotations_key() -> None:
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-1"}, "spec": {}}
    assert records_of("Node", node) == []


@pytest.mark.parametrize("value", ["", "{not json", "null", "42", '"scale"', "[1, 2]"])
def test_records_of_ignores_unreadable_records(caplog: pytest.LogCaptureFixture, value: str) -> None:
    good = record("scale", "0.0/scale/Deployment/shop/checkout", {"replicas": 3})
    obj = deployment_with(
        {
            f"{ANNOTATION_PREFIX}3f2b9c1e-badbadbad0": value,
            f"{ANNOTATION_PREFIX}3f2b9c1e-0a1b2c3d4e": json.dumps(good),
        }
    )
    with caplog.at_level(logging.WARNING, logger="coordinator.engine.sweeper"):
        assert records_of("Deployment", obj) == [(f"{ANNOTATION_PREFIX}3f2b9c1e-0a1b2c3d4e", good)]
    assert "unreadable fault record" in caplog.text
    assert f"{ANNOTATION_PREFIX}3f2b9c1e-badbadbad0" in caplog.text
    assert "checkout" in caplog.text


@pytest.mark.parametrize(
    "value",
    [
        "{}",
        '["ab","cd"]',
        '{"run": "ns/r", "runUid": "u"}',
        '{"run": "ns/r", "runUid": "u", "fault": "meteor"}',
        '{"run": "/", "runUid": "u", "fault": "scale"}',
    ],
)
def test_records_of_skips_records_it_cannot_act_on(value: str) -> None:
    obj = {"metadata": {"name": "web", "annotations": {f"{ANNOTATION_PREFIX}abc": value}}}
    assert records_of("Deployment", obj) == []


# --- error bodies ------------------------------------------------------------------------------------------------


async def test_a_plain_text_error_body_becomes_an_api_error() -> None:
    """An API that is not installed answers "404 page not found" as text, not a Status object."""
    from aiohttp import web

    from coordinator.adapters.kube import Credentials, KubeClient

    async def not_installed(_: web.Request) -> web.Response:
        return web.Response(status=404, text="404 page not found\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_installed)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = KubeClient(Credentials(host=f"http://127.0.0.1:{port}", ssl_context=False, token=None, token_file=None))
    try:
        with pytest.raises(ApiError) as caught:
            await client.create(resource_path("TestRun", "shop"), {"kind": "TestRun"})
        assert caught.value.status == 404
        assert caught.value.not_found
        assert caught.value.message == "404 page not found"
        assert client.requests_by_method["POST"] == 1
    finally:
        await client.close()
        await runner.cleanup()


# --- listed objects: the summary target selection reads ---------------------------------------------------------

POD = {
    "metadata": {
        "name": "web-1",
        "namespace": "shop",
        "uid": "u-1",
        "labels": {"app": "web"},
        "annotations": {"note": "x"},
        "deletionTimestamp": "2026-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
    },
    "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "app:1"}]},
    "status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "podIP": "10.0.0.1",
    },
}


def _listed(*items: object) -> list[Listed]:
    raw = orjson.dumps({"kind": "PodList", "metadata": {"resourceVersion": "1"}, "items": list(items)})
    return listed_items(raw, "/api/v1/pods")


def test_a_summary_holds_what_selection_reads_and_nothing_else() -> None:
    (listed,) = _listed(POD)
    assert listed.summary == {
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "u-1",
            "labels": {"app": "web"},
            "annotations": {"note": "x"},
            "deletionTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    candidate = Candidate.from_object("Pod", listed.summary)
    assert candidate == Candidate.from_object("Pod", POD), "selection sees the same candidate either way"


def test_the_listed_object_decodes_in_full() -> None:
    (listed,) = _listed(POD)
    assert listed.object() == POD


def test_missing_and_null_fields_are_tolerated() -> None:
    (bare, nulls) = _listed({"metadata": {"name": "n"}}, {"metadata": {"name": "m", "labels": None}, "status": None})
    assert Candidate.from_object("Node", bare.summary).name == "n"
    assert Candidate.from_object("Pod", nulls.summary).labels == {}


def test_a_field_of_an_unexpected_shape_falls_back_to_the_whole_object() -> None:
    odd = {"metadata": {"name": "odd", "labels": {"app": 3}}, "status": {"phase": "Running"}}
    (listed,) = _listed(odd)
    assert listed.summary == odd
    assert Candidate.from_object("Pod", listed.summary).labels == {"app": "3"}


def test_an_empty_list_has_no_items() -> None:
    assert listed_items(b'{"kind":"PodList","items":null}', "/api/v1/pods") == []
    assert _listed() == []


def test_a_body_that_is_not_a_list_is_an_api_error() -> None:
    with pytest.raises(ApiError, match="the list from /api/v1/pods is not a list"):
        listed_items(b"<html>proxy error</html>", "/api/v1/pods")


async def test_an_unreachable_api_server_is_a_transient_api_error() -> None:
    """Connection refused (and timeouts) come out as ApiError 503, so a run retries them with backoff instead of
    ending Error on an exception nobody expected; callers handle one error type."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the socket is closed
    kube = KubeClient(Credentials(host=f"http://127.0.0.1:{port}", ssl_context=False, token=None, token_file=None))
    try:
        with pytest.raises(ApiError) as caught:
            await kube.get("/api/v1/namespaces")
    finally:
        await kube.close()
    assert caught.value.status == 503
    assert "GET /api/v1/namespaces" in caught.value.message
