"""The interface every fault implements, and the bookkeeping they share.

A fault is three steps, each idempotent so a restarted operator can repeat any of them safely:

* ``plan`` (pure): which changes to which objects, with what to restore, as ``Injection`` ledger entries;
* ``apply``: make one change. The executor has already written the entry to the TestRun's status and the record
  annotation onto the target (``record_on_target``) before it calls ``apply``;
* ``revert``: undo one change from the entry alone (the sweep reverts from the target's annotation, with no run).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from coordinator.adapters.kube import JSON, ApiError, KubeApi, resource_path
from coordinator.api.models import Fault, FaultDeclaration, FaultType, Injection, InjectionState, TargetRef
from coordinator.domain.timestamps import now_iso

T = TypeVar("T")

ANNOTATION_PREFIX = "chaos.coordinator.dev/injection-"
INJECTED_LABEL = "chaos.coordinator.dev/injected"


class FaultError(Exception):
    """A fault cannot be planned or applied; the message names the target and the reason."""


class ProtectedTargetError(FaultError):
    """A write to a protected namespace was attempted. Never retried, never applied."""


@dataclass(frozen=True)
class RunIdentity:
    """The TestRun a change belongs to, as written into each target's record annotation."""

    namespace: str
    name: str
    uid: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class PlannedTarget:
    """A selected target and the object as it was read at selection time."""

    ref: TargetRef
    obj: Mapping[str, Any]


@dataclass
class FaultContext:
    client: KubeApi
    run: RunIdentity
    protected: frozenset[str]
    step_index: int = 0
    notes: list[str] = field(default_factory=list)  # things worth telling the user in the step message
    # Whether a namespace may be touched (protected? opted in?), for faults that reach beyond their targets.
    namespace_policy: Callable[[str], Awaitable[tuple[bool, str]]] | None = None
    step_duration: float | None = None  # seconds, for faults that hold themselves (in-pod agents)
    agent_image: str | None = None  # image of the in-pod fault agent
    # How long an in-pod agent may take to start and confirm its fault before the fault counts as not applied.
    agent_start_timeout: float = 30.0
    agent_poll_interval: float = 0.5

    async def may_touch(self, namespace: str) -> bool:
        if namespace in self.protected:
            return False
        if self.namespace_policy is None:
            return True
        allowed, _ = await self.namespace_policy(namespace)
        return allowed

    def guard(self, target: TargetRef) -> None:
        """The last line of defence: nothing is written into a protected namespace, whatever selected it."""
        if target.namespace and target.namespace in self.protected:
            raise ProtectedTargetError(
                f"refusing to touch {target.kind} {target.namespace}/{target.name}: namespace is protected"
            )


def injection_id(step: int, fault_index: int, fault: str, target: TargetRef) -> str:
    where = f"{target.namespace}/{target.name}" if target.namespace else target.name
    return f"{step}.{fault_index}/{fault}/{target.kind}/{where}"


def annotation_key(run_uid: str, inj_id: str) -> str:
    digest = hashlib.sha256(inj_id.encode()).hexdigest()[:10]
    return f"{ANNOTATION_PREFIX}{run_uid[:8]}-{digest}"


def new_injection(
    step: int, fault_index: int, fault: FaultType | str, target: TargetRef, original: Mapping[str, Any] | None
) -> Injection:
    return Injection(
        id=injection_id(step, fault_index, str(fault), target),
        step=step,
        faultIndex=fault_index,
        fault=FaultType(fault),
        target=target,
        state=InjectionState.RECORDED,
        original=json.dumps(dict(original), sort_keys=True) if original is not None else None,
    )


def original_of(injection: Injection) -> dict[str, Any]:
    return dict(json.loads(injection.original)) if injection.original else {}


def target_path(target: TargetRef, subresource: str = "") -> str:
    return resource_path(target.kind, target.namespace, target.name, subresource)


def record_payload(run: RunIdentity, injection: Injection) -> str:
    """The annotation value: enough to revert the change with no TestRun at hand."""
    return json.dumps(
        {
            "run": run.ref,
            "runUid": run.uid,
            "id": injection.id,
            "fault": str(injection.fault),
            "original": injection.original,
        },
        sort_keys=True,
    )


async def record_on_target(ctx: FaultContext, injection: Injection) -> None:
    """Annotate the target with the change about to be made (and label it so sweeps find it cheaply)."""
    ctx.guard(injection.target)
    key = annotation_key(ctx.run.uid, injection.id)
    body = {
        "metadata": {
            "annotations": {key: record_payload(ctx.run, injection)},
            "labels": {INJECTED_LABEL: "true"},
        }
    }
    await ctx.client.patch(target_path(injection.target), body)


CLAIM_ATTEMPTS = 5  # compare-and-swap rounds before a busy target counts as a transient conflict


class TargetHeld(Exception):
    """Another run's change is recorded on the target: this run may not change it now (it waits)."""

    def __init__(self, target: TargetRef, holder: str) -> None:
        where = f"{target.namespace}/{target.name}" if target.namespace else target.name
        super().__init__(f"{target.kind} {where} carries a change of TestRun {holder}")
        self.target = target
        self.holder = holder


def parsed_records(obj: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every record annotation on an object as (key, its JSON value), None where the value is not JSON."""
    found: list[tuple[str, Any]] = []
    for key, value in (obj.get("metadata", {}).get("annotations") or {}).items():
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        try:
            found.append((key, json.loads(value)))
        except (ValueError, TypeError):
            found.append((key, None))
    return found


def records_on(obj: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The record annotations on an object that can be read (key, record), in the order they were recorded
    (records from before ``recordedAt`` existed come first)."""
    found = [
        (key, record)
        for key, record in parsed_records(obj)
        if isinstance(record, dict) and isinstance(record.get("runUid"), str)
    ]
    return sorted(found, key=lambda item: str(item[1].get("recordedAt") or ""))


def first_original(records: Sequence[tuple[str, Mapping[str, Any]]], fault: str) -> str | None:
    """The original that the first record of ``fault`` on the target holds: what was there before any run."""
    for _, record in records:
        if record.get("fault") == fault and isinstance(record.get("original"), str):
            return str(record["original"])
    return None


async def claim_target(
    ctx: FaultContext,
    injection: Injection,
    original_from: Callable[[Mapping[str, Any]], Mapping[str, Any] | None],
    exclusive: bool = True,
) -> None:
    """Write the change's record onto the target as a compare-and-swap on its resourceVersion: the record
    annotations on a target are then a lock that the API server keeps, whatever happened to the lock store.

    * ``exclusive``: a record of another run on the target refuses the claim (``TargetHeld``); the run waits.
    * What the revert restores is what the target held before any run changed it: the original of the first
      record of the same fault on the target (this run's own, after a resume; another's, where concurrent
      runs are allowed), else ``original_from`` the object as read now, not as it was read at planning.
    """
    ctx.guard(injection.target)
    key = annotation_key(ctx.run.uid, injection.id)
    for _attempt in range(CLAIM_ATTEMPTS):
        obj = await ctx.client.get(target_path(injection.target))
        records = records_on(obj)
        foreign = [record for _, record in records if record.get("runUid") != ctx.run.uid]
        if exclusive and foreign:
            raise TargetHeld(injection.target, str(foreign[0].get("run") or foreign[0].get("runUid")))
        own = dict(records).get(key)
        first = first_original(records, str(injection.fault))
        if first is not None:
            injection.original = first
        elif injection.original is not None:
            fresh = original_from(obj)
            if fresh is not None:
                injection.original = json.dumps(dict(fresh), sort_keys=True)
        recorded_at = own.get("recordedAt") if own else None
        payload = json.loads(record_payload(ctx.run, injection))
        payload["recordedAt"] = recorded_at or now_iso()
        body = {
            "metadata": {
                "resourceVersion": obj.get("metadata", {}).get("resourceVersion"),
                "annotations": {key: json.dumps(payload, sort_keys=True)},
                "labels": {INJECTED_LABEL: "true"},
            }
        }
        try:
            await ctx.client.patch(target_path(injection.target), body)
            return
        except ApiError as exc:
            if not exc.conflict:
                raise
    raise ApiError(409, "Conflict", f"{injection.target.kind} {injection.target.name} changed {CLAIM_ATTEMPTS} times")


async def clear_on_target(client: KubeApi, target: TargetRef, key: str) -> None:
    """Remove a record annotation, and the label once no record is left. A vanished target is fine."""
    obj = await unless_gone(client.get(target_path(target)))
    if obj is None:
        return
    annotations: dict[str, str] = obj.get("metadata", {}).get("annotations") or {}
    remaining = [k for k in annotations if k.startswith(ANNOTATION_PREFIX) and k != key]
    metadata: dict[str, Any] = {"annotations": {key: None}}
    if not remaining:
        metadata["labels"] = {INJECTED_LABEL: None}
    await unless_gone(client.patch(target_path(target), {"metadata": metadata}))
    if target.kind == "Deployment":
        await clear_on_replicasets(client, target, obj, key)


async def clear_on_replicasets(client: KubeApi, deployment: TargetRef, obj: Mapping[str, Any], key: str) -> None:
    """The Deployment controller copies a Deployment's annotations onto its ReplicaSets and never removes them:
    remove the record from each ReplicaSet the Deployment owns, once it is gone from the Deployment itself."""
    uid = obj.get("metadata", {}).get("uid")
    if not uid:
        return
    match = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match.items())) or None
    listed = await client.list(resource_path("ReplicaSet", deployment.namespace), label_selector=selector)
    for rs in listed:
        meta = rs.get("metadata", {})
        owned = any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])
        if not owned or key not in (meta.get("annotations") or {}):
            continue
        await unless_gone(
            client.patch(
                resource_path("ReplicaSet", deployment.namespace, meta["name"]),
                {"metadata": {"annotations": {key: None}}},
            )
        )


class FaultDriver(ABC):
    """Base class of the fault modules: a subclass names its ``declaration`` (coordinator.api.models, which says
    the type, its options and the target kinds it acts on) and implements what to restore, apply and revert."""

    declaration: FaultDeclaration[Any]
    reversible: ClassVar[bool] = True
    # Whether ``plan`` reads the selected objects (``PlannedTarget.obj``, e.g. for ``original``). A step whose
    # faults read none of them lists its pods as metadata only (engine/targets.py).
    reads_targets: ClassVar[bool] = True

    @property
    def type(self) -> FaultType:
        return FaultType(self.declaration.type)

    @property
    def kinds(self) -> frozenset[str]:
        """The target kinds this fault acts on (spec.target.kind must be one of them)."""
        return self.declaration.kinds

    def options(self, fault: Fault) -> Any:
        return self.declaration.options_of(fault)

    def plan(
        self, step: int, fault_index: int, fault: Fault, targets: Sequence[PlannedTarget], run: RunIdentity
    ) -> list[Injection]:
        """Pure: one ledger entry per change. The default is one change per target, restoring ``original``."""
        return [new_injection(step, fault_index, self.type, t.ref, self.original(fault, t.obj)) for t in targets]

    def creates_object(self, injection: Injection) -> bool:
        """True when apply creates the target (which then carries its own record annotation)."""
        return False

    @abstractmethod
    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """What to put back afterwards; None for changes that cannot be undone."""

    @abstractmethod
    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        """Make the change; return Applied, or Irreversible for changes that need no revert."""

    @abstractmethod
    async def revert(self, client: KubeApi, injection: Injection) -> None:
        """Undo the change from the ledger entry alone; a target that is gone counts as reverted (``unless_gone``)."""


async def unless_gone(call: Awaitable[T]) -> T | None:
    """The result of one API call of a revert or a cleanup, or None when its object is gone (404): a change
    made to an object that no longer exists went with it, so there is nothing left to undo."""
    try:
        return await call
    except ApiError as exc:
        if exc.not_found:
            return None
        raise


def container_names(obj: Mapping[str, Any]) -> list[str]:
    return [c["name"] for c in obj.get("spec", {}).get("containers", [])]


def json_obj(value: Any) -> JSON:
    return dict(value) if isinstance(value, Mapping) else {}
