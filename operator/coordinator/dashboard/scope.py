"""Who may read which stored runs: the history store is read with the dashboard's database credentials, never the
viewer's, so each read is first checked against the viewer's own Kubernetes rights.

The stored runs are the TestRuns' record: a viewer who may ``list`` TestRuns in a namespace may read its stored runs,
and one who may list them in every namespace may read them all (the overview's figures, an unfiltered history
page). The answer comes from a SelfSubjectAccessReview made with the viewer's own client, kept for a short while.
"""

from __future__ import annotations

import time

from aiohttp import web

from coordinator.adapters.kube import ApiError
from coordinator.api.models import GROUP
from coordinator.dashboard.server import viewer_of

# Seconds an answer is kept: a page and its live stream ask once, and a right taken away counts within a minute.
ANSWER_TTL = 30.0
_ANSWERS: dict[tuple[str, str], tuple[float, str | None]] = {}


def where(namespace: str | None) -> str:
    return f"namespace {namespace}" if namespace else "every namespace"


async def history_refusal(request: web.Request, namespace: str | None) -> str | None:
    """Why the viewer may not read the stored runs of ``namespace`` (None: of every namespace); None when they may."""
    viewer = await viewer_of(request)
    key = (viewer.username, namespace or "")
    known = _ANSWERS.get(key)
    now = time.monotonic()
    if known is not None and now - known[0] < ANSWER_TTL:
        return known[1]
    attributes = {
        "group": GROUP,
        "resource": "testruns",
        "verb": "list",
        **({"namespace": namespace} if namespace else {}),
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    try:
        answer = await viewer.client.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
    except ApiError as exc:
        return f"cannot check whether you may read the stored runs of {where(namespace)}: {exc.message}"
    allowed = bool((answer.get("status") or {}).get("allowed"))
    refusal = (
        None
        if allowed
        else (
            f"the stored runs of {where(namespace)} are shown only to those who may list TestRuns there, and "
            f"{viewer.username} may not" + ("" if namespace else ": filter the history by a namespace you may list")
        )
    )
    if len(_ANSWERS) > 10_000:
        _ANSWERS.clear()
    _ANSWERS[key] = (now, refusal)
    return refusal
