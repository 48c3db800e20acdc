"""cmd probes (issue 23, item 5): the options in the models, the Pod each sample creates (restricted, owned,
bounded in time), how its status and output are judged, the rights a requester needs, where Pods may run, and one
sample against the in-memory API server (created, followed, read and deleted; a Pod that cannot start fails)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from coordinator.adapters.kube import ApiError
from coordinator.api.models import ChaosScenarioSpec
from coordinator.api.probes import Assertion, CmdProbe, Probe
from coordinator.domain.permissions import scenario_needs
from coordinator.domain.samples import Sample
from coordinator.domain.verdict import ProbeStats, evaluate_assertion
from coordinator.engine.probing import ProbeReach, ProbeSession, refusal
from coordinator.probes import cmd as cmd_probe
from coordinator.probes.base import ProbeRefused
from support.fake_kube import Call, FakeKube

pytestmark = pytest.mark.unit

NS = "shop"
RUN = cmd_probe.RunOwner(NS, "run-1", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
PROTECTED = frozenset({"kube-system"})


def cmd(**options: Any) -> CmdProbe:
    return CmdProbe.model_validate({"image": "busybox:1.36", "command": ["sh", "-c", "echo ok"], **options})


# --- the options ------------------------------------------------------------------------------------------------


def test_a_probe_needs_an_image_and_a_command() -> None:
    with pytest.raises(ValidationError):
        CmdProbe.model_validate({"image": "busybox", "command": []})
    with pytest.raises(ValidationError):
        CmdProbe.model_validate({"image": "busy box", "command": ["true"]})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"jsonPath": "$.rows[0].count"}, "jsonPath needs a value"),
        ({"stdoutRegex": "("}, "not a regular expression"),
        ({"jsonPath": "a b", "value": 1}, "pattern"),
        ({"env": [{"name": "A=B", "value": "x"}]}, "pattern"),
        ({"runAsUser": 0}, "greater than or equal to 1"),
        ({"expectedExitCode": 256}, "less than or equal to 255"),
        ({"resources": {"limits": {"memory": "lots"}}}, "pattern"),
    ],
)
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        cmd(**options)


# --- the Pod ----------------------------------------------------------------------------------------------------


def test_the_pod_is_restricted_bounded_labelled_and_owned_by_the_run() -> None:
    spec = cmd(args=["--fast"], env=[{"name": "DB", "value": "orders"}], runAsUser=65534)
    pod = cmd_probe.pod_body(spec, "rows", NS, 4.2, RUN)
    meta, pod_spec = pod["metadata"], pod["spec"]
    assert meta["namespace"] == NS
    assert meta["generateName"] == "run-1-rows-"
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "test-coordinator",
        "chaos.coordinator.dev/probe": "rows",
        "chaos.coordinator.dev/test-run": "run-1",
    }
    assert meta["ownerReferences"] == [
        {"apiVersion": "chaos.coordinator.dev/v1alpha1", "kind": "TestRun", "name": "run-1", "uid": RUN.uid}
    ]
    assert pod_spec["restartPolicy"] == "Never"
    assert pod_spec["activeDeadlineSeconds"] == 5
    assert pod_spec["automountServiceAccountToken"] is False
    (container,) = pod_spec["containers"]
    assert container["command"] == ["sh", "-c", "echo ok"]
    assert container["args"] == ["--fast"]
    assert container["env"] == [{"name": "DB", "value": "orders"}]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_a_run_in_another_namespace_labels_its_pod_but_does_not_own_it() -> None:
    # An owner in another namespace counts as absent: the garbage collector would delete the Pod at once.
    pod = cmd_probe.pod_body(cmd(), "rows", "other", 5, RUN)
    assert "ownerReferences" not in pod["metadata"]
    assert pod["metadata"]["labels"]["chaos.coordinator.dev/test-run"] == "run-1"


def test_scheduling_fields_reach_the_pod() -> None:
    spec = cmd(
        nodeSelector={"chaos.coordinator.dev/real-node": "true"},
        tolerations=[{"key": "chaos.coordinator.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        resources={"requests": {"cpu": "50m"}, "limits": {"memory": "64Mi"}},
        serviceAccountName="reader",
        imagePullPolicy="Never",
    )
    pod_spec = cmd_probe.pod_body(spec, "rows", NS, 5, None)["spec"]
    assert pod_spec["nodeSelector"] == {"chaos.coordinator.dev/real-node": "true"}
    assert pod_spec["tolerations"] == [
        {"key": "chaos.coordinator.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod_spec["containers"][0]["resources"] == {"requests": {"cpu": "50m"}, "limits": {"memory": "64Mi"}}
    assert pod_spec["serviceAccountName"] == "reader"
    assert pod_spec["containers"][0]["imagePullPolicy"] == "Never"
    assert pod_spec["automountServiceAccountToken"] is True


# --- the Pod's status and output --------------------------------------------------------------------------------


def pod(phase: str = "Pending", state: dict[str, Any] | None = None, **status: Any) -> dict[str, Any]:
    containers = [{"name": "probe", "state": state}] if state is not None else []
    return {"status": {"phase": phase, "containerStatuses": containers, **status}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (pod("Succeeded", {"terminated": {"exitCode": 0}}), cmd_probe.Outcome(exit_code=0)),
        (pod("Failed", {"terminated": {"exitCode": 3}}), cmd_probe.Outcome(exit_code=3)),
        (pod("Running", {"running": {}}), cmd_probe.Outcome()),
        (pod(), cmd_probe.Outcome()),
        (
            pod("Pending", {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}),
            cmd_probe.Outcome(failure="cannot start: ImagePullBackOff: pull access denied"),
        ),
        (
            pod("Failed", {"running": {}}, reason="DeadlineExceeded", message="Pod was active too long"),
            cmd_probe.Outcome(failure="the Pod failed: DeadlineExceeded: Pod was active too long"),
        ),
    ],
)
def test_outcome_reads_the_containers_end_or_why_it_cannot_start(
    status: dict[str, Any], expected: cmd_probe.Outcome
) -> None:
    assert cmd_probe.outcome(status) == expected


def test_a_pending_pod_says_why() -> None:
    unschedulable = pod(
        conditions=[
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes available"}
        ]
    )
    assert cmd_probe.pending_reason(unschedulable) == "not scheduled: Unschedulable: 0/3 nodes available"
    assert cmd_probe.pending_reason(pod("Pending", {"waiting": {"reason": "ContainerCreating"}})) == (
        "waiting: ContainerCreating"
    )


@pytest.mark.parametrize(
    ("options", "exit_code", "output", "ok", "observed"),
    [
        ({}, 0, "", True, "exit code 0"),
        ({}, 1, "checksum mismatch\n", False, "exit code 1, want 0: 'checksum mismatch'"),
        ({"expectedExitCode": 2}, 2, "", True, "exit code 2"),
        ({"stdoutRegex": "^sha256=[0-9a-f]{4}$"}, 0, "x\nsha256=beef\n", False, "output does not match"),
        ({"stdoutRegex": "sha256=[0-9a-f]{4}"}, 0, "x\nsha256=beef\n", True, "exit code 0"),
        ({"jsonPath": "$.rows[0].count", "value": 3}, 0, '{"rows": [{"count": 3}]}', True, "$.rows[0].count=3"),
        ({"jsonPath": "rows.0.count", "operator": ">=", "value": 5}, 0, '{"rows": [{"count": 3}]}', False, "want >= 5"),
        ({"jsonPath": "$.ok", "value": "True"}, 0, 'connecting\n{"ok": true}\n', True, "$.ok=True"),
        ({"jsonPath": "$.ok", "value": 1}, 0, "no json here", False, "printed no JSON"),
        ({"jsonPath": "$.missing", "value": 1}, 0, "{}", False, "no JSON value at $.missing"),
    ],
)
def test_judge_checks_exit_code_then_output(
    options: dict[str, Any], exit_code: int, output: str, ok: bool, observed: str
) -> None:
    passed, said = cmd_probe.judge(cmd(**options), exit_code, output)
    assert passed is ok
    assert observed in said


# --- rights and where Pods may run -------------------------------------------------------------------------------

PROBE = {"name": "rows", "type": "cmd", "cmd": {"image": "busybox", "command": ["true"]}}


def test_a_cmd_probe_needs_create_pods_in_the_scenarios_namespace() -> None:
    scenario = ChaosScenarioSpec.model_validate(
        {
            "target": {"kind": "Pod", "namespaces": ["web"]},
            "steps": [{"name": "s", "faults": [{"type": "pod-kill"}]}],
            "steadyState": {"probes": [PROBE]},
        }
    )
    needs = [n for n in scenario_needs(scenario, NS) if n.needed_by == "probe rows"]
    assert [n.access for n in needs] == [("create", "", "pods", "", NS)]


def test_a_protected_namespace_is_refused_before_any_sample() -> None:
    refused = refusal(Probe.model_validate(PROBE), "kube-system", ProbeReach(PROTECTED, ()))
    assert refused is not None
    assert "protected" in refused.reason


def test_a_session_with_cmd_probes_needs_the_namespace_policy() -> None:
    with pytest.raises(ValueError, match="namespace policy"):
        ProbeSession(FakeKube(), [Probe.model_validate(PROBE)], NS, reach=ProbeReach(PROTECTED, ()))


# --- one sample against the in-memory API server ----------------------------------------------------------------


async def allowed(namespace: str) -> tuple[bool, str]:
    return True, f"namespace {namespace!r} opted in"


async def refused(namespace: str) -> tuple[bool, str]:
    return False, f"namespace {namespace!r} has not opted in"


def kubelet(fake: FakeKube, state: dict[str, Any], phase: str, log: str = "") -> None:
    """What the kubelet would write once it ran the Pod: set right after the create is served."""

    def after(call: Call) -> None:
        if call.verb == "create" and "/pods/" in call.path:
            obj = fake.objects[call.path]
            obj["status"] = {"phase": phase, "containerStatuses": [{"name": "probe", "state": state}]}
            fake.texts[f"{call.path}/log"] = log

    fake.after = after


async def one(fake: FakeKube, spec: CmdProbe, limit: float = 2.0, check: Any = allowed) -> Sample:
    return await cmd_probe.sample(
        fake, spec, "rows", NS, limit, allowed=check, protected=PROTECTED, run=RUN, poll_seconds=0.01
    )


async def test_a_sample_runs_the_pod_reads_its_output_and_deletes_it() -> None:
    fake = FakeKube()
    kubelet(fake, {"terminated": {"exitCode": 0}}, "Succeeded", '{"rows": [{"count": 3}]}\n')
    sample = await one(fake, cmd(jsonPath="$.rows[0].count", value=3))
    assert sample.ok, sample.error
    assert sample.value == "exit code 0, $.rows[0].count=3"
    assert sample.latency_ms is not None
    (created,) = fake.written("ADDED", f"/api/v1/namespaces/{NS}/pods")
    assert created["metadata"]["ownerReferences"][0]["uid"] == RUN.uid
    assert not [p for p in fake.objects if "/pods/" in p]  # deleted after the sample
    (log,) = [c for c in fake.calls_of("get") if c.path.endswith("/log")]
    assert log.path.startswith(f"/api/v1/namespaces/{NS}/pods/run-1-rows-")


async def test_a_failing_command_fails_the_sample_with_its_exit_code() -> None:
    fake = FakeKube()
    kubelet(fake, {"terminated": {"exitCode": 1}}, "Failed", "checksum mismatch\n")
    sample = await one(fake, cmd())
    assert not sample.ok
    assert sample.error == "exit code 1, want 0: 'checksum mismatch'"


async def test_a_pod_that_cannot_pull_its_image_fails_the_sample_with_the_reason() -> None:
    fake = FakeKube()
    kubelet(fake, {"waiting": {"reason": "ErrImagePull", "message": "not found"}}, "Pending")
    sample = await one(fake, cmd(image="registry.invalid/nothing:1"))
    assert not sample.ok
    assert sample.error is not None
    assert "cannot start: ErrImagePull: not found" in sample.error
    assert not [p for p in fake.objects if "/pods/" in p]


async def test_a_pod_that_never_ends_fails_at_the_time_limit_saying_why() -> None:
    fake = FakeKube()
    kubelet(fake, {"waiting": {"reason": "ContainerCreating"}}, "Pending")
    sample = await one(fake, cmd(), limit=0.05)
    assert not sample.ok
    assert sample.error is not None
    assert "no end within 0.05s (waiting: ContainerCreating)" in sample.error
    assert sample.latency_ms == 50
    assert not [p for p in fake.objects if "/pods/" in p]


async def test_a_refused_create_fails_the_sample() -> None:
    fake = FakeKube()
    fake.fail(ApiError(403, "Forbidden", "pods is forbidden"), verb="create")
    sample = await one(fake, cmd())
    assert not sample.ok
    assert sample.error is not None
    assert "cannot create the probe Pod" in sample.error


async def test_a_namespace_that_has_not_opted_in_refuses_the_probe() -> None:
    fake = FakeKube()
    with pytest.raises(ProbeRefused, match="has not opted in"):
        await one(fake, cmd(), check=refused)
    assert not fake.mutations()


async def test_sampling_does_not_block_the_event_loop() -> None:
    fake = FakeKube()
    kubelet(fake, {"waiting": {"reason": "ContainerCreating"}}, "Pending")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.ensure_future(ticker())
    await one(fake, cmd(), limit=0.1)
    task.cancel()
    assert ticks >= 5


# --- data_consistency on a cmd probe ----------------------------------------------------------------------------


def test_data_consistency_follows_the_cmd_probes_verdict() -> None:
    probe = Probe.model_validate({**PROBE, "mode": "during"})
    assertion = Assertion.model_validate({"name": "rows-match", "type": "data_consistency", "probe": "rows"})
    stats = ProbeStats.of(probe)
    stats.record(Sample(ok=True, at=1.0, value="exit code 0"))
    assert evaluate_assertion(assertion, {"rows": stats}, None).passed
    stats.record(Sample(ok=False, at=2.0, error="exit code 1, want 0: 'checksum mismatch'"))
    result = evaluate_assertion(assertion, {"rows": stats}, None)
    assert not result.passed
    assert result.message == "probe rows: exit code 1, want 0: 'checksum mismatch'"
