"""cmd probes: a command in a short-lived Pod in the scenario's namespace, judged on its exit code and output.

Each sample creates one Pod (restricted: non-root, no privilege escalation, every capability dropped, the
runtime's seccomp profile, no ServiceAccount token unless one is named), waits for its container to end, reads at
most ``MAX_OUTPUT_BYTES`` of its log and deletes it. The Pod is owned by the TestRun when both are in one namespace,
so that the garbage collector removes it should the operator be gone between creating and deleting it; an owner in
another namespace would count as absent and get the Pod collected at once, so a run whose scenario lives elsewhere
relies on the deletion (and the Pod's activeDeadlineSeconds) alone.

The Pod is created with the operator's rights, which the requester must share (``create pods`` in the namespace:
domain/permissions.py). Where the operator may create it at all follows the targets' rules: never in a protected
namespace, and only in a namespace that opted in (chaos.coordinator.dev/allow=true) unless the operator targets
cluster-wide.

A Pod that cannot start fails the sample with the reason: at once for an image that cannot be pulled or a container
that cannot be created, at the time limit for a Pod still pending (no node to run it). Nothing here blocks the
event loop: the Pod's state is polled with short asynchronous sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coordinator.adapters.kube import ApiError, KubeApi, resource_path
from coordinator.api.base import API_VERSION
from coordinator.api.probes import CmdProbe
from coordinator.domain.samples import ProbeError, Sample, compare
from coordinator.probes.base import ProbeRefused, excerpt, lookup, short

CONTAINER = "probe"
MANAGED_BY = ("app.kubernetes.io/managed-by", "test-coordinator")
RUN_LABEL = "chaos.coordinator.dev/test-run"
PROBE_LABEL = "chaos.coordinator.dev/probe"
MAX_OUTPUT_BYTES = 64 * 1024
POLL_SECONDS = 0.25
# Waiting reasons after which the container will not start by itself within a probe's time limit.
CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class RunOwner:
    """The TestRun a probe Pod belongs to (labels, and its owner when in the same namespace)."""

    namespace: str
    name: str
    uid: str


def pod_body(
    spec: CmdProbe, probe_name: str, namespace: str, limit_seconds: float, run: RunOwner | None
) -> dict[str, Any]:
    """Pure: the Pod of one sample of the cmd probe ``probe_name``, in ``namespace``."""
    labels = {MANAGED_BY[0]: MANAGED_BY[1], PROBE_LABEL: probe_name}
    metadata: dict[str, Any] = {"namespace": namespace, "labels": labels}
    if run is not None:
        labels[RUN_LABEL] = run.name[:63].rstrip("-_.")
        metadata["generateName"] = f"{run.name[:30].rstrip('-.')}-{probe_name[:20].rstrip('-')}-"
        if run.namespace == namespace:
            metadata["ownerReferences"] = [
                {"apiVersion": API_VERSION, "kind": "TestRun", "name": run.name, "uid": run.uid}
            ]
    else:
        metadata["generateName"] = f"probe-{probe_name[:40].rstrip('-')}-"
    security: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if spec.runAsUser is not None:
        security["runAsUser"] = spec.runAsUser
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": list(spec.command),
        "securityContext": security,
        "terminationMessagePolicy": "File",
    }
    if spec.imagePullPolicy is not None:
        container["imagePullPolicy"] = spec.imagePullPolicy
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        container["env"] = [{"name": e.name, "value": e.value} for e in spec.env]
    if spec.resources is not None:
        container["resources"] = spec.resources.model_dump(exclude_defaults=True)
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": max(1, math.ceil(limit_seconds)),
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": spec.serviceAccountName is not None,
        "enableServiceLinks": False,
        "containers": [container],
    }
    if spec.serviceAccountName is not None:
        pod_spec["serviceAccountName"] = spec.serviceAccountName
    if spec.nodeSelector:
        pod_spec["nodeSelector"] = dict(spec.nodeSelector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(exclude_none=True) for t in spec.tolerations]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


@dataclass(frozen=True)
class Outcome:
    """Where a probe Pod is: ``exit_code`` once its command ended; ``failure`` when it cannot start or was
    stopped; neither while it is still on its way."""

    exit_code: int | None = None
    failure: str | None = None

    @property
    def final(self) -> bool:
        return self.exit_code is not None or self.failure is not None


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == CONTAINER), {})


def outcome(pod: Mapping[str, Any]) -> Outcome:
    """Pure: the state of a probe Pod as its status tells it."""
    status = pod.get("status") or {}
    state = _container(pod).get("state") or {}
    terminated = state.get("terminated")
    if terminated is not None and terminated.get("exitCode") is not None:
        return Outcome(exit_code=int(terminated["exitCode"]))
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in CANNOT_START:
        return Outcome(failure=short(f"cannot start: {waiting['reason']}: {waiting.get('message') or ''}".strip(": ")))
    if status.get("phase") == "Failed":  # stopped before the command ended: the deadline, an eviction
        reason = status.get("reason") or "Failed"
        return Outcome(failure=short(f"the Pod failed: {reason}: {status.get('message') or ''}".strip(": ")))
    return Outcome()


def pending_reason(pod: Mapping[str, Any]) -> str:
    """Pure: why a Pod that has not ended yet is not running its command, as far as its status says."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return short(f"not scheduled: {condition.get('reason')}: {condition.get('message') or ''}")
    waiting = (_container(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        return short(f"waiting: {waiting['reason']}")
    return f"phase {status.get('phase') or 'Pending'}"


def _json_of(output: str) -> Any:
    try:
        return json.loads(output)
    except ValueError:
        lines = [line for line in output.splitlines() if line.strip()]
        if not lines:
            raise ProbeError("the command printed nothing") from None
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise ProbeError(f"the command printed no JSON: {excerpt(lines[-1])!r}") from None


def judge(spec: CmdProbe, exit_code: int, output: str) -> tuple[bool, str]:
    """Pure: whether the command's end passes the probe, and what the sample reports (bounded)."""
    if exit_code != spec.expectedExitCode:
        last = output.strip().splitlines()[-1:] or [""]
        said = f": {excerpt(last[0])!r}" if last[0] else ""
        return False, f"exit code {exit_code}, want {spec.expectedExitCode}{said}"
    if spec.stdoutRegex and not re.search(spec.stdoutRegex, output):
        return False, f"output does not match {excerpt(spec.stdoutRegex)!r}: {excerpt(output.strip())!r}"
    if spec.jsonPath:
        try:
            document = _json_of(output)
        except ProbeError as exc:
            return False, str(exc)
        try:
            actual = lookup(document, spec.jsonPath.removeprefix("$"))
        except KeyError:
            return False, f"no JSON value at {spec.jsonPath}"
        try:
            ok = compare(actual, spec.operator, spec.value)
        except ProbeError:
            return False, f"{spec.jsonPath}={excerpt(actual)} cannot be compared {spec.operator} {spec.value}"
        if not ok:
            return False, f"{spec.jsonPath}={excerpt(actual)}, want {spec.operator} {spec.value}"
        return True, f"exit code {exit_code}, {spec.jsonPath}={excerpt(actual)}"
    return True, f"exit code {exit_code}"


def namespace_refusal(namespace: str, protected: frozenset[str]) -> ProbeRefused | None:
    """Pure: why no probe Pod may be created in ``namespace`` whatever its labels (a protected namespace)."""
    if namespace in protected:
        return ProbeRefused("cmd", f"namespace {namespace!r} (the scenario's) is protected: no probe Pod runs there")
    return None


NamespaceCheck = Callable[[str], Awaitable[tuple[bool, str]]]


async def sample(
    client: KubeApi,
    spec: CmdProbe,
    probe_name: str,
    namespace: str,
    limit_seconds: float,
    *,
    allowed: NamespaceCheck,
    protected: frozenset[str],
    run: RunOwner | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> Sample:
    """One run of the command. ProbeRefused (not a failed sample) when the namespace may not hold probe Pods."""
    refused = namespace_refusal(namespace, protected)
    if refused is not None:
        raise refused
    ok_namespace, why = await allowed(namespace)
    if not ok_namespace:
        raise ProbeRefused("cmd", f"no probe Pod may run in the scenario's namespace: {why}")
    started = time.time()
    clock = time.perf_counter()
    pods = resource_path("Pod", namespace)
    try:
        created = await client.create(pods, pod_body(spec, probe_name, namespace, limit_seconds, run))
    except ApiError as exc:
        return Sample(ok=False, at=started, error=short(f"cannot create the probe Pod: {exc}"))
    name = created["metadata"]["name"]
    try:
        return await _follow(client, spec, namespace, name, limit_seconds, started, clock, poll_seconds)
    finally:
        await _delete(client, resource_path("Pod", namespace, name))


async def _follow(
    client: KubeApi,
    spec: CmdProbe,
    namespace: str,
    name: str,
    limit_seconds: float,
    started: float,
    clock: float,
    poll_seconds: float,
) -> Sample:
    path = resource_path("Pod", namespace, name)
    deadline = clock + limit_seconds
    while True:
        try:
            pod = await client.get(path)
        except ApiError as exc:
            return Sample(ok=False, at=started, error=short(f"probe Pod {name}: {exc}"))
        state = outcome(pod)
        if state.failure is not None:
            return Sample(ok=False, at=started, error=f"probe Pod {name}: {state.failure}")
        if state.exit_code is not None:
            latency = (time.perf_counter() - clock) * 1000
            output = await _output(client, path)
            ok, observed = judge(spec, state.exit_code, output)
            return Sample(ok=ok, at=started, value=observed, error=None if ok else observed, latency_ms=latency)
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            why = pending_reason(pod)
            return Sample(
                ok=False,
                at=started,
                error=short(f"probe Pod {name}: no end within {limit_seconds:g}s ({why})"),
                latency_ms=limit_seconds * 1000,
            )
        await asyncio.sleep(min(poll_seconds, remaining))


async def _output(client: KubeApi, path: str) -> str:
    try:
        return await client.get_text(f"{path}/log", {"container": CONTAINER, "limitBytes": MAX_OUTPUT_BYTES})
    except ApiError:
        return ""  # the exit code still judges; a check on the output then fails on empty output


async def _delete(client: KubeApi, path: str) -> None:
    # A Pod that cannot be deleted now is still collected: its activeDeadlineSeconds ends it, and its owner's
    # deletion (the TestRun's) removes it; failing the sample for it would blame the system under test.
    with contextlib.suppress(ApiError):
        await client.delete(path, {"gracePeriodSeconds": 0, "propagationPolicy": "Background"})
