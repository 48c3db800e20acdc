"""How the API names a kind: its resource (the plural in the URL), its group, and whether it is namespaced.

For the kinds a scenario may name freely (a k8s probe's ``kind`` and ``apiVersion``): the probe's URL and the
right its requester needs to read it are derived from the same names here.
"""

from __future__ import annotations

# Plurals of the kinds probes usually look at; others fall back to the lowercase kind + "s".
PLURALS = {
    "Endpoints": "endpoints",
    "Ingress": "ingresses",
    "NetworkPolicy": "networkpolicies",
    "PodDisruptionBudget": "poddisruptionbudgets",
}
CLUSTER_SCOPED_KINDS = frozenset({"Node", "Namespace", "PersistentVolume"})


def plural(kind: str) -> str:
    """The resource of ``kind`` as the API names it in URLs and RBAC rules: Deployment -> deployments."""
    return PLURALS.get(kind, kind.lower() + "s")


def group_of(api_version: str) -> str:
    """The API group of an apiVersion: apps/v1 -> apps, v1 -> "" (the core group)."""
    group, _, _version = api_version.rpartition("/")
    return group
