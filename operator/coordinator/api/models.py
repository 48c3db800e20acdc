"""The ChaosScenario and TestRun resources as pydantic models: the one source of truth.

The CRDs in ``crds/`` are generated from these classes (``coordinator crds``); field descriptions become
``kubectl explain`` text, so they are written for users. Field names are the camelCase names users write in YAML.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, TypeVar, cast

from pydantic import ConfigDict, Field, ValidationInfo, WithJsonSchema, create_model, field_validator, model_validator

from coordinator.api.base import (  # re-exported: models is the API's entry point
    API_VERSION as API_VERSION,
)
from coordinator.api.base import (
    DNS_LABEL_PATTERN as DNS_LABEL_PATTERN,
)
from coordinator.api.base import (
    DNS_SUBDOMAIN_PATTERN as DNS_SUBDOMAIN_PATTERN,
)
from coordinator.api.base import (
    DURATION_PATTERN as DURATION_PATTERN,
)
from coordinator.api.base import (
    FINALIZER as FINALIZER,
)
from coordinator.api.base import (
    GROUP as GROUP,
)
from coordinator.api.base import (
    MAX_RUN_TIMEOUT,
    MAX_STEP_DURATION,
    CelRule,
    Cidr,
    RunTimeout,
    Timestamp,
    duration_check,
    duration_field,
    unique_names,
)
from coordinator.api.base import (
    PARAM_REFERENCE as PARAM_REFERENCE,
)
from coordinator.api.base import (
    VERSION as VERSION,
)
from coordinator.api.base import (
    ConcurrencyPolicy as ConcurrencyPolicy,
)
from coordinator.api.base import (
    Duration as Duration,
)
from coordinator.api.base import (
    LabelSelector as LabelSelector,
)
from coordinator.api.base import (
    LabelSelectorRequirement as LabelSelectorRequirement,
)
from coordinator.api.base import (
    Model as Model,
)
from coordinator.api.base import (
    SelectorOperator as SelectorOperator,
)
from coordinator.api.base import (
    templatable as templatable,
)
from coordinator.api.dns_fault import DnsFaultOptions
from coordinator.api.durations import parse_duration
from coordinator.api.http_fault import HttpFaultOptions
from coordinator.api.inpod import (
    ClockSkewOptions,
    ContainerKillOptions,
    CpuStressOptions,
    IoStressOptions,
    MemoryStressOptions,
    NetworkBandwidthOptions,
    NetworkDelayOptions,
    NetworkPercentOptions,
)
from coordinator.api.notifications import NotificationRecord, Notifications
from coordinator.api.probes import Assertion, AssertionResult, ProbeResult, SteadyState
from coordinator.api.triggers import Triggers, TriggerStatus

# --- parameter references ------------------------------------------------------------------------------------


def _int_or_reference(minimum: int, maximum: int) -> WithJsonSchema:
    # JSON-schema semantics: the bounds apply to an integer, the pattern to a string.
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "minimum": minimum,
            "maximum": maximum,
            "pattern": f"^{PARAM_REFERENCE}$",
        }
    )


# Integer fields that may hold one parameter reference: int-or-string in the CRD, int once rendered.
SelectionValue = Annotated[int, Field(ge=1, le=100000), _int_or_reference(1, 100000)]
ReplicaCount = Annotated[int, Field(ge=0, le=10000), _int_or_reference(0, 10000)]
ReplicaPercent = Annotated[int, Field(ge=0, le=1000), _int_or_reference(0, 1000)]
StepDuration = Annotated[
    str,
    duration_field(MAX_STEP_DURATION, templated=True),
    duration_check(MAX_STEP_DURATION, templated=True),
]

# --- target selection ----------------------------------------------------------------------------------------


class TargetKind(StrEnum):
    POD = "Pod"
    DEPLOYMENT = "Deployment"
    STATEFULSET = "StatefulSet"
    DAEMONSET = "DaemonSet"
    NODE = "Node"


class SelectionMode(StrEnum):
    ONE = "one"
    ALL = "all"
    FIXED = "fixed"
    FIXED_PERCENT = "fixed-percent"
    RANDOM_MAX_PERCENT = "random-max-percent"


# The field selector grammar of the API server (terms split at unescaped commas, each a key, the first of !=, == or
# =, and a value in which \\, \, and \= are the only escapes), with keys limited to the characters of a field label:
# a selector the API server could never accept is refused at admission rather than when a run lists its targets.
_FIELD_SELECTOR_TERM = r"[A-Za-z0-9_./-]+(==|!=|=)([^,=\\]|\\[\\,=])*"
FIELD_SELECTOR_PATTERN = rf"^({_FIELD_SELECTOR_TERM})?(,({_FIELD_SELECTOR_TERM})?)*$"


class Target(Model):
    kind: TargetKind = Field(
        default=TargetKind.POD,
        description="What the faults act on: Pod, Deployment, StatefulSet, DaemonSet or Node.",
    )
    namespaces: list[Annotated[str, Field(pattern=templatable(DNS_LABEL_PATTERN), max_length=63)]] = Field(
        default_factory=list,
        description=(
            "Namespaces to select from; empty means the ChaosScenario's own namespace. Ignored for Node targets. "
            "A namespace must carry the label chaos.coordinator.dev/allow=true unless the operator allows "
            "cluster-wide targeting; protected namespaces are never touched."
        ),
    )
    labelSelector: LabelSelector | None = Field(
        default=None, description="Label query over the targets; all of the target kind when omitted."
    )
    fieldSelector: str | None = Field(
        default=None,
        max_length=1024,
        pattern=templatable(FIELD_SELECTOR_PATTERN),
        description=(
            "A Kubernetes field selector passed to the API server, e.g. spec.nodeName=node-1: terms key=value, "
            "key==value or key!=value separated by commas (a backslash escapes \\, ',' and '=' in a value). Which "
            "keys a kind supports is the API server's to say when the run lists its targets."
        ),
    )
    annotationSelector: dict[str, str] = Field(
        default_factory=dict, description="Annotations a target must carry, with these exact values."
    )
    names: list[Annotated[str, Field(pattern=templatable(DNS_SUBDOMAIN_PATTERN), max_length=253)]] = Field(
        default_factory=list, description="Explicit target names; only these are candidates when given."
    )


# --- faults --------------------------------------------------------------------------------------------------


class FaultType(StrEnum):
    POD_KILL = "pod-kill"
    POD_FAILURE = "pod-failure"
    ROLLOUT_RESTART = "rollout-restart"
    SCALE = "scale"
    NODE_CORDON = "node-cordon"
    NODE_DRAIN = "node-drain"
    NETWORK_PARTITION = "network-partition"
    NETWORK_DELAY = "network-delay"
    NETWORK_LOSS = "network-loss"
    NETWORK_DUPLICATE = "network-duplicate"
    NETWORK_CORRUPT = "network-corrupt"
    NETWORK_BANDWIDTH = "network-bandwidth"
    CPU_STRESS = "cpu-stress"
    MEMORY_STRESS = "memory-stress"
    IO_STRESS = "io-stress"
    CONTAINER_KILL = "container-kill"
    CLOCK_SKEW = "clock-skew"
    DNS_FAULT = "dns-fault"
    HTTP_FAULT = "http-fault"


class PodKillOptions(Model):
    gracePeriodSeconds: int = Field(
        default=0, ge=0, le=3600, description="Grace period of the pod deletion; 0 kills at once."
    )


class PodFailureOptions(Model):
    image: str = Field(
        default="coordinator.invalid/pod-failure:unstartable",
        min_length=1,
        max_length=512,
        description=(
            "The image swapped into every container for the step's duration. The default names a reserved, "
            "unresolvable domain, so the containers cannot start; the original images are restored afterwards."
        ),
    )
    containerNames: list[str] = Field(
        default_factory=list, description="Containers to break; all containers of the pod when empty."
    )


class RolloutRestartOptions(Model):
    pass


class ScaleOptions(Model):
    replicas: ReplicaCount | None = Field(default=None, description="Scale the workload to this many replicas.")
    percent: ReplicaPercent | None = Field(
        default=None,
        description="Scale to this percentage of the current replicas (rounded down).",
    )

    cel_rules = (("has(self.replicas) != has(self.percent)", "exactly one of replicas or percent must be set"),)


class NodeCordonOptions(Model):
    pass


class NodeDrainOptions(Model):
    ignorePodDisruptionBudgets: bool = Field(
        default=False,
        description="Delete pods instead of evicting them, so PodDisruptionBudgets cannot block the drain.",
    )
    gracePeriodSeconds: int | None = Field(
        default=None, ge=0, le=3600, description="Grace period for evicted pods; the pod's own when omitted."
    )


class NetworkPartitionDirection(StrEnum):
    BOTH = "both"
    INGRESS = "ingress"
    EGRESS = "egress"


class NetworkPeer(Model):
    podSelector: LabelSelector | None = Field(default=None, description="Pods (in namespaceSelector's namespaces).")
    namespaceSelector: LabelSelector | None = Field(default=None, description="Namespaces whose pods are peers.")
    cidr: Cidr | None = Field(default=None, description="An IP block in CIDR notation, e.g. 10.0.0.0/16.")

    cel_rules = (
        (
            "has(self.podSelector) || has(self.namespaceSelector) || has(self.cidr)",
            "a peer needs podSelector, namespaceSelector or cidr",
        ),
        (
            "!has(self.cidr) || (!has(self.podSelector) && !has(self.namespaceSelector))",
            "cidr cannot be combined with podSelector or namespaceSelector",
        ),
    )


class NetworkPartitionOptions(Model):
    direction: NetworkPartitionDirection = Field(
        default=NetworkPartitionDirection.BOTH,
        description="Which traffic is cut: ingress, egress or both.",
    )
    allowedPeers: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Peers the targets may still reach (and be reached by) during the partition, e.g. DNS. "
            "Everything else is cut. Enforced by the cluster's NetworkPolicy implementation."
        ),
    )


OptionsT = TypeVar("OptionsT", bound=Model)


@dataclass(frozen=True)
class Right:
    """One verb a fault makes the operator use, which the run's requester must hold too: a run acts only with its
    requester's rights (coordinator.domain.permissions collects them; a SubjectAccessReview checks each).

    ``resource`` None means the target kind's own resource (pods, deployments, nodes, ...; ``group`` is then the
    target kind's group). The right is needed in every target namespace, or at the cluster scope when
    ``cluster_scope`` is set or the target kind is cluster-scoped (Node). ``when`` names a boolean option of the
    fault without which the right is not needed (node-drain deletes pods only with ignorePodDisruptionBudgets).
    """

    verb: str
    resource: str | None = None
    group: str = ""
    subresource: str = ""
    cluster_scope: bool = False
    when: str = ""


@dataclass(frozen=True)
class FaultDeclaration(Generic[OptionsT]):
    """What the resources know of one fault type: the CRD field holding its options and their model, the target
    kinds it acts on, whether an in-pod agent runs it. ``FAULT_TYPES`` lists them; ``Fault``'s option fields, its
    CEL rules and the fault-vs-target-kind check derive from it, and the fault's driver (``coordinator.faults``)
    refers to its declaration. docs/adding-a-fault.md walks through adding one."""

    type: str
    option_field: str
    options: builtins.type[OptionsT]  # (``type`` is the field above)
    kinds: frozenset[str]
    note: str = ""  # said after the type in the option field's description: "Options for scale (required ...)."
    options_required: bool = False  # the options object must be given (its model has required fields, or a rule)
    in_pod: bool = False  # run by the in-pod agent (coordinator.faults.ephemeral)
    # What the fault makes the operator do, which the run's requester must be allowed to do (docs/security.md).
    rights: tuple[Right, ...] = ()

    @property
    def description(self) -> str:
        return f"Options for {self.type}{f' ({self.note})' if self.note else ''}."

    def options_of(self, fault: FaultBase) -> OptionsT | None:
        """This type's options as the fault gives them (None when omitted)."""
        return cast("OptionsT | None", getattr(fault, self.option_field))


POD_KILL = FaultDeclaration(
    FaultType.POD_KILL, "podKill", PodKillOptions, frozenset({TargetKind.POD}), rights=(Right("delete"),)
)
POD_FAILURE = FaultDeclaration(
    FaultType.POD_FAILURE, "podFailure", PodFailureOptions, frozenset({TargetKind.POD}), rights=(Right("patch"),)
)
ROLLOUT_RESTART = FaultDeclaration(
    FaultType.ROLLOUT_RESTART,
    "rolloutRestart",
    RolloutRestartOptions,
    frozenset({TargetKind.DEPLOYMENT, TargetKind.STATEFULSET, TargetKind.DAEMONSET}),
    rights=(Right("patch"),),
)
SCALE = FaultDeclaration(
    FaultType.SCALE,
    "scale",
    ScaleOptions,
    frozenset({TargetKind.DEPLOYMENT, TargetKind.STATEFULSET}),
    note="required for scale",
    options_required=True,
    rights=(Right("patch", subresource="scale"),),
)
NODE_CORDON = FaultDeclaration(
    FaultType.NODE_CORDON, "nodeCordon", NodeCordonOptions, frozenset({TargetKind.NODE}), rights=(Right("patch"),)
)
NODE_DRAIN = FaultDeclaration(
    FaultType.NODE_DRAIN,
    "nodeDrain",
    NodeDrainOptions,
    frozenset({TargetKind.NODE}),
    # A drain lists the node's pods and evicts (or deletes) them, whatever their namespace: cluster scope.
    rights=(
        Right("patch"),
        Right("list", "pods", cluster_scope=True),
        Right("create", "pods", subresource="eviction", cluster_scope=True),
        Right("delete", "pods", cluster_scope=True, when="ignorePodDisruptionBudgets"),
    ),
)
NETWORK_PARTITION = FaultDeclaration(
    FaultType.NETWORK_PARTITION,
    "networkPartition",
    NetworkPartitionOptions,
    frozenset({TargetKind.POD}),
    # The targets are labelled for the policy's podSelector; the policy is removed by the revert.
    rights=(
        Right("patch"),
        Right("create", "networkpolicies", "networking.k8s.io"),
        Right("delete", "networkpolicies", "networking.k8s.io"),
    ),
)


def _in_pod(
    fault_type: FaultType, field: str, options: builtins.type[OptionsT], note: str, *, required: bool
) -> FaultDeclaration[OptionsT]:
    return FaultDeclaration(
        fault_type,
        field,
        options,
        frozenset({TargetKind.POD}),
        note=note,
        options_required=required,
        in_pod=True,
        # The agent is an ephemeral container added to the target pod.
        rights=(Right("patch", subresource="ephemeralcontainers"),),
    )


NETWORK_DELAY = _in_pod(FaultType.NETWORK_DELAY, "networkDelay", NetworkDelayOptions, "netem", required=True)
NETWORK_LOSS = _in_pod(FaultType.NETWORK_LOSS, "networkLoss", NetworkPercentOptions, "nftables", required=True)
NETWORK_DUPLICATE = _in_pod(
    FaultType.NETWORK_DUPLICATE, "networkDuplicate", NetworkPercentOptions, "netem", required=True
)
NETWORK_CORRUPT = _in_pod(FaultType.NETWORK_CORRUPT, "networkCorrupt", NetworkPercentOptions, "netem", required=True)
NETWORK_BANDWIDTH = _in_pod(
    FaultType.NETWORK_BANDWIDTH, "networkBandwidth", NetworkBandwidthOptions, "tbf", required=True
)
CPU_STRESS = _in_pod(FaultType.CPU_STRESS, "cpuStress", CpuStressOptions, "stress-ng", required=False)
MEMORY_STRESS = _in_pod(FaultType.MEMORY_STRESS, "memoryStress", MemoryStressOptions, "stress-ng", required=False)
IO_STRESS = _in_pod(FaultType.IO_STRESS, "ioStress", IoStressOptions, "stress-ng", required=False)
CONTAINER_KILL = _in_pod(FaultType.CONTAINER_KILL, "containerKill", ContainerKillOptions, "", required=True)
CLOCK_SKEW = _in_pod(FaultType.CLOCK_SKEW, "clockSkew", ClockSkewOptions, "vDSO patch through ptrace", required=True)
DNS_FAULT = _in_pod(
    FaultType.DNS_FAULT, "dnsFault", DnsFaultOptions, "nftables and a resolver in the pod", required=True
)
HTTP_FAULT = _in_pod(FaultType.HTTP_FAULT, "httpFault", HttpFaultOptions, "a transparent HTTP/1.1 proxy", required=True)

# Every fault type, in FaultType's order (the order of Fault's fields and of the CRD's rules).
FAULT_TYPES: tuple[FaultDeclaration[Any], ...] = (
    POD_KILL,
    POD_FAILURE,
    ROLLOUT_RESTART,
    SCALE,
    NODE_CORDON,
    NODE_DRAIN,
    NETWORK_PARTITION,
    NETWORK_DELAY,
    NETWORK_LOSS,
    NETWORK_DUPLICATE,
    NETWORK_CORRUPT,
    NETWORK_BANDWIDTH,
    CPU_STRESS,
    MEMORY_STRESS,
    IO_STRESS,
    CONTAINER_KILL,
    CLOCK_SKEW,
    DNS_FAULT,
    HTTP_FAULT,
)
if [d.type for d in FAULT_TYPES] != list(FaultType):  # a newcomer's first hint, at import time
    raise ImportError("FAULT_TYPES must declare every FaultType once, in FaultType's order")
if not all(d.rights for d in FAULT_TYPES):  # a fault that declares no rights would borrow all of the operator's
    raise ImportError("every FAULT_TYPES declaration must name the rights its requester needs (rights=...)")
DECLARED: dict[str, FaultDeclaration[Any]] = {d.type: d for d in FAULT_TYPES}
INPOD_OPTION_FIELDS: dict[str, str] = {d.type: d.option_field for d in FAULT_TYPES if d.in_pod}


def declaration_of(fault_type: FaultType | str) -> FaultDeclaration[Any]:
    return DECLARED[str(fault_type)]


def option_fields(declarations: Sequence[FaultDeclaration[Any]]) -> dict[str, str]:
    """Fault type -> the field holding its options."""
    return {d.type: d.option_field for d in declarations}


def fault_cel_rules(declarations: Sequence[FaultDeclaration[Any]]) -> tuple[CelRule, ...]:
    """The Fault object's CEL rules: required options must be given, and options for a fault type other than the
    chosen one are a mistake worth rejecting up front."""
    required: list[CelRule] = [
        (
            f"self.type != '{d.type}' || has(self.{d.option_field})",
            f"{d.type} faults need {d.option_field} options",
            f".{d.option_field}",
        )
        for d in declarations
        if d.options_required
    ]
    only: list[CelRule] = [
        (
            f"!has(self.{d.option_field}) || self.type == '{d.type}'",
            f"{d.option_field} is only valid when type is {d.type}",
            f".{d.option_field}",
        )
        for d in declarations
    ]
    return (*required, *only)


class FaultBase(Model):
    """The part of a fault that is not one type's options. ``Fault`` adds one optional field per declared type."""

    type: FaultType = Field(description="The fault to inject. Its options go in the field of the same name.")
    OPTION_FIELDS: ClassVar[dict[str, str]] = {}


def _optional(model: Any) -> Any:
    return model | None


def fault_model(
    declarations: Sequence[FaultDeclaration[Any]], base: type[FaultBase] = FaultBase, name: str = "Fault"
) -> type[FaultBase]:
    """The Fault model of these declarations: ``base`` plus each type's option field, with the derived rules."""
    fields: dict[str, Any] = {
        d.option_field: (_optional(d.options), Field(default=None, description=d.description)) for d in declarations
    }
    model = create_model(name, __base__=base, __module__=__name__, **fields)
    model.OPTION_FIELDS = option_fields(declarations)
    model.cel_rules = fault_cel_rules(declarations)
    return model


if TYPE_CHECKING:
    Fault = FaultBase  # the option fields are read through a declaration (FaultDeclaration.options_of)
else:
    Fault = fault_model(FAULT_TYPES)


class Step(Model):
    name: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="A name for the step, unique in the scenario."
    )
    duration: StepDuration = Field(
        default="30s",
        description=f"How long the faults stay injected before they are reverted, e.g. 30s or 2m; at most "
        f"{MAX_STEP_DURATION}.",
    )
    faults: list[Fault] = Field(
        min_length=1, max_length=16, description="Faults injected together (a combined step when several)."
    )

    @cached_property
    def seconds(self) -> float:
        """``duration`` in seconds, parsed once (a rendered scenario holds no parameter references)."""
        return parse_duration(self.duration)


class ScenarioType(StrEnum):
    SERVICE_RESTART = "service_restart"
    NETWORK_PARTITION = "network_partition"
    NETWORK_LATENCY = "network_latency"
    RESOURCE_EXHAUSTION = "resource_exhaustion"
    DATA_CORRUPTION = "data_corruption"
    COMBINED = "combined"


class ScenarioLifecycle(StrEnum):
    """Where a scenario stands: ``draft`` runs only dry, ``active`` runs, ``deprecated`` runs with a warning,
    ``archived`` takes no new runs and its schedule and triggers stop (domain/lifecycle.py)."""

    DRAFT = "draft"
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    ARCHIVED = "archived"


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DURATION = "duration"


class Parameter(Model):
    name: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=63, description="The parameter's name.")
    type: ParameterType = Field(default=ParameterType.STRING, description="The value's type.")
    default: int | str | None = Field(
        default=None, description="The value used when a TestRun does not set it; required when omitted."
    )
    description: str | None = Field(default=None, max_length=1024, description="What the parameter means.")


# Five cron fields, a macro, or "@every <duration>" (coordinator.domain.schedule parses them exactly).
SCHEDULE_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|@every ([0-9]+(\.[0-9]+)?(ms|s|m|h))+"
    r"|[^@ ]+( +[^ ]+){4})$"
)


class RunTemplate(Model):
    """The spec of the TestRuns a schedule creates (scenarioRef is the scenario itself)."""

    parameters: dict[str, int | str] = Field(
        default_factory=dict, description="Parameter values for every scheduled run, overriding the defaults."
    )
    timeout: RunTimeout | None = Field(
        default=None, description="spec.timeout of each scheduled run; the TestRun default when omitted."
    )
    dryRun: bool = Field(default=False, description="Create the scheduled runs as dry runs.")


class ScenarioScheduling(Model):
    """The fields that run a ChaosScenario on a schedule, the way a CronJob runs Jobs."""

    schedule: str | None = Field(
        default=None,
        pattern=SCHEDULE_PATTERN,
        max_length=128,
        description=(
            "Create a TestRun on this schedule: five cron fields (minute hour day month weekday, e.g. "
            "'*/10 * * * *'), @hourly, @daily, @weekly, @monthly, @yearly, or '@every <duration>' (e.g. '@every "
            "10m'; ticks are whole multiples of the duration since the Unix epoch). No runs are scheduled when "
            "omitted."
        ),
    )
    timeZone: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_+/-]*$",
        description="The IANA time zone of a cron schedule, e.g. Europe/Berlin; UTC when omitted.",
    )
    startingDeadlineSeconds: int | None = Field(
        default=None,
        ge=0,
        le=31_622_400,  # a leap year, as the longest @every: a larger deadline overflowed the clock arithmetic
        description=(
            "A run that could not start within this many seconds of its scheduled time is skipped. Missed times "
            "are never caught up in a burst: at most the most recent one runs."
        ),
    )
    suspend: bool = Field(default=False, description="Stop creating scheduled runs; runs already started go on.")
    concurrencyPolicy: ConcurrencyPolicy = Field(
        default=ConcurrencyPolicy.ALLOW,
        description=(
            "When a scheduled time comes while an earlier scheduled run is active: Allow starts another, Forbid "
            "waits for it to end, Replace aborts it (every fault reverted) and starts the new run."
        ),
    )
    successfulRunsHistoryLimit: int = Field(
        default=3, ge=0, le=1000, description="Passed scheduled runs to keep; older ones are deleted."
    )
    failedRunsHistoryLimit: int = Field(
        default=1, ge=0, le=1000, description="Scheduled runs that did not pass to keep; older ones are deleted."
    )
    runTemplate: RunTemplate | None = Field(default=None, description="How the scheduled TestRuns are created.")


class ChaosScenarioSpec(ScenarioScheduling, Triggers, Notifications):
    """The experiment: which targets to hit, how many of them, and the steps of faults to inject."""

    description: str | None = Field(default=None, max_length=4096, description="What this scenario tests and why.")
    type: ScenarioType = Field(
        default=ScenarioType.COMBINED,
        description=(
            "The kind of resilience question asked: service_restart, network_partition, network_latency, "
            "resource_exhaustion, data_corruption or combined."
        ),
    )
    lifecycle: ScenarioLifecycle = Field(
        default=ScenarioLifecycle.ACTIVE,
        description=(
            "draft (runs only with a TestRun's dryRun: true; any other run ends Error), active, deprecated (runs, "
            "with a Warning Event) or archived (new runs are refused, the schedule and triggers stop)."
        ),
    )
    target: Target = Field(description="Which workloads the faults hit.")
    mode: SelectionMode = Field(
        default=SelectionMode.ONE,
        description=(
            "How many of the matching targets are hit: one, all, fixed (value targets), fixed-percent (value% "
            "of them, at least one) or random-max-percent (a random share up to value%)."
        ),
    )
    value: SelectionValue | None = Field(
        default=None,
        description="The count or percentage for fixed, fixed-percent and random-max-percent.",
    )
    steps: list[Step] = Field(
        min_length=1, max_length=32, description="Steps run in order; each injects, holds, reverts."
    )
    parameters: list[Parameter] = Field(
        default_factory=list, description="Parameters a TestRun may set (see TestRun spec.parameters)."
    )
    allowConcurrentTargets: bool = Field(
        default=False,
        description="Let this scenario inject into targets another run is injecting into; by default a run waits. "
        "Overlapping changes to one target restore in the order the runs end, so the last revert wins.",
    )
    steadyState: SteadyState | None = Field(
        default=None, description="Probes that say whether the system is healthy, before, during and after faults."
    )
    assertions: list[Assertion] = Field(
        default_factory=list, max_length=32, description="Verdicts computed from the probes and the run."
    )

    cel_rules = (
        (
            "self.mode in ['one', 'all'] || has(self.value)",
            "value is required for modes fixed, fixed-percent and random-max-percent",
            ".value",
        ),
        (
            "!(self.mode in ['fixed-percent', 'random-max-percent']) || !has(self.value)"
            " || type(self.value) == string || self.value <= 100",
            "value is a percentage (1-100) for fixed-percent and random-max-percent",
            ".value",
        ),
        (
            "self.steps.all(s, self.steps.exists_one(t, t.name == s.name))",
            "step names must be unique",
            ".steps",
        ),
        (
            "!has(self.assertions) || self.assertions.all(a, self.assertions.exists_one(b, b.name == a.name))",
            "assertion names must be unique",
            ".assertions",
        ),
    )

    # The same rules as the CEL above, for specs that reach the operator without admission (written before the rule
    # existed, or rendered from parameters): the status and the history key steps and assertions by name.
    @field_validator("steps", "assertions")
    @classmethod
    def _unique_names(cls, items: list[Any], info: ValidationInfo) -> list[Any]:
        return unique_names(items, str(info.field_name).removesuffix("s"))


class RunSummary(Model):
    name: str | None = Field(default=None, description="The TestRun's name.")
    phase: str | None = Field(default=None, description="Its phase.")
    completedAt: str | None = Field(default=None, description="When it ended.")


class ActiveRun(Model):
    name: str = Field(description="The TestRun's name.")
    uid: str | None = Field(default=None, description="Its UID.")
    scheduledTime: str | None = Field(default=None, description="The scheduled time it was created for.")


class ChaosScenarioStatus(Model):
    """Statistics over the scenario's finished runs and its schedule, maintained by the operator."""

    model_config = ConfigDict(extra="allow")
    lastScheduleTime: str | None = Field(default=None, description="The last time a run was scheduled for.")
    nextScheduleTime: str | None = Field(default=None, description="The next time a run is scheduled for.")
    active: list[ActiveRun] = Field(default_factory=list, description="Scheduled runs not yet finished.")
    lastRun: RunSummary | None = Field(default=None, description="The most recently finished run.")
    totalRuns: int = Field(default=0, description="Finished runs of this scenario.")
    passedRuns: int = Field(default=0, description="Finished runs that passed.")
    cancelledRuns: int = Field(default=0, description="Finished runs that were aborted (Cancelled).")
    lastRunNowToken: str | None = Field(
        default=None,
        description="The last value of the annotation chaos.coordinator.dev/run-now that started a run: each new "
        "value starts one TestRun, named <scenario>-now-<hash of the value>.",
    )
    passRate: str | None = Field(
        default=None,
        description="passedRuns / (totalRuns - cancelledRuns) as a percentage, e.g. 75%: an aborted run says "
        "nothing about the system under test.",
    )
    observedGeneration: int | None = Field(default=None, description="The generation last looked at.")
    triggers: list[TriggerStatus] = Field(default_factory=list, description="What each trigger last saw and did.")


# --- who asked -----------------------------------------------------------------------------------------------

# Written by the operator's mutating admission webhook on every create and every change of a spec: who made it, as
# the API server authenticated them (JSON of Requester). The webhook overwrites whatever a request carries, so the
# annotation cannot be forged; a run acts only with this subject's rights (docs/security.md).
REQUESTED_BY_ANNOTATION = f"{GROUP}/requested-by"
# On a ChaosScenario: a new value starts one TestRun of it (GitOps re-runs). Setting it counts as asking for the
# run: the webhook records who set it as the scenario's requester.
RUN_NOW_ANNOTATION = f"{GROUP}/run-now"
# On a namespace: every run touching it is aborted (reason Paused) and new runs wait. On the operator's own
# namespace: the same for the whole cluster (coordinator pause / resume).
PAUSED_LABEL = f"{GROUP}/paused"


class Requester(Model):
    """The subject who created or last changed a spec, as the API server authenticated them."""

    username: str = Field(min_length=1, description="The user name, e.g. alice or system:serviceaccount:ns:name.")
    uid: str | None = Field(default=None, description="The user's UID, when the authenticator gives one.")
    groups: list[str] = Field(default_factory=list, description="The groups the user belongs to.")

    @classmethod
    def from_annotation(cls, value: str) -> Requester:
        """Parse the requested-by annotation; ValueError (naming it) when it is not a Requester as JSON."""
        try:
            return cls.model_validate_json(value)
        except ValueError as exc:
            raise ValueError(f"annotation {REQUESTED_BY_ANNOTATION} is not a requester as JSON: {exc}") from exc

    def to_annotation(self) -> str:
        """The annotation's value: compact JSON with the fields in a fixed order."""
        return self.model_dump_json(exclude_none=True)


# --- TestRun -------------------------------------------------------------------------------------------------


class ScenarioRef(Model):
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="The ChaosScenario to run.")
    namespace: str | None = Field(
        default=None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Its namespace; the TestRun's own when omitted.",
    )


class WorkflowRef(Model):
    name: str = Field(
        pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="The ChaosWorkflow to run, in the run's namespace."
    )


# On every child TestRun of a workflow run: the parent TestRun's name and the node the child runs (label values).
WORKFLOW_RUN_LABEL = f"{GROUP}/workflow-run"
WORKFLOW_NODE_LABEL = f"{GROUP}/workflow-node"
# On a workflow run: "true" releases its suspend nodes that wait for approval (the operator then removes it).
RESUME_ANNOTATION = f"{GROUP}/resume"


class TestRunSpec(Model):
    """Which scenario (or workflow) to run, with which parameters, and for how long at most."""

    __test__ = False  # not a pytest class

    scenarioRef: ScenarioRef | None = Field(
        default=None, description="The scenario this run executes (or workflowRef: exactly one of them is set)."
    )
    workflowRef: WorkflowRef | None = Field(
        default=None,
        description="The ChaosWorkflow this run executes: one child TestRun per node, created as the DAG reaches it.",
    )
    parameters: dict[str, int | str] = Field(
        default_factory=dict,
        description="Values for the scenario's (or workflow's) declared parameters, overriding their defaults.",
    )
    dryRun: bool = Field(
        default=False,
        description="Resolve the targets and record what would be done, without changing anything.",
    )
    timeout: RunTimeout = Field(
        default="10m",
        description=f"The run ends TimedOut, with every fault reverted, when it lasts longer; 1s to {MAX_RUN_TIMEOUT}.",
    )
    abort: bool = Field(default=False, description="Set to true to stop the run: faults are reverted, phase Cancelled.")
    seed: int | None = Field(
        default=None, ge=0, description="Seed for target selection; the same seed picks the same targets."
    )

    # A run executes the spec it was created with: a finished run whose scenarioRef was edited afterwards would
    # name a scenario it never ran. Only abort may change. (CEL cannot read the status from a spec rule, so the
    # spec is fixed from creation; runs start at once anyway.) tests/unit/test_crds.py checks every field but
    # abort is listed.
    IMMUTABLE_FIELDS: ClassVar[tuple[str, ...]] = (
        "scenarioRef",
        "workflowRef",
        "parameters",
        "dryRun",
        "timeout",
        "seed",
    )

    @cached_property
    def timeout_seconds(self) -> float:
        """``timeout`` in seconds, parsed once."""
        return parse_duration(self.timeout)

    @property
    def scenario(self) -> ScenarioRef:
        """``scenarioRef``; ValueError on a workflow run, which has none."""
        if self.scenarioRef is None:
            raise ValueError("spec.scenarioRef is not set: this TestRun runs a workflow (spec.workflowRef)")
        return self.scenarioRef

    @model_validator(mode="after")
    def _one_ref(self) -> TestRunSpec:
        if (self.scenarioRef is None) == (self.workflowRef is None):
            raise ValueError("exactly one of spec.scenarioRef and spec.workflowRef is required")
        return self

    cel_rules = (
        ("has(self.scenarioRef) != has(self.workflowRef)", "exactly one of scenarioRef and workflowRef is required"),
        (
            " && ".join(
                f"has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
                for f in IMMUTABLE_FIELDS
            ),
            "a TestRun's spec cannot change once it exists, except spec.abort: create a new TestRun to run again",
        ),
    )


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    PASSED = "Passed"
    FAILED = "Failed"
    ERROR = "Error"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"


TERMINAL_PHASES = frozenset({Phase.PASSED, Phase.FAILED, Phase.ERROR, Phase.CANCELLED, Phase.TIMED_OUT})


class TargetRef(Model):
    kind: str = Field(description="The target's kind.")
    namespace: str | None = Field(default=None, description="Its namespace (none for Nodes).")
    name: str = Field(description="Its name.")
    uid: str | None = Field(default=None, description="Its UID when selected.")


class InjectionState(StrEnum):
    RECORDED = "Recorded"  # written down, not yet known to be applied
    APPLIED = "Applied"
    REVERTED = "Reverted"
    IRREVERSIBLE = "Irreversible"  # applied and nothing to undo (a deleted pod, a restart)
    FAILED = "Failed"


class Injection(Model):
    """One change to one target: the rollback ledger. Written to status before the change is made."""

    id: str = Field(description="Unique within the run: <step>/<fault>/<target>.")
    step: int = Field(description="Index of the step that made it.")
    faultIndex: int = Field(default=0, description="Index of the fault within its step.")
    fault: FaultType = Field(description="The fault type.")
    target: TargetRef = Field(description="What was changed.")
    state: InjectionState = Field(description="Recorded, Applied, Reverted, Irreversible or Failed.")
    original: str | None = Field(default=None, description="What to restore, as JSON.")
    appliedAt: Timestamp | None = Field(default=None, description="When it was applied.")
    revertedAt: Timestamp | None = Field(default=None, description="When it was reverted.")
    message: str | None = Field(default=None, description="Why it failed, if it did.")


class StepOutcome(StrEnum):
    PENDING = "Pending"
    INJECTED = "Injected"
    REVERTED = "Reverted"
    FAILED = "Failed"
    SKIPPED = "Skipped"
    DRY_RUN = "DryRun"


class StepRecord(Model):
    name: str = Field(description="The step's name.")
    outcome: StepOutcome = Field(default=StepOutcome.PENDING, description="What happened in this step.")
    targets: list[TargetRef] = Field(default_factory=list, description="The targets chosen (at most 100 listed).")
    targetCount: int = Field(default=0, description="How many targets were chosen.")
    injectedAt: Timestamp | None = Field(default=None, description="When the step's faults were applied.")
    endsAt: Timestamp | None = Field(default=None, description="When the step's faults are due to be reverted.")
    revertedAt: Timestamp | None = Field(default=None, description="When they were reverted.")
    recoveryTimeSeconds: float | None = Field(
        default=None, description="From injection to the first moment every steady-state probe passed again."
    )
    message: str | None = Field(default=None, description="A human-readable account of the step.")


class Condition(Model):
    type: str = Field(
        description="TargetsSelected, FaultsInjected, FaultsReverted, Completed; at the end Succeeded (True for "
        "Passed), Failed (True for Failed, Error, TimedOut, Cancelled), Ready (True for Passed) and Stalled (True "
        "for a failure, for kstatus)."
    )
    status: str = Field(description="True, False or Unknown.")
    reason: str = Field(description="A CamelCase reason.")
    message: str = Field(default="", description="A human-readable message.")
    lastTransitionTime: str = Field(description="When the status last changed.")
    observedGeneration: int | None = Field(default=None, description="The generation this condition describes.")


class RunEnding(Model):
    """The end a run has reached while some of its changes could not be reverted yet."""

    phase: Phase = Field(description="The phase the run ends in once every change is reverted.")
    reason: str = Field(description="Its reason.")
    message: str = Field(description="Its message.")


class NodePhase(StrEnum):
    PENDING = "Pending"  # its dependencies have not all ended
    RUNNING = "Running"  # its child TestRun exists and has not ended
    SUSPENDED = "Suspended"  # a suspend node waiting for its duration or for chaos.coordinator.dev/resume=true
    PASSED = "Passed"
    FAILED = "Failed"
    ERROR = "Error"
    CANCELLED = "Cancelled"
    TIMED_OUT = "TimedOut"
    SKIPPED = "Skipped"  # its ``when`` did not hold, or the workflow stopped on a failure before it started


NODE_DONE = frozenset(
    {
        NodePhase.PASSED,
        NodePhase.FAILED,
        NodePhase.ERROR,
        NodePhase.CANCELLED,
        NodePhase.TIMED_OUT,
        NodePhase.SKIPPED,
    }
)


class WorkflowNodeStatus(Model):
    """One node of a workflow run: its phase and the child TestRun that runs it."""

    name: str = Field(description="The node's name.")
    phase: NodePhase = Field(
        default=NodePhase.PENDING,
        description="Pending, Running, Suspended, Passed, Failed, Error, Cancelled, TimedOut or Skipped.",
    )
    testRun: str | None = Field(default=None, description="The child TestRun's name, once created.")
    startedAt: Timestamp | None = Field(default=None, description="When the node started.")
    completedAt: Timestamp | None = Field(default=None, description="When it ended.")
    reason: str | None = Field(default=None, description="Why the node is in its phase, CamelCase.")
    message: str | None = Field(
        default=None,
        description="A human-readable account: the child's message, e.g. that it waits for a target another "
        "branch holds.",
    )
    resilienceScore: int | None = Field(default=None, description="The child run's resilience score.")
    recoveryTimeSeconds: float | None = Field(default=None, description="The child run's recovery time.")


class HistorySync(Model):
    """Whether the finished run has been written to the history store (which outlives the TestRun object)."""

    synced: bool = Field(default=False, description="True once the run is in the history store.")
    syncedAt: Timestamp | None = Field(default=None, description="When it was written.")
    store: str | None = Field(default=None, description="The kind of store it went to: postgresql or sqlite.")


class TestRunStatus(Model):
    """The run's progress and outcome, and the ledger of every change it made, written by the operator."""

    __test__ = False

    # A status written by a newer operator may hold fields this one does not know: read past them (the schema
    # preserves them, and merge patches leave them alone).
    model_config = ConfigDict(extra="ignore")
    phase: Phase | None = Field(
        default=None, description="Pending, Running, Passed, Failed, Error, Cancelled or TimedOut."
    )
    reason: str | None = Field(default=None, description="Why the run is in its phase, CamelCase.")
    message: str | None = Field(default=None, description="A human-readable account of the outcome.")
    ending: RunEnding | None = Field(
        default=None,
        description="Set while a run that has ended still reverts its changes (a revert failed and is retried): "
        "the phase, reason and message it will end with. A retry finishes this end; it never resumes the run.",
    )
    scenario: str | None = Field(default=None, description="The scenario, as namespace/name.")
    requestedBy: Requester | None = Field(
        default=None,
        description="Who asked for the run (from the annotation chaos.coordinator.dev/requested-by): the run acts "
        "only with this subject's rights.",
    )
    scenarioGeneration: int | None = Field(default=None, description="The scenario generation the run uses.")
    startedAt: Timestamp | None = Field(default=None, description="When the run started.")
    completedAt: Timestamp | None = Field(default=None, description="When it ended.")
    durationSeconds: float | None = Field(default=None, description="completedAt - startedAt in seconds.")
    duration: str | None = Field(default=None, description="The same as a duration, e.g. 5.1s or 2m3s.")
    step: str | None = Field(
        default=None, description="While the run is active: the step in progress, as <n>/<steps> <name>."
    )
    deadline: Timestamp | None = Field(default=None, description="startedAt + spec.timeout.")
    targets: int | None = Field(default=None, description="How many targets the run chose, over all steps.")
    currentStep: int | None = Field(default=None, description="Index of the step in progress.")
    steps: list[StepRecord] = Field(default_factory=list, description="One record per scenario step.")
    injections: list[Injection] = Field(default_factory=list, description="Every change made, for rollback.")
    recoveryTimeSeconds: float | None = Field(
        default=None, description="The slowest step's recovery time in seconds (0 when no impact was seen)."
    )
    resilienceScore: int | None = Field(
        default=None, description="0-100: sum(probe weight x success %) / sum(weights), like Litmus."
    )
    probes: list[ProbeResult] = Field(default_factory=list, description="One summary per probe (bounded).")
    assertions: list[AssertionResult] = Field(default_factory=list, description="One result per assertion.")
    conditions: list[Condition] = Field(default_factory=list, description="Kubernetes-style conditions.")
    observedGeneration: int | None = Field(default=None, description="The generation last acted on.")
    history: HistorySync | None = Field(
        default=None,
        description="Set once the finished run is in the history store; history limits delete only such runs.",
    )
    scenarioSnapshot: str | None = Field(
        default=None,
        description="The scenario spec this run executes, as JSON with its parameters filled in, taken when the "
        "run started: editing the scenario never changes a run in flight.",
    )
    baselineChecked: bool | None = Field(
        default=None,
        description="True once the before/edge probes passed, before anything was injected: a resumed run does not "
        "check its baseline again while its faults are in place.",
    )
    scenarioCounted: bool | None = Field(
        default=None,
        description="True once the finished run is counted on its ChaosScenario's status, so it is counted once.",
    )
    workflow: str | None = Field(default=None, description="A workflow run's ChaosWorkflow, as namespace/name.")
    workflowSnapshot: str | None = Field(
        default=None,
        description="The workflow spec this run executes, as JSON with its parameters filled in, taken when the run "
        "started.",
    )
    nodes: list[WorkflowNodeStatus] = Field(
        default_factory=list, description="A workflow run's nodes, in the workflow's order."
    )
    notifications: list[NotificationRecord] = Field(
        default_factory=list,
        description="Each webhook delivery of the scenario's (or workflow's) spec.notifications: Pending once its "
        "event is written, then Delivered or Failed with the tries made.",
    )


class Resource(Model):
    """Common top-level fields; the generator emits only spec and status schemas."""

    model_config = ConfigDict(extra="allow")
    apiVersion: str = API_VERSION
    kind: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChaosScenario(Resource):
    """A reusable chaos experiment: faults injected into selected targets, step by step. A TestRun runs it."""

    kind: str = "ChaosScenario"
    spec: ChaosScenarioSpec
    status: ChaosScenarioStatus | None = None


class TestRun(Resource):
    """One execution of a ChaosScenario: faults are injected, held and reverted; the status records the outcome."""

    __test__ = False

    kind: str = "TestRun"
    spec: TestRunSpec
    status: TestRunStatus | None = None
