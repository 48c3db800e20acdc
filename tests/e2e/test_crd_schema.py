"""The generated CRDs on a real API server: defaults applied, bad input rejected with the field named,
kubectl explain/get/wait working off the schema, printer columns and status subresource."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from coordinator.api.crd import KINDS
from coordinator.api.models import GROUP, VERSION
from coordinator.domain.timestamps import now_iso_seconds
from coordinator.testing.waiting import wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

Body = dict[str, Any]


@pytest.fixture(scope="module")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} exited {proc.returncode}: {proc.stderr}{proc.stdout}")
    return proc


def scenario_body(name: str = "kill-one") -> Body:
    """A minimal valid ChaosScenario: every optional field left to its default."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChaosScenario",
        "metadata": {"name": name},
        "spec": {
            "target": {"labelSelector": {"matchLabels": {"app": "web"}}},
            "steps": [{"name": "kill", "faults": [{"type": "pod-kill"}]}],
        },
    }


def run_body(name: str = "run-1", scenario_name: str = "kill-one") -> Body:
    """A minimal valid TestRun."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TestRun",
        "metadata": {"name": name},
        "spec": {"scenarioRef": {"name": scenario_name}},
    }


def plural(body: Body) -> str:
    return KINDS[body["kind"]].plural


def create(custom: client.CustomObjectsApi, namespace: str, body: Body, field_validation: str = "Strict") -> Body:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural(body), body, field_validation=field_validation
    )
    return cast(Body, created)


def patch_status(custom: client.CustomObjectsApi, namespace: str, name: str, patch: Body) -> Body:
    """A JSON merge patch of a TestRun through its status subresource."""
    patched = custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "testruns", name, patch)
    return cast(Body, patched)


def message_of(error: ApiException) -> str:
    """The Status message the API server answered with."""
    return str(json.loads(error.body or "{}").get("message", ""))


# --- valid objects ------------------------------------------------------------------------------------------


def test_valid_objects_are_accepted_and_defaulted(custom: client.CustomObjectsApi, namespace: str) -> None:
    chaos = create(custom, namespace, scenario_body())["spec"]
    assert chaos["mode"] == "one"
    assert chaos["type"] == "combined"
    assert chaos["target"]["kind"] == "Pod"
    assert chaos["steps"][0]["duration"] == "30s"
    assert "value" not in chaos, "an omitted optional field stays omitted (no null)"

    run = run_body()
    run["spec"]["parameters"] = {"replicas": 3, "delay": "5s"}
    spec = create(custom, namespace, run)["spec"]
    assert spec["dryRun"] is False
    assert spec["abort"] is False
    assert spec["timeout"] == "10m"
    assert spec["parameters"] == {"replicas": 3, "delay": "5s"}, "int-or-string values keep their type"
    assert "seed" not in spec


def test_audit_trail_needs_neither_a_probe_nor_an_expected_value(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    body = scenario_body("audited")
    body["spec"]["assertions"] = [{"name": "trail", "type": "audit_trail"}]
    assert create(custom, namespace, body)["spec"]["assertions"] == [
        {"name": "trail", "type": "audit_trail", "percentile": 95}
    ]
    body = scenario_body("unaudited")
    body["spec"]["assertions"] = [{"name": "health", "type": "service_health"}]
    with pytest.raises(ApiException) as caught:
        create(custom, namespace, body)
    assert "probe is required for this assertion type" in message_of(caught.value)


def test_every_fault_type_with_its_options_is_accepted(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = scenario_body("everything")
    body["spec"].update(
        {
            "description": "All the fault types once.",
            "type": "network_partition",
            "mode": "fixed-percent",
            "value": 50,
            "target": {
                "kind": "Deployment",
                "namespaces": [namespace],
                "labelSelector": {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]},
                "names": ["web"],
            },
            "parameters": [{"name": "replicas", "type": "integer", "default": 2}, {"name": "label"}],
            "steps": [
                {"name": "kill", "duration": "1m30s", "faults": [{"type": "pod-kill", "podKill": {}}]},
                {"name": "break", "faults": [{"type": "pod-failure", "podFailure": {"containerNames": ["web"]}}]},
                {"name": "restart", "faults": [{"type": "rollout-restart", "rolloutRestart": {}}]},
                {"name": "shrink", "faults": [{"type": "scale", "scale": {"percent": 50}}]},
                {"name": "cordon", "faults": [{"type": "node-cordon"}, {"type": "node-drain", "nodeDrain": {}}]},
                {
                    "name": "split",
                    "faults": [
                        {
                            "type": "network-partition",
                            "networkPartition": {
                                "direction": "egress",
                                "allowedPeers": [
                                    {"cidr": "10.96.0.10/32"},
                                    {"namespaceSelector": {"matchLabels": {"name": "kube-system"}}},
                                ],
                            },
                        }
                    ],
                },
            ],
        }
    )
    spec = create(custom, namespace, body)["spec"]
    steps = {step["name"]: step for step in spec["steps"]}
    assert steps["kill"]["faults"][0]["podKill"] == {"gracePeriodSeconds": 0}
    assert steps["break"]["faults"][0]["podFailure"]["image"].startswith("coordinator.invalid/")
    assert steps["cordon"]["faults"][1]["nodeDrain"] == {"ignorePodDisruptionBudgets": False}
    assert spec["parameters"][1] == {"name": "label", "type": "string"}


def test_unknown_fields_are_pruned_when_not_strict(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = scenario_body()
    body["spec"]["blastRadius"] = 3
    body["spec"]["steps"][0]["faults"][0]["podKill"] = {"gracePeriodSeconds": 5, "force": True}
    created = create(custom, namespace, body, field_validation="Ignore")
    assert "blastRadius" not in created["spec"]
    assert created["spec"]["steps"][0]["faults"][0]["podKill"] == {"gracePeriodSeconds": 5}


# --- invalid objects ----------------------------------------------------------------------------------------


def _spec(**changes: Any) -> Callable[[Body], None]:
    def mutate(body: Body) -> None:
        body["spec"].update(copy.deepcopy(changes))

    return mutate


def _step(**step: Any) -> Callable[[Body], None]:
    return _spec(steps=[{"name": "only", **step}])


def _fault(**fault: Any) -> Callable[[Body], None]:
    return _step(faults=[fault])


def _without(*path: str) -> Callable[[Body], None]:
    def mutate(body: Body) -> None:
        node = body
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


INVALID: list[Any] = [
    pytest.param(scenario_body, _spec(mode="some"), "spec.mode", "Unsupported value", id="bad-mode-enum"),
    pytest.param(scenario_body, _spec(mode="fixed"), "spec.value", "value is required", id="fixed-mode-without-value"),
    pytest.param(
        scenario_body, _spec(mode="fixed-percent", value=150), "spec.value", "percentage", id="fixed-percent-150"
    ),
    pytest.param(scenario_body, _spec(value=0), "spec.value", "greater than or equal to 1", id="value-zero"),
    pytest.param(scenario_body, _spec(steps=[]), "spec.steps", "at least 1 items", id="empty-steps"),
    pytest.param(scenario_body, _step(), "spec.steps[0].faults", "Required value", id="step-without-faults"),
    pytest.param(scenario_body, _step(faults=[]), "spec.steps[0].faults", "at least 1 items", id="step-empty-faults"),
    pytest.param(
        scenario_body,
        _step(duration="10 minutes", faults=[{"type": "pod-kill"}]),
        "spec.steps[0].duration",
        "should match",
        id="bad-duration",
    ),
    pytest.param(
        scenario_body,
        _step(name="Kill_It", faults=[{"type": "pod-kill"}]),
        "spec.steps[0].name",
        "should match",
        id="bad-step-name",
    ),
    pytest.param(
        scenario_body,
        _spec(steps=[{"name": "a", "faults": [{"type": "pod-kill"}]}] * 2),
        "spec.steps",
        "step names must be unique",
        id="duplicate-step-names",
    ),
    pytest.param(
        scenario_body, _fault(type="explode"), "spec.steps[0].faults[0].type", "Unsupported value", id="bad-fault"
    ),
    pytest.param(
        scenario_body,
        _fault(type="scale"),
        "spec.steps[0].faults[0].scale",
        "scale faults need",
        id="scale-without-options",
    ),
    pytest.param(
        scenario_body,
        _fault(type="scale", scale={"replicas": 1, "percent": 50}),
        "spec.steps[0].faults[0].scale",
        "exactly one of replicas or percent",
        id="scale-replicas-and-percent",
    ),
    pytest.param(
        scenario_body,
        _fault(type="scale", scale={"replicas": 0}, podKill={}),
        "spec.steps[0].faults[0].podKill",
        "podKill is only valid when type is pod-kill",
        id="podkill-options-on-scale-fault",
    ),
    pytest.param(
        scenario_body,
        _fault(type="pod-kill", podKill={"gracePeriodSeconds": -1}),
        "spec.steps[0].faults[0].podKill.gracePeriodSeconds",
        "greater than or equal to 0",
        id="negative-grace-period",
    ),
    pytest.param(
        scenario_body,
        _fault(
            type="network-partition", networkPartition={"allowedPeers": [{"cidr": "10.0.0.0/8", "podSelector": {}}]}
        ),
        "spec.steps[0].faults[0].networkPartition.allowedPeers[0]",
        "cidr cannot be combined",
        id="peer-cidr-with-selector",
    ),
    pytest.param(
        scenario_body,
        _fault(type="network-partition", networkPartition={"allowedPeers": [{}]}),
        "spec.steps[0].faults[0].networkPartition.allowedPeers[0]",
        "a peer needs",
        id="empty-peer",
    ),
    pytest.param(
        scenario_body,
        _spec(target={"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}),
        "spec.target.labelSelector.matchExpressions[0].values",
        "values must be non-empty for In/NotIn",
        id="match-expression-in-without-values",
    ),
    pytest.param(
        scenario_body,
        _spec(target={"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}}),
        "spec.target.labelSelector.matchExpressions[0].values",
        "empty for Exists/DoesNotExist",
        id="match-expression-exists-with-values",
    ),
    pytest.param(
        scenario_body, _spec(target={"kind": "Service"}), "spec.target.kind", "Unsupported value", id="bad-target-kind"
    ),
    pytest.param(
        scenario_body,
        _spec(target={"namespaces": ["Prod"]}),
        "spec.target.namespaces[0]",
        "should match",
        id="bad-namespace",
    ),
    pytest.param(
        scenario_body, _without("spec", "target"), "spec.target", "Required value", id="scenario-without-target"
    ),
    pytest.param(
        scenario_body,
        _spec(parameters=[{"name": "x", "default": True}]),
        "spec.parameters[0].default",
        "integer,string",
        id="parameter-default-bool",
    ),
    pytest.param(
        run_body,
        _without("spec", "scenarioRef"),
        "spec",
        "exactly one of scenarioRef and workflowRef is required",
        id="run-without-ref",
    ),
    pytest.param(
        run_body,
        _spec(scenarioRef={"name": "Not_A_Name"}),
        "spec.scenarioRef.name",
        "should match",
        id="bad-scenario-ref-name",
    ),
    pytest.param(run_body, _spec(timeout="forever"), "spec.timeout", "should match", id="bad-timeout"),
    pytest.param(run_body, _spec(seed=-1), "spec.seed", "greater than or equal to 0", id="negative-seed"),
    # Bounds (docs/limits.md): each of these once reached the operator and failed there, some after a fault was in.
    pytest.param(
        scenario_body,
        _step(duration="25h", faults=[{"type": "pod-kill"}]),
        "spec.steps[0].duration",
        "must be at most 24h",
        id="step-longer-than-a-day",
    ),
    pytest.param(
        scenario_body,
        _step(duration="99999999999999999h", faults=[{"type": "pod-kill"}]),
        "spec.steps[0].duration",
        "must be at most 24h",
        id="step-duration-overflowing-the-clock",
    ),
    pytest.param(run_body, _spec(timeout="169h"), "spec.timeout", "between 1s and 168h", id="timeout-over-a-week"),
    pytest.param(
        run_body, _spec(timeout="9999999999999999999h"), "spec.timeout", "between 1s and 168h", id="timeout-overflow"
    ),
    pytest.param(
        scenario_body,
        _spec(steadyState={"probes": [{"name": "p", "type": "http", "interval": "0s", "http": {"url": "http://x/"}}]}),
        "spec.steadyState.probes[0].interval",
        "between 100ms and 1h",
        id="probe-interval-zero",
    ),
    pytest.param(
        scenario_body,
        _spec(assertions=[{"name": "r", "type": "recovery_time", "expected": 5}] * 2),
        "spec.assertions",
        "assertion names must be unique",
        id="duplicate-assertion-names",
    ),
    pytest.param(
        scenario_body,
        _fault(type="network-partition", networkPartition={"allowedPeers": [{"cidr": "999.1.1.1/99"}]}),
        "spec.steps[0].faults[0].networkPartition.allowedPeers[0].cidr",
        "must be a CIDR",
        id="peer-cidr-not-an-address",
    ),
    pytest.param(
        run_body,
        _spec(parameters={"replicas": True}),
        "spec.parameters.replicas",
        "integer,string",
        id="param-bool",
    ),
]


@pytest.mark.parametrize(("make_body", "mutate", "field", "fragment"), INVALID)
def test_invalid_input_is_rejected_naming_the_field(
    custom: client.CustomObjectsApi,
    namespace: str,
    make_body: Callable[[], Body],
    mutate: Callable[[Body], None],
    field: str,
    fragment: str,
) -> None:
    body = make_body()
    mutate(body)
    with pytest.raises(ApiException) as caught:
        create(custom, namespace, body)
    assert caught.value.status == 422, caught.value.body
    message = message_of(caught.value)
    assert f"{field}: " in message, message
    assert fragment in message, message


@pytest.mark.parametrize(
    ("make_body", "path", "field"),
    [
        pytest.param(scenario_body, ("spec",), "spec.blastRadius", id="scenario-spec"),
        pytest.param(scenario_body, ("spec", "target"), "spec.target.blastRadius", id="scenario-target"),
        pytest.param(run_body, ("spec", "scenarioRef"), "spec.scenarioRef.blastRadius", id="run-scenario-ref"),
    ],
)
def test_unknown_fields_are_rejected_under_strict_validation(
    custom: client.CustomObjectsApi,
    namespace: str,
    make_body: Callable[[], Body],
    path: tuple[str, ...],
    field: str,
) -> None:
    body = make_body()
    node = body
    for key in path:
        node = node[key]
    node["blastRadius"] = 3
    with pytest.raises(ApiException) as caught:
        create(custom, namespace, body)
    # Strict decoding fails before schema validation: the API server answers 400 BadRequest, not 422.
    assert caught.value.status == 400, caught.value.body
    message = message_of(caught.value)
    assert f'unknown field "{field}"' in message, message


# --- kubectl ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (
            "testrun.spec",
            ["Which scenario (or workflow) to run", "scenarioRef", "workflowRef", "The scenario this run executes"],
        ),
        ("chaosscenario.spec.target", ["Which workloads the faults hit.", "labelSelector", "What the faults act on"]),
        ("trun", ["One execution of a ChaosScenario"]),
        ("csc.spec.steps.faults.type", ["The fault to inject.", "pod-kill"]),
    ],
)
def test_kubectl_explain_shows_the_descriptions(kubeconfig: Path, resource: str, expected: list[str]) -> None:
    def explained() -> str | None:
        out = kubectl(kubeconfig, "explain", resource, check=False)
        # The OpenAPI document is republished shortly after a CRD changes; wait until it carries the text.
        return out.stdout if out.returncode == 0 and all(text in out.stdout for text in expected) else None

    wait_for(explained, timeout=30, interval=0.5, description=f"kubectl explain {resource} to show {expected}")


def test_short_names_and_category_resolve_to_our_kinds(kubeconfig: Path) -> None:
    out = kubectl(kubeconfig, "api-resources", "--no-headers", "-o", "wide").stdout
    owners: dict[str, list[str]] = {}
    for line in out.splitlines():
        fields = line.split()
        if not fields:
            continue
        # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND VERBS [CATEGORIES]: empty columns are simply missing.
        api_version_at = next(i for i, field in enumerate(fields) if "/" in field or field == "v1")
        shorts = fields[1].split(",") if api_version_at == 2 else []
        for short in shorts:
            owners.setdefault(short, []).append(fields[0])
    for resource in KINDS.values():
        for short in resource.short_names:
            assert owners.get(short) == [resource.plural], f"{short} is also the short name of {owners.get(short)}"
    categories = kubectl(kubeconfig, "api-resources", "--categories=chaos", "-o", "name").stdout.split()
    assert sorted(categories) == sorted(f"{resource.plural}.{GROUP}" for resource in KINDS.values())


def _now() -> str:
    return now_iso_seconds()


def test_printer_columns_status_subresource_and_kubectl_wait(
    custom: client.CustomObjectsApi, namespace: str, kubeconfig: Path
) -> None:
    create(custom, namespace, scenario_body())
    create(custom, namespace, run_body("run-1"))

    table = kubectl(kubeconfig, "get", "testruns", "-n", namespace).stdout
    assert table.split("\n", 1)[0].split() == [
        "NAME", "SCENARIO", "WORKFLOW", "PHASE", "TARGETS", "STEP", "DURATION", "RECOVERY", "AGE"
    ]  # fmt: skip
    wide = kubectl(kubeconfig, "get", "trun", "-n", namespace, "-o", "wide").stdout
    assert wide.split("\n", 1)[0].split()[-1] == "REASON"
    chaos = kubectl(kubeconfig, "get", "csc", "-n", namespace).stdout
    assert chaos.split("\n", 1)[0].split() == [
        "NAME", "TYPE", "LIFECYCLE", "SCHEDULE", "SUSPEND", "RUNS", "PASS-RATE", "LAST", "NEXT", "AGE"
    ]  # fmt: skip

    # The status subresource: status written through the main resource is ignored, and spec through status.
    ignored = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "testruns", "run-1", {"status": {"phase": "Failed"}}
    )
    assert "status" not in cast(Body, ignored)
    status = {
        "phase": "Passed",
        "reason": "AllStepsPassed",
        "targets": 3,
        "durationSeconds": 42.5,
        "duration": "42.5s",
        "futureField": {"kept": True},
    }
    patched = patch_status(custom, namespace, "run-1", {"status": status, "spec": {"abort": True}})
    assert patched["status"] == status, "known and unknown status fields are stored as written"
    assert patched["spec"]["abort"] is False

    row = kubectl(kubeconfig, "get", "testrun", "run-1", "-n", namespace, "--no-headers", "-o", "wide").stdout.split()
    # No STEP once the run is over (an empty cell: nothing between the spaces), DURATION as a duration.
    assert row[:5] == ["run-1", "kill-one", "Passed", "3", "42.5s"], row
    assert row[-1] == "AllStepsPassed"
    kubectl(
        kubeconfig, "wait", "-n", namespace, "testrun/run-1", "--for=jsonpath={.status.phase}=Passed", "--timeout=10s"
    )

    condition = {
        "type": "Completed",
        "status": "True",
        "reason": "AllStepsPassed",
        "message": "every step passed",
        "lastTransitionTime": _now(),
    }
    patch_status(custom, namespace, "run-1", {"status": {"conditions": [condition]}})
    kubectl(kubeconfig, "wait", "-n", namespace, "trun/run-1", "--for=condition=Completed", "--timeout=10s")


def test_status_conditions_are_validated(custom: client.CustomObjectsApi, namespace: str) -> None:
    create(custom, namespace, run_body("run-2"))
    with pytest.raises(ApiException) as caught:
        patch_status(custom, namespace, "run-2", {"status": {"conditions": [{"type": "Completed"}]}})
    assert caught.value.status == 422
    assert "status.conditions[0].status: Required value" in message_of(caught.value)
