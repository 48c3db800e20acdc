"""Nothing of ours outlives a run, when the operator stopped between two writes: a record the Deployment
controller copied onto a ReplicaSet, and that the Deployment no longer carries, is removed by the sweep."""

from __future__ import annotations

import json
from pathlib import Path

from kubernetes import client

from conftest import make_deployment
from coordinator.adapters.kube import KubeClient
from coordinator.engine.sweeper import stale_record_copies
from coordinator.faults.base import ANNOTATION_PREFIX
from coordinator.testing.waiting import wait_for
from support.residue import residue


def _copies(apps: client.AppsV1Api, ns: str) -> dict[str, set[str]]:
    return {
        rs.metadata.name: {k for k in (rs.metadata.annotations or {}) if k.startswith(ANNOTATION_PREFIX)}
        for rs in apps.list_namespaced_replica_set(ns).items
    }


async def test_the_sweep_removes_record_copies_the_deployment_no_longer_carries(
    kube: KubeClient, apps: client.AppsV1Api, kubeconfig: Path, unwatched_namespace: str
) -> None:
    ns = unwatched_namespace
    make_deployment(apps, ns, "web", replicas=1)
    gone, kept = f"{ANNOTATION_PREFIX}gone", f"{ANNOTATION_PREFIX}kept"
    record = json.dumps({"run": f"{ns}/r", "runUid": "u", "fault": "scale"})
    apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {gone: record, kept: record}}})
    wait_for(
        lambda: any(found == {gone, kept} for found in _copies(apps, ns).values()),
        timeout=30,
        description="the Deployment controller copying both records onto the ReplicaSet",
    )
    # The revert of `gone` cleared the Deployment, and the operator stopped before it cleared the copy.
    apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {gone: None}}})
    assert await stale_record_copies(kube, [ns]) == 1
    assert set().union(*_copies(apps, ns).values()) == {kept}, "a record the Deployment still carries stays"
    assert await stale_record_copies(kube, [ns]) == 0, "nothing left to do"
    apps.patch_namespaced_deployment("web", ns, {"metadata": {"annotations": {kept: None}}})
    await stale_record_copies(kube, [ns])
    assert residue(kubeconfig, ns) == []
