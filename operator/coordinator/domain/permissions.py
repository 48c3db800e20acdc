"""What a scenario makes the operator do, as the rights its requester must hold (pure).

The operator's ServiceAccount may do far more than most of the people who create scenarios, so a run acts only
with its requester's rights (docs/security.md). ``scenario_needs`` lists every verb on every resource that a
rendered scenario's target selection, faults, k8s probes and cmd probes use, in every namespace they use it, or at the
cluster scope; engine/authorization.py asks the API server, by SubjectAccessReview, whether the requester may do
each, and words each refusal as Kubernetes' RBAC errors do (``refusal_message``).

A fault's rights come from its declaration (``FaultDeclaration.rights`` in api/models.py), so a new fault type
declares its own; nothing here lists the fault types again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from coordinator.api.models import (
    GROUP,
    ChaosScenarioSpec,
    FaultBase,
    FaultDeclaration,
    Right,
    TargetKind,
    declaration_of,
)
from coordinator.api.notifications import Notification
from coordinator.api.probes import ProbeType
from coordinator.domain.parameters import REFERENCE
from coordinator.domain.resources import CLUSTER_SCOPED_KINDS, group_of, plural

# The API group and resource of each target kind.
TARGET_RESOURCES: dict[str, tuple[str, str]] = {
    TargetKind.POD: ("", "pods"),
    TargetKind.DEPLOYMENT: ("apps", "deployments"),
    TargetKind.STATEFULSET: ("apps", "statefulsets"),
    TargetKind.DAEMONSET: ("apps", "daemonsets"),
    TargetKind.NODE: ("", "nodes"),
}
if set(TARGET_RESOURCES) != set(TargetKind):  # a new target kind needs its resource here
    raise ImportError("TARGET_RESOURCES must name the resource of every TargetKind")

SELECTION = "target selection"
NODE_TARGETING_SETTING = "COORDINATOR_NODE_TARGETING"

# verb, group, resource, subresource, namespace (None: cluster)[, name: the access to that one object only]
Access = tuple[str, str, str, str, str | None] | tuple[str, str, str, str, str | None, str]


@dataclass(frozen=True)
class Need:
    """One thing a run does with the operator's rights, which its requester must be allowed to do."""

    verb: str
    group: str  # "" for the core group
    resource: str  # the plural: pods, deployments, nodes
    subresource: str  # "" or e.g. scale, eviction, ephemeralcontainers
    namespace: str | None  # None: at the cluster scope
    needed_by: str  # what needs it: a fault type, "probe <name>", "target selection", a field
    name: str = ""  # one object by name (a notification's Secret), or "" for any

    @property
    def access(self) -> Access:
        """The need without who needs it: what one SubjectAccessReview asks."""
        if self.name:
            return (self.verb, self.group, self.resource, self.subresource, self.namespace, self.name)
        return (self.verb, self.group, self.resource, self.subresource, self.namespace)


def access_name(access: Access) -> str:
    """The one object ``access`` is limited to, or "" for any."""
    return access[5] if len(access) > 5 else ""


def notification_needs(notifications: Sequence[Notification], namespace: str, owner: str = "spec") -> list[Need]:
    """Reading each notification's Secret (``urlFrom.secretKeyRef``) in the scenario's or workflow's namespace:
    the operator reads it with its own rights, so the requester must be allowed to get that Secret."""
    return [
        Need("get", "", "secrets", "", namespace, f"{owner}.notifications[{index}].urlFrom", ref.name)
        for index, notification in enumerate(notifications)
        if notification.urlFrom is not None
        for ref in [notification.urlFrom.secretKeyRef]
    ]


def scenario_read_need(namespace: str) -> Need:
    """Reading the scenario of a run in another namespace (``spec.scenarioRef.namespace``)."""
    return Need("get", GROUP, "chaosscenarios", "", namespace, "spec.scenarioRef")


def _option(declaration: FaultDeclaration[Any], fault: FaultBase, name: str) -> bool:
    options = declaration.options_of(fault) or declaration.options.model_construct()  # omitted: the defaults
    return bool(getattr(options, name))


def _fault_needs(right: Right, target: tuple[str, str], namespaces: Sequence[str | None], needed_by: str) -> list[Need]:
    group, resource = (right.group, right.resource) if right.resource is not None else target
    scopes: Sequence[str | None] = [None] if right.cluster_scope else namespaces
    return [Need(right.verb, group, resource, right.subresource, ns, needed_by) for ns in scopes]


def target_namespaces(spec: ChaosScenarioSpec, scenario_namespace: str) -> list[str | None]:
    """Where the scenario's targets are selected: ``spec.target.namespaces`` (the scenario's own namespace when
    empty), or the cluster scope ([None]) for a cluster-scoped kind (Node), which ignores namespaces."""
    if str(spec.target.kind) in CLUSTER_SCOPED_KINDS:
        return [None]
    return list(dict.fromkeys(spec.target.namespaces or [scenario_namespace]))


def scenario_needs(spec: ChaosScenarioSpec, scenario_namespace: str) -> list[Need]:
    """Every right a run of the *rendered* scenario ``spec`` uses (its parameters filled in: a namespace may be a
    parameter; ValueError while one is not), in the scenario's order; the same access may be needed by several
    parts.

    - Selection lists the target kind in each target namespace (Nodes at the cluster scope).
    - Each fault needs its declared rights (``FaultDeclaration.rights``) on the target kind in each target
      namespace, or at the cluster scope where it acts in any namespace (node-drain's evictions).
    - Each k8s probe reads its kind in its namespace (the scenario's when omitted): ``get`` one object by name,
      else ``list``.
    - Each cmd probe creates a Pod in the scenario's namespace for each sample: ``create pods`` there.
    """
    kind = str(spec.target.kind)
    target = TARGET_RESOURCES[kind]
    namespaces = target_namespaces(spec, scenario_namespace)
    needs = [Need("list", target[0], target[1], "", ns, SELECTION) for ns in namespaces]
    for step in spec.steps:
        for fault in step.faults:
            declaration = declaration_of(fault.type)
            for right in declaration.rights:
                if right.when and not _option(declaration, fault, right.when):
                    continue
                needs += _fault_needs(right, target, namespaces, str(fault.type))
    for probe in spec.steadyState.probes if spec.steadyState else []:
        if probe.type == ProbeType.CMD and probe.cmd is not None:
            needs.append(Need("create", "", "pods", "", scenario_namespace, f"probe {probe.name}"))
            continue
        if probe.type != ProbeType.K8S or probe.k8s is None:
            continue
        k8s = probe.k8s
        namespace = None if k8s.kind in CLUSTER_SCOPED_KINDS else (k8s.namespace or scenario_namespace)
        verb = "get" if k8s.name and not k8s.count else "list"
        needs.append(Need(verb, group_of(k8s.apiVersion), plural(k8s.kind), "", namespace, f"probe {probe.name}"))
    needs += notification_needs(spec.notifications, scenario_namespace)
    unrendered = sorted({n.namespace or n.resource for n in needs if REFERENCE.search(f"{n.namespace} {n.resource}")})
    if unrendered:  # a right on "{{ params.ns }}" would be asked of the API server and mean nothing
        raise ValueError(f"render the scenario's parameters before asking what it needs: {', '.join(unrendered)}")
    return needs


def distinct(needs: Iterable[Need]) -> dict[Access, list[str]]:
    """Each access once, in the order first needed, with everything that needs it (each named once)."""
    grouped: dict[Access, list[str]] = {}
    for need in needs:
        users = grouped.setdefault(need.access, [])
        if need.needed_by not in users:
            users.append(need.needed_by)
    return grouped


def refusal_message(subject: str, access: Access, needed_by: Sequence[str]) -> str:
    """A refused access in the words of Kubernetes' RBAC errors, with what needed it:
    ``alice cannot patch resource "nodes" at the cluster scope (needed by node-drain)``,
    ``alice cannot patch resource "deployments/scale" in API group "apps" in the namespace "shop" (needed by scale)``.
    """
    verb, group, resource, subresource, namespace = access[:5]
    name = f"{resource}/{subresource}" if subresource else resource
    in_group = f' in API group "{group}"' if group else ""
    where = "at the cluster scope" if namespace is None else f'in the namespace "{namespace}"'
    named = f' named "{access_name(access)}"' if access_name(access) else ""
    return f'{subject} cannot {verb} resource "{name}"{named}{in_group} {where} (needed by {", ".join(needed_by)})'


def node_targeting_refusal(spec: ChaosScenarioSpec, enabled: bool) -> str | None:
    """Why the scenario may not run while Node targets are off (``COORDINATOR_NODE_TARGETING``), or None."""
    if enabled or spec.target.kind != TargetKind.NODE:
        return None
    faults = [
        f"spec.steps[{index}].faults[{f_index}] ({fault.type})"
        for index, step in enumerate(spec.steps)
        for f_index, fault in enumerate(step.faults)
    ]
    return (
        f"spec.target.kind: Node targets are turned off in this operator ({', '.join(faults)}): a cluster "
        f"admin turns them on with {NODE_TARGETING_SETTING}=true"
    )
