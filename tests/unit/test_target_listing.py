"""What target selection asks the API server for: metadata-only pod lists for faults that read no object."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from coordinator.adapters.kube import Listed
from coordinator.api.models import FaultType, Target
from coordinator.engine.targets import pods_by_metadata, resolve_targets
from coordinator.faults import driver_for


class ListingClient:
    """Answers list_summaries with fixed pods and records how it was asked."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.calls: list[dict[str, Any]] = []

    async def list_summaries(self, path: str, **kwargs: Any) -> list[Listed]:
        self.calls.append({"path": path, **kwargs})
        return [Listed.of(msgspec.Raw(orjson.dumps(pod))) for pod in self.pods]


async def allow(namespace: str) -> tuple[bool, str]:
    return True, ""


def pod(name: str, **status: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": "shop", "uid": f"uid-{name}", "labels": {"app": "web"}}
    return {"kind": "Pod", "metadata": meta, **({"status": status} if status else {})}


def test_only_pod_kill_plans_without_reading_its_targets() -> None:
    """A driver that says it reads no target must not need one: its plan works from identities alone."""
    assert {t for t in FaultType if not driver_for(t).reads_targets} == {FaultType.POD_KILL}


@pytest.mark.parametrize(
    ("kind", "reads", "expected"), [("Pod", False, True), ("Pod", True, False), ("Deployment", False, False)]
)
def test_metadata_lists_are_for_pods_whose_faults_read_nothing(kind: str, reads: bool, expected: bool) -> None:
    assert pods_by_metadata(Target(kind=kind), reads) is expected


async def test_a_metadata_list_filters_the_phase_on_the_server() -> None:
    client = ListingClient([pod("a"), pod("b")])  # metadata only: no status at all
    target = Target.model_validate(
        {"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}, "fieldSelector": "spec.nodeName=n1"}
    )
    selection = await resolve_targets(client, allow, target, "shop", "all", None, 1, reads_targets=False)  # type: ignore[arg-type]
    assert client.calls == [
        {
            "path": "/api/v1/namespaces/shop/pods",
            "label_selector": "app=web",
            "field_selector": "status.phase=Running,spec.nodeName=n1",
            "metadata_only": True,
        }
    ]
    assert [t.ref.name for t in selection.targets] == ["a", "b"], "the server kept only Running pods"


async def test_a_full_list_filters_the_phase_itself() -> None:
    client = ListingClient([pod("a", phase="Running"), pod("b", phase="Pending")])
    target = Target.model_validate({"kind": "Pod", "labelSelector": {"matchLabels": {"app": "web"}}})
    selection = await resolve_targets(client, allow, target, "shop", "all", None, 1)  # type: ignore[arg-type]
    assert client.calls == [
        {
            "path": "/api/v1/namespaces/shop/pods",
            "label_selector": "app=web",
            "field_selector": None,
            "metadata_only": False,
        }
    ]
    assert [t.ref.name for t in selection.targets] == ["a"]
    assert selection.targets[0].obj["status"] == {"phase": "Running"}
