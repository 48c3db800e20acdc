"""Whether a requester may do what a scenario makes the operator do: a SubjectAccessReview per access.

The operator's ServiceAccount holds every right a fault can need; a run uses them only as far as its requester
holds them too (docs/security.md). The admission webhook asks this when a ChaosScenario or a TestRun is created or
changed, and a run asks it again before it changes anything (engine/run/admission.py), so a right removed since
(a RoleBinding deleted between two scheduled runs) stops the next run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from coordinator.adapters.kube import JSON, KubeApi
from coordinator.adapters.sharedreads import shared_review
from coordinator.api.models import ChaosScenarioSpec, Requester
from coordinator.domain.permissions import (
    Access,
    Need,
    access_name,
    distinct,
    node_targeting_refusal,
    refusal_message,
    scenario_needs,
)
from coordinator.settings import Settings

SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/subjectaccessreviews"
# Reviews in flight at once for one check: a scenario of many namespaces and probes asks dozens.
CONCURRENT_REVIEWS = 8


def review(requester: Requester, access: Access) -> JSON:
    """The SubjectAccessReview asking whether ``requester`` may do ``access``."""
    verb, group, resource, subresource, namespace = access[:5]
    attributes: dict[str, str] = {"verb": verb, "group": group, "resource": resource}
    if subresource:
        attributes["subresource"] = subresource
    if access_name(access):
        attributes["name"] = access_name(access)
    if namespace is not None:
        attributes["namespace"] = namespace
    spec: JSON = {"user": requester.username, "groups": list(requester.groups), "resourceAttributes": attributes}
    if requester.uid:
        spec["uid"] = requester.uid
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


async def may(client: KubeApi, requester: Requester, access: Access) -> bool:
    """Whether the API server's authorizers allow ``access`` to ``requester`` (an ApiError when it cannot say)."""
    # shared with the same review asked meanwhile, sent after they all asked (adapters/sharedreads.py)
    answer = await shared_review(client, SUBJECT_ACCESS_REVIEWS, review(requester, access))
    status = answer.get("status") or {}
    return bool(status.get("allowed")) and not status.get("denied")


async def refusals(client: KubeApi, requester: Requester, needs: Iterable[Need]) -> list[str]:
    """What ``requester`` may not do of ``needs``, one message per access refused, in the order first needed.

    Each access is reviewed once, however many parts need it; at most ``CONCURRENT_REVIEWS`` at a time.
    """
    grouped = distinct(needs)
    limit = asyncio.Semaphore(CONCURRENT_REVIEWS)

    async def allowed(access: Access) -> bool:
        async with limit:
            return await may(client, requester, access)

    answers = await asyncio.gather(*(allowed(access) for access in grouped))  # an ApiError as it is raised
    return [
        refusal_message(requester.username, access, needed_by)
        for (access, needed_by), answer in zip(grouped.items(), answers, strict=True)
        if not answer
    ]


async def scenario_refusals(
    client: KubeApi,
    settings: Settings,
    requester: Requester,
    spec: ChaosScenarioSpec,
    scenario_namespace: str,
    *,
    extra: Sequence[Need] = (),
) -> list[str]:
    """Why ``requester`` may not run the *rendered* scenario ``spec`` of ``scenario_namespace`` (empty: they may).

    Node targets while ``COORDINATOR_NODE_TARGETING`` is off, then every right of ``extra`` and of
    ``domain.permissions.scenario_needs`` that a SubjectAccessReview refuses, worded as Kubernetes' RBAC errors:
    ``alice cannot patch resource "nodes" at the cluster scope (needed by node-drain)``.
    """
    problems: list[str] = []
    nodes = node_targeting_refusal(spec, settings.node_targeting)
    if nodes is not None:
        problems.append(nodes)
    problems += await refusals(client, requester, [*extra, *scenario_needs(spec, scenario_namespace)])
    return problems
