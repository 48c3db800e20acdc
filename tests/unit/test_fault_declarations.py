"""Fault types describe themselves: what derives from a declaration (Fault's option fields, its CEL rules, the
kind check, the drivers' options and kinds), proven with a throw-away fault type declared in-process; the revert
helper; node-drain on top of node-cordon; how long an in-pod agent holds its fault."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import pytest
from pydantic import Field, ValidationError

from coordinator.adapters.kube import ApiError, KubeClient
from coordinator.api.crd import _KubernetesSchemaGenerator
from coordinator.api.models import (
    DECLARED,
    FAULT_TYPES,
    INPOD_OPTION_FIELDS,
    SCALE,
    ChaosScenarioSpec,
    Fault,
    FaultBase,
    FaultDeclaration,
    FaultType,
    Injection,
    InjectionState,
    Model,
    ScaleOptions,
    fault_cel_rules,
    fault_model,
)
from coordinator.faults import DRIVERS, kind_problems
from coordinator.faults.base import FaultContext, FaultDriver, FaultError, unless_gone
from coordinator.faults.ephemeral import InPodFault, hold_seconds
from coordinator.faults.inpod import commands
from coordinator.faults.node_cordon import NodeCordonFault
from coordinator.faults.node_drain import NodeDrainFault

# --- a throw-away fault type, declared the way docs/adding-a-fault.md says ----------------------------------------


class BlinkOptions(Model):
    seconds: int = Field(ge=1, le=60, description="How long the workload blinks.")


BLINK = FaultDeclaration("blink", "blink", BlinkOptions, frozenset({"Deployment"}), options_required=True)


class BlinkFaultType(StrEnum):  # FaultType plus the new member, as the edited enum would be
    POD_KILL = "pod-kill"
    BLINK = "blink"


class BlinkFaultBase(FaultBase):
    type: BlinkFaultType = Field(description="The fault to inject.")  # type: ignore[assignment]


class BlinkFault(FaultDriver):
    declaration = BLINK

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        return {"replicas": obj["spec"]["replicas"]}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        return InjectionState.APPLIED

    async def revert(self, client: KubeClient, injection: Injection) -> None:
        return None


WITH_BLINK = (*FAULT_TYPES, BLINK)


def blink_model() -> type[FaultBase]:
    return fault_model(WITH_BLINK, BlinkFaultBase, name="BlinkFault")


def test_a_declared_type_gets_its_option_field() -> None:
    model = blink_model()
    field = model.model_fields["blink"]
    assert field.default is None
    assert field.description == "Options for blink."
    assert model.OPTION_FIELDS["blink"] == "blink"
    fault = model.model_validate({"type": "blink", "blink": {"seconds": 5}})
    assert BLINK.options_of(fault) == BlinkOptions(seconds=5)
    with pytest.raises(ValidationError):
        model.model_validate({"type": "blink", "blink": {"seconds": 0}})


def test_a_declared_type_gets_its_cel_rules_in_the_schema() -> None:
    schema = blink_model().model_json_schema(schema_generator=_KubernetesSchemaGenerator)
    rules = schema["x-kubernetes-validations"]
    assert {
        "rule": "self.type != 'blink' || has(self.blink)",
        "message": "blink faults need blink options",
        "fieldPath": ".blink",
    } in rules
    assert {
        "rule": "!has(self.blink) || self.type == 'blink'",
        "message": "blink is only valid when type is blink",
        "fieldPath": ".blink",
    } in rules
    # Every other type's options are refused next to a blink fault, and blink's next to theirs.
    assert {r["rule"] for r in rules} >= {f"!has(self.{d.option_field}) || self.type == '{d.type}'" for d in WITH_BLINK}


def test_options_that_may_be_omitted_get_no_required_rule() -> None:
    optional = FaultDeclaration("wink", "wink", BlinkOptions, frozenset({"Pod"}))
    assert [rule[0] for rule in fault_cel_rules([optional])] == ["!has(self.wink) || self.type == 'wink'"]


def scenario(kind: str, *fault_types: str) -> ChaosScenarioSpec:
    return ChaosScenarioSpec.model_validate(
        {
            "type": "service_restart",
            "target": {"kind": kind},
            "steps": [{"name": "only", "duration": "10s", "faults": [{"type": t} for t in fault_types]}],
        }
    )


def test_the_kind_check_reads_a_declared_type() -> None:
    spec = scenario("Pod", "pod-kill", "pod-kill")
    # A scenario cannot name "blink" (FaultType is not edited here): put a blink fault in without validation.
    spec.steps[0].faults[1] = blink_model().model_validate({"type": "blink", "blink": {"seconds": 1}})  # type: ignore[call-overload]
    declared = {d.type: d for d in WITH_BLINK}
    assert kind_problems(spec, declared) == [
        (("spec", "steps", 0, "faults", 1, "type"), "blink acts on Deployment, not spec.target.kind Pod")
    ]
    spec.target.kind = "Deployment"  # type: ignore[assignment]
    assert kind_problems(spec, declared) == [
        (("spec", "steps", 0, "faults", 0, "type"), "pod-kill acts on Pod, not spec.target.kind Deployment")
    ]


def test_a_driver_takes_its_options_and_kinds_from_its_declaration() -> None:
    driver = BlinkFault()
    assert driver.kinds == frozenset({"Deployment"})
    fault = blink_model().model_validate({"type": "blink", "blink": {"seconds": 3}})
    assert driver.options(fault) == BlinkOptions(seconds=3)  # type: ignore[arg-type]


def test_a_driver_must_say_how_to_revert() -> None:
    class Unfinished(FaultDriver):
        declaration = BLINK

        def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
            return None

        async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
            return InjectionState.APPLIED

    with pytest.raises(TypeError, match="revert"):
        Unfinished()  # type: ignore[abstract]


# --- the real table ------------------------------------------------------------------------------------------


def test_every_fault_type_is_declared_once_in_order_and_driven_by_its_declaration() -> None:
    assert [d.type for d in FAULT_TYPES] == list(FaultType)
    for fault_type, driver in DRIVERS.items():
        assert driver.declaration is DECLARED[fault_type]


def test_the_option_fields_are_the_ones_users_write() -> None:
    assert Fault.OPTION_FIELDS == {
        "pod-kill": "podKill",
        "pod-failure": "podFailure",
        "rollout-restart": "rolloutRestart",
        "scale": "scale",
        "node-cordon": "nodeCordon",
        "node-drain": "nodeDrain",
        "network-partition": "networkPartition",
        **INPOD_OPTION_FIELDS,
    }
    assert list(Fault.model_fields) == ["type", *Fault.OPTION_FIELDS.values()]
    assert set(INPOD_OPTION_FIELDS) == {t for t, driver in DRIVERS.items() if isinstance(driver, InPodFault)}


def test_required_options_are_the_ones_a_fault_cannot_do_without() -> None:
    required = {d.type for d in FAULT_TYPES if d.options_required}
    assert required == {
        "scale",
        "network-delay",
        "network-loss",
        "network-duplicate",
        "network-corrupt",
        "network-bandwidth",
        "container-kill",
        "clock-skew",
        "dns-fault",
        "http-fault",
    }
    assert SCALE.options_of(Fault(type=FaultType.SCALE, scale=ScaleOptions(replicas=2))) == ScaleOptions(replicas=2)


def test_the_kind_check_of_a_valid_scenario_is_empty() -> None:
    assert kind_problems(scenario("Deployment", "rollout-restart")) == []
    assert kind_problems(scenario("Node", "node-cordon", "node-drain")) == []


def test_the_kind_check_names_each_misplaced_fault() -> None:
    problems = kind_problems(scenario("Pod", "pod-kill", "node-cordon", "rollout-restart"))
    assert problems == [
        (("spec", "steps", 0, "faults", 1, "type"), "node-cordon acts on Node, not spec.target.kind Pod"),
        (
            ("spec", "steps", 0, "faults", 2, "type"),
            "rollout-restart acts on DaemonSet/Deployment/StatefulSet, not spec.target.kind Pod",
        ),
    ]


# --- the in-pod agent mapping --------------------------------------------------------------------------------

APP_ID = "4f" * 32
POD = {
    "metadata": {"name": "checkout-1"},
    "spec": {"containers": [{"name": "app", "image": "shop:1"}]},
    "status": {"containerStatuses": [{"name": "app", "containerID": f"containerd://{APP_ID}"}]},
}
MINIMAL_OPTIONS: dict[str, dict[str, Any]] = {
    "network-delay": {"latencyMs": 100},
    "network-loss": {"percent": 10},
    "network-duplicate": {"percent": 10},
    "network-corrupt": {"percent": 10},
    "network-bandwidth": {"rate": "1mbit"},
    "container-kill": {"containerName": "app"},
    "clock-skew": {"containerName": "app", "offset": "-1h"},
    "dns-fault": {"patterns": ["*.example.com"], "error": {}},
    "http-fault": {"port": 8080, "abort": {"statusCode": 503}},
}
AGENT_FAULT = {
    "network-delay": commands.NetworkDelay,
    "network-loss": commands.NetworkLoss,
    "network-duplicate": commands.NetworkDuplicate,
    "network-corrupt": commands.NetworkCorrupt,
    "network-bandwidth": commands.NetworkBandwidth,
    "cpu-stress": commands.CpuStress,
    "memory-stress": commands.MemoryStress,
    "io-stress": commands.IoStress,
    "container-kill": commands.ContainerKill,
    "clock-skew": commands.ClockSkew,
    "dns-fault": commands.DnsFault,
    "http-fault": commands.HttpFault,
}


def in_pod_driver(fault_type: str) -> InPodFault[Any]:
    driver = DRIVERS[fault_type]
    assert isinstance(driver, InPodFault)
    return driver


def agent_container(fault: Fault, pod: Mapping[str, Any] = POD, seconds: int = 30) -> dict[str, Any]:
    return in_pod_driver(str(fault.type)).container(fault, pod, "0.0/x/Pod/shop/checkout-1", seconds, "tools:1")


def in_pod_fault(fault_type: str) -> Fault:
    body: dict[str, Any] = {"type": fault_type}
    if fault_type in MINIMAL_OPTIONS:
        body[INPOD_OPTION_FIELDS[fault_type]] = MINIMAL_OPTIONS[fault_type]
    return Fault.model_validate(body)


@pytest.mark.parametrize("fault_type", sorted(INPOD_OPTION_FIELDS))
def test_each_in_pod_fault_maps_onto_its_agent_fault(fault_type: str) -> None:
    assert type(in_pod_driver(fault_type).agent_fault(in_pod_fault(fault_type), POD)) is AGENT_FAULT[fault_type]


@pytest.mark.parametrize(
    ("fault_type", "capability"),
    [
        ("network-delay", ["NET_ADMIN"]),
        ("network-loss", ["NET_ADMIN"]),
        ("cpu-stress", None),
        ("container-kill", ["KILL"]),
        ("clock-skew", ["SYS_PTRACE"]),
        ("dns-fault", ["NET_ADMIN"]),
        ("http-fault", ["NET_ADMIN"]),
    ],
)
def test_the_agent_gets_only_the_capability_its_fault_needs(fault_type: str, capability: list[str] | None) -> None:
    container = agent_container(in_pod_fault(fault_type))
    assert container["securityContext"]["capabilities"].get("add") == capability
    assert ("targetContainerName" in container) == (fault_type in ("container-kill", "clock-skew"))


def test_missing_required_options_are_refused_by_name() -> None:
    fault = Fault.model_construct(type="network-delay")
    with pytest.raises(FaultError, match="network-delay faults need networkDelay options"):
        agent_container(fault)


@pytest.mark.parametrize("fault_type", ["container-kill", "clock-skew"])
@pytest.mark.parametrize(
    ("pod_spec", "refusal"),
    [({"hostPID": True}, "hostPID"), ({"containers": [{"name": "sidecar"}]}, "has no container 'app'")],
)
def test_process_faults_refuse_the_node_processes_and_a_missing_container(
    fault_type: str, pod_spec: dict[str, Any], refusal: str
) -> None:
    pod = {**POD, "spec": {**POD["spec"], **pod_spec}}
    with pytest.raises(FaultError, match=refusal):
        agent_container(in_pod_fault(fault_type), pod)


def test_clock_skew_finds_the_container_by_its_id_and_needs_one() -> None:
    container = agent_container(in_pod_fault("clock-skew"), POD, seconds=30)
    assert container["targetContainerName"] == "app"
    script = container["command"][2]
    assert f"coordinator-clock-skew apply -3600 35 container:{APP_ID} " in script, "expires 5 s after the hold"
    not_started = {**POD, "status": {"containerStatuses": [{"name": "app"}]}}
    script = agent_container(in_pod_fault("clock-skew"), not_started)["command"][2]
    assert "coordinator-clock-skew apply" not in script
    assert "container app had no containerID in the pod status when the agent was made" in script


def test_a_network_fault_refuses_a_pod_on_the_node_network() -> None:
    pod = {**POD, "spec": {**POD["spec"], "hostNetwork": True}}
    with pytest.raises(FaultError, match="hostNetwork"):
        agent_container(in_pod_fault("network-loss"), pod)
    agent_container(in_pod_fault("cpu-stress"), pod)


# --- how long the agent holds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("step_seconds", "held"), [(0, 1), (0.0, 1), (0.4, 1), (1, 1), (29.5, 30), (90, 90)])
def test_the_agent_holds_for_the_step_not_a_default(step_seconds: float, held: int) -> None:
    # A 0s step once held its in-pod fault for 30 s (``step_duration or 30``), long after the step had ended.
    assert hold_seconds(step_seconds) == held


def test_a_zero_second_step_gives_an_agent_that_holds_one_second() -> None:
    container = agent_container(in_pod_fault("cpu-stress"), seconds=hold_seconds(0))
    assert "cpu-stress for 1s" in container["command"][2]


def test_an_unknown_step_duration_is_an_error_not_a_default() -> None:
    with pytest.raises(FaultError, match="duration"):
        hold_seconds(None)


# --- revert, ignoring gone; node-drain on node-cordon -----------------------------------------------------------


async def answer(value: Any) -> Any:
    return value


async def fail(status: int) -> Any:
    raise ApiError(status, "Reason", "message")


async def test_unless_gone_passes_the_answer_through() -> None:
    assert await unless_gone(answer({"kind": "Pod"})) == {"kind": "Pod"}


async def test_unless_gone_counts_a_vanished_object_as_done() -> None:
    assert await unless_gone(fail(404)) is None


@pytest.mark.parametrize("status", [403, 409, 500])
async def test_unless_gone_raises_every_other_error(status: int) -> None:
    with pytest.raises(ApiError) as raised:
        await unless_gone(fail(status))
    assert raised.value.status == status


def test_node_drain_is_a_cordon_plus_evictions() -> None:
    assert issubclass(NodeDrainFault, NodeCordonFault)
    assert NodeDrainFault.original is NodeCordonFault.original
    assert NodeDrainFault.revert is NodeCordonFault.revert
    assert NodeDrainFault().kinds == NodeCordonFault().kinds == frozenset({"Node"})
