"""What target selection asks the API server for: metadata-only pod lists for faults that read no object."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.api.models import FaultType, Target
from coordinator.engine.targets import pods_by_metadata, resolve_targets
from coordinator.faults import driver_for
from support.fake_kube import Call, FakeKube, path_of


async def allow(namespace: str) -> tuple[bool, str]:
    return True, ""


def cluster(*pods: dict[str, Any]) -> FakeKube:
    kube = FakeKube()
    for pod in pods:
        kube.add(path_of(pod), pod)
    return kube


def pod(name: str, phase: str, node: str = "n1") -> dict[str, Any]:
    meta = {"name": name, "namespace": "shop", "uid": f"uid-{name}", "labels": {"app": "web"}}
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase}}


def test_only_pod_kill_plans_without_reading_its_targets() -> None:
    """A driver that says it reads no target must not need one: its plan works from identities alone."""
    assert {t for t in FaultType if not driver_for(t).reads_targets} == {FaultType.POD_KILL}


@pytest.mark.parametrize(
    ("kind", "reads", "expected"), [("Pod", False, True), ("Pod", True, False), ("Deployment", False, False)]
)
def test_metadata_lists_are_for_pods_whose_faults_read_nothing(kind: str, reads: bool, expected: bool) -> None:
    assert pods_by_metadata(Target(kind=kind), reads) is expected


async def test_a_metadata_list_filters_the_phase_on_the_server() -> None:
    client = cluster(pod("a", "Running"), pod("b", "Running"), pod("c", "Pending"), pod("d", "Running", node="n2"))
    target = Target.model_validate(
        {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}, "fieldSelector": "spec.nodeName=n1"}
    )
    selection = await resolve_targets(client, allow, target, "shop", "all", None, 1, reads_targets=False)  # type: ignore[arg-type]
    assert client.calls == [
        Call(
            "list",
            "/api/v1/namespaces/shop/pods",
            params={
                "labelSelector": "app=web",
                "fieldSelector": "status.phase=Running,spec.nodeName=n1",
                "metadataOnly": True,
            },
        )
    ]
    assert [t.ref.name for t in selection.targets] == ["a", "b"], "the server kept only Running pods on n1"
    assert all("status" not in t.obj for t in selection.targets), "metadata only"


async def test_a_full_list_filters_the_phase_itself() -> None:
    client = cluster(pod("a", "Running"), pod("b", "Pending"))
    target = Target.model_validate({"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}})
    selection = await resolve_targets(client, allow, target, "shop", "all", None, 1)  # type: ignore[arg-type]
    assert client.calls == [Call("list", "/api/v1/namespaces/shop/pods", params={"labelSelector": "app=web"})]
    assert [t.ref.name for t in selection.targets] == ["a"]
    assert selection.targets[0].obj["status"] == {"phase": "Running"}
