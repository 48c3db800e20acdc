"""In-pod faults: an ephemeral container added to the target pod runs the fault agent (faults/inpod/agent.py).

The container shares the pod's network namespace (network faults need only NET_ADMIN, no privileged DaemonSet and
no runtime socket) or, for container-kill, the target container's process namespace. The agent applies the fault,
holds it for the step's duration and removes it on exit or SIGTERM: a dead man's switch, so the fault ends even if
the operator never comes back. Ephemeral containers cannot be removed through the API; the ledger records which
one ran where, and an early revert (abort, deletion) reports that the agent ends the fault at its deadline.

A fault counts as applied only when the agent says so: the API server accepting the patch proves nothing (the
image may be missing, the kernel may lack a module, the node may run no containers at all). ``apply`` waits until
the agent's log says it holds the fault (or, for container-kill, until the signal landed), and turns an agent that
never starts or exits with an error into a FaultError carrying the agent's own reason.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic

from coordinator.adapters.kube import STRATEGIC_PATCH, ApiError, KubeApi
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
    TrafficScopeOptions,
)
from coordinator.api.models import (
    CLOCK_SKEW,
    CONTAINER_KILL,
    DNS_FAULT,
    HTTP_FAULT,
    NETWORK_BANDWIDTH,
    NETWORK_CORRUPT,
    NETWORK_DELAY,
    NETWORK_DUPLICATE,
    NETWORK_LOSS,
    Fault,
    FaultDeclaration,
    Injection,
    InjectionState,
    OptionsT,
)
from coordinator.faults.base import FaultContext, FaultDriver, FaultError, original_of, target_path, unless_gone
from coordinator.faults.inpod import agent, commands
from coordinator.faults.inpod.dns import DnsFault


class AgentNotRunningError(FaultError):
    """The agent never ran: its image cannot be pulled, admission refused it, or no kubelet started it in time.
    The run ends Error with reason AgentNotRunning."""


class AgentFailedError(FaultError):
    """The agent ran and could not apply the fault (a missing kernel feature, no permission): reason AgentFailed."""


DEFAULT_AGENT_IMAGE = "test-coordinator-tools:0.1.0"
# The capability an agent adds (everything else is dropped): network faults shape the pod's network namespace.
NET_ADMIN, KILL, NO_CAPABILITY = "NET_ADMIN", "KILL", ""
# clock-skew's tracer: ptrace of the target container's processes (not in Pod Security baseline's list).
SYS_PTRACE = "SYS_PTRACE"
# Container waiting reasons that will not resolve by themselves while a step lasts.
AGENT_CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
SIGKILLED = 137  # a container's exit code after SIGKILL
# The agent's log line once the fault is in place (faults/inpod/agent.py: "say 'holding: ...'").
AGENT_HOLDING = "coordinator-agent: holding"


class AgentState(StrEnum):
    STARTING = "Starting"
    HOLDING = "Holding"  # the fault is in place
    DONE = "Done"  # a one-shot fault delivered, or a hold that already ended cleanly
    FAILED = "Failed"


@dataclass(frozen=True)
class AgentProgress:
    state: AgentState
    message: str = ""
    cannot_start: bool = False  # FAILED before the agent ever ran (image, container creation)


def _container_status(pod: Mapping[str, Any], key: str, name: str) -> Mapping[str, Any] | None:
    for status in pod.get("status", {}).get(key) or []:
        if status.get("name") == name:
            return dict(status)
    return None


def restart_count(pod: Mapping[str, Any], container: str) -> int:
    status = _container_status(pod, "containerStatuses", container)
    return int(status.get("restartCount", 0)) if status else 0


def agent_progress(
    pod: Mapping[str, Any],
    agent: str,
    log: str,
    *,
    one_shot: bool = False,
    target_container: str | None = None,
    restarts_before: int = 0,
) -> AgentProgress:
    """Where an agent is, from the pod's status and the agent's log (pure).

    container-kill's agent shares the target's process namespace, so a signal that ends the target's PID 1 ends
    the agent too (with SIGKILL): for it, the target's restart count going up is the proof.
    """
    if one_shot and target_container is not None and restart_count(pod, target_container) > restarts_before:
        return AgentProgress(AgentState.DONE, f"container {target_container} restarted")
    status = _container_status(pod, "ephemeralContainerStatuses", agent)
    if status is None:
        return AgentProgress(AgentState.STARTING, "the kubelet has not reported the agent container")
    state = status.get("state") or {}
    if "waiting" in state:
        waiting = state["waiting"] or {}
        reason = str(waiting.get("reason") or "")
        if reason in AGENT_CANNOT_START:
            detail = str(waiting.get("message") or "").strip()
            image = status.get("image", "")
            return AgentProgress(
                AgentState.FAILED,
                f"agent container cannot start ({reason}{': ' + detail if detail else ''}; image {image})",
                cannot_start=True,
            )
        return AgentProgress(AgentState.STARTING, f"agent container waiting ({reason or 'no reason'})")
    if "terminated" in state:
        ended = state["terminated"] or {}
        code = int(ended.get("exitCode", -1))
        if code == 0 and (one_shot or AGENT_HOLDING in log):
            return AgentProgress(AgentState.DONE, "agent finished")
        if one_shot and code == SIGKILLED:
            # Killed with the target's PID namespace: the signal ended the target's PID 1. The kubelet reports
            # the target's restart a moment later; until then (or the deadline) this is not yet proof.
            return AgentProgress(
                AgentState.STARTING, f"agent ended with its target; waiting for {target_container} to restart"
            )
        message = str(ended.get("message") or "").strip() or _last_agent_line(log) or str(ended.get("reason") or "")
        return AgentProgress(AgentState.FAILED, f"agent exited with status {code}: {message}")
    if "running" in state and not one_shot and AGENT_HOLDING in log:
        return AgentProgress(AgentState.HOLDING, "fault in place")
    return AgentProgress(AgentState.STARTING, "agent running, fault not yet confirmed")


def _last_agent_line(log: str) -> str:
    lines = [ln for ln in log.splitlines() if ln.startswith("coordinator-agent:")]
    return lines[-1].removeprefix("coordinator-agent:").strip() if lines else ""


def _scope(options: TrafficScopeOptions) -> commands.TrafficScope:
    return commands.TrafficScope(
        interface=options.interface,
        cidrs=tuple(options.cidrs),
        ports=tuple(options.ports),
        direction=str(options.direction),  # type: ignore[arg-type]
    )


def given(options: OptionsT | None, declaration: FaultDeclaration[OptionsT]) -> OptionsT:
    """Options the CRD requires; a spec that bypassed it is refused by name (ValueError, as a bad option is)."""
    if options is None:
        raise ValueError(f"{declaration.type} faults need {declaration.option_field} options")
    return options


# How each fault's options become the agent's fault description (pure; ValueError names a bad option).


def network_delay(o: NetworkDelayOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    d = given(o, NETWORK_DELAY)
    return commands.NetworkDelay(d.latencyMs, d.jitterMs, d.correlationPercent, _scope(d.scope))


def network_loss(o: NetworkPercentOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    p = given(o, NETWORK_LOSS)
    return commands.NetworkLoss(p.percent, p.correlationPercent, _scope(p.scope))


def network_duplicate(o: NetworkPercentOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    p = given(o, NETWORK_DUPLICATE)
    return commands.NetworkDuplicate(p.percent, p.correlationPercent, _scope(p.scope))


def network_corrupt(o: NetworkPercentOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    p = given(o, NETWORK_CORRUPT)
    return commands.NetworkCorrupt(p.percent, p.correlationPercent, _scope(p.scope))


def network_bandwidth(o: NetworkBandwidthOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    b = given(o, NETWORK_BANDWIDTH)
    return commands.NetworkBandwidth(b.rate, b.burstBytes, b.limitBytes, scope=_scope(b.scope))


def cpu_stress(c: CpuStressOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    return commands.CpuStress(c.workers, c.loadPercent) if c else commands.CpuStress()


def memory_stress(m: MemoryStressOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    return commands.MemoryStress(m.size, m.workers) if m else commands.MemoryStress()


def io_stress(i: IoStressOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    return commands.IoStress(i.workers, i.size) if i else commands.IoStress()


def _container_id(pod: Mapping[str, Any], container: str) -> str | None:
    """The running container's ID from the pod's status, without its ``containerd://`` prefix."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        if status.get("name") == container and status.get("containerID"):
            return str(status["containerID"]).split("://", 1)[-1]
    return None


def container_kill(o: ContainerKillOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    k = given(o, CONTAINER_KILL)
    return commands.ContainerKill(k.containerName, k.signal, _container_id(pod, k.containerName))


def clock_skew(o: ClockSkewOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    c = given(o, CLOCK_SKEW)
    # Without an ID (a container not running, a node without containers) the agent refuses with that reason.
    return commands.ClockSkew(c.containerName, c.offset_seconds, _container_id(pod, c.containerName))


def dns_fault(o: DnsFaultOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    d = given(o, DNS_FAULT)
    patterns = tuple(d.patterns)
    if d.error is not None:
        return DnsFault(patterns, "error", rcode=str(d.error.rcode))
    if d.delay is not None:
        return DnsFault(patterns, "delay", delay_ms=max(1, round(parse_duration(d.delay.duration) * 1000)))
    return DnsFault(patterns, "random")


def http_fault(o: HttpFaultOptions | None, pod: Mapping[str, Any]) -> commands.InPodFault:
    h = given(o, HTTP_FAULT)
    action = h.action
    options = getattr(h, action).model_dump(mode="json", exclude_none=True)
    if action == "delay":
        options = {"delayMs": max(1, round(parse_duration(options["duration"]) * 1000))}
    return commands.HttpFault(
        h.port,
        {action: options},
        h.percent,
        path=h.path,
        path_regex=h.pathRegex,
        method=h.method,
        headers=dict(h.headers or {}),
    )


def hold_seconds(step_duration: float | None) -> int:
    """How long the agent holds its fault: the step's duration in whole seconds, at least 1 (the least the agent
    can hold; a 0s step still gets its fault applied and removed). The step's duration has its default in the
    model (Step.duration), so an unknown one is an error, not a second default."""
    if step_duration is None:
        raise FaultError("an in-pod fault needs the step's duration, and none was given")
    return max(1, math.ceil(step_duration))


class InPodFault(FaultDriver, Generic[OptionsT]):
    """The driver of an in-pod fault type, one instance per type (the registry in coordinator.faults): its
    declaration, how its options become the agent's fault description, and the capability the agent adds."""

    def __init__(
        self,
        declaration: FaultDeclaration[OptionsT],
        describe: Callable[[OptionsT | None, Mapping[str, Any]], commands.InPodFault],
        capability: str,
        image: str = DEFAULT_AGENT_IMAGE,
    ) -> None:
        self.declaration = declaration
        self.describe = describe
        self.capability = capability
        self.image = image

    def agent_fault(self, fault: Fault, pod: Mapping[str, Any]) -> commands.InPodFault:
        """The agent's description of this fault on ``pod`` (pure); ValueError names a bad option."""
        return self.describe(self.declaration.options_of(fault), pod)

    def target_container(self, fault: Fault) -> str | None:
        """The container whose process namespace the agent joins; None: the pod's (network) namespaces only."""
        return None

    def guard_pod(self, fault: Fault, pod: Mapping[str, Any]) -> None:
        """Refuse pods where the agent would hit more than the pod: the node's network (or, for container-kill,
        the node's processes)."""
        spec = pod.get("spec", {})
        if self.capability == NET_ADMIN and spec.get("hostNetwork"):
            name = pod.get("metadata", {}).get("name")
            raise FaultError(f"pod {name} uses hostNetwork: a {fault.type} fault would shape the node itself")

    def container(
        self, fault: Fault, pod: Mapping[str, Any], injection_id: str, duration_seconds: int, image: str
    ) -> dict[str, Any]:
        """The ephemeral container spec that runs the agent (pure)."""
        self.guard_pod(fault, pod)
        fault_id = commands.fault_id_for(injection_id)
        try:
            command = agent.agent_command(self.agent_fault(fault, pod), duration_seconds, fault_id=fault_id)
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
        capabilities: dict[str, Any] = {"drop": ["ALL"]}
        if self.capability:
            capabilities["add"] = [self.capability]
        container: dict[str, Any] = {
            "name": f"coordinator-{fault_id}"[:63].rstrip("-_").replace("_", "-"),
            "image": image,
            "command": command,
            "terminationMessagePolicy": "File",
            "securityContext": {
                "runAsUser": 0,
                "runAsNonRoot": False,
                "allowPrivilegeEscalation": False,
                "capabilities": capabilities,
            },
        }
        target_container = self.target_container(fault)
        if target_container is not None:
            container["targetContainerName"] = target_container
        return container

    def original(self, fault: Fault, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        # Nothing of the pod changes but the ephemeral container list; the record names the agent's container.
        return {"inPod": True}

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        ctx.guard(injection.target)
        pod = await ctx.client.get(target_path(injection.target))
        if injection.target.uid and pod["metadata"]["uid"] != injection.target.uid:
            raise FaultError(f"pod {injection.target.name} was replaced before injection")
        duration = hold_seconds(ctx.step_duration)
        container = self.container(fault, pod, injection.id, duration, ctx.agent_image or self.image)
        existing = {c["name"] for c in pod.get("spec", {}).get("ephemeralContainers") or []}
        target_container = self.target_container(fault)
        restarts_before = restart_count(pod, target_container) if target_container else 0
        if container["name"] not in existing:  # a repeated apply after a restart adds nothing
            try:
                await ctx.client.patch(
                    target_path(injection.target, "ephemeralcontainers"),
                    {"spec": {"ephemeralContainers": [container]}},
                    STRATEGIC_PATCH,
                )
            except ApiError as exc:
                if exc.status in (400, 403, 422) and "violates PodSecurity" in exc.message:
                    raise AgentNotRunningError(
                        f"{injection.fault} on pod {injection.target.name} not applied: Pod Security admission "
                        f"refused the agent ({exc.message})"
                    ) from exc
                raise
        await self.confirm(ctx, injection, container["name"], target_container, restarts_before)
        ctx.notes.append(f"agent {container['name']} ({container['image']}) confirmed in pod {injection.target.name}")
        return InjectionState.APPLIED

    async def confirm(
        self,
        ctx: FaultContext,
        injection: Injection,
        agent_name: str,
        target_container: str | None,
        restarts_before: int,
    ) -> AgentProgress:
        """Wait until the agent holds the fault (or delivered it); FaultError when it cannot or does not in time."""
        deadline = time.monotonic() + ctx.agent_start_timeout
        path = target_path(injection.target)
        one_shot = not self.reversible
        progress = AgentProgress(AgentState.STARTING, "the agent was not seen yet")
        while True:
            pod = await ctx.client.get(path)
            status = _container_status(pod, "ephemeralContainerStatuses", agent_name) or {}
            log = ""
            if "running" in (status.get("state") or {}) or "terminated" in (status.get("state") or {}):
                log = await self._agent_log(ctx, path, agent_name)
            progress = agent_progress(
                pod,
                agent_name,
                log,
                one_shot=one_shot,
                target_container=target_container,
                restarts_before=restarts_before,
            )
            if progress.state in (AgentState.HOLDING, AgentState.DONE):
                return progress
            if progress.state == AgentState.FAILED:
                error = AgentNotRunningError if progress.cannot_start else AgentFailedError
                raise error(f"{injection.fault} on pod {injection.target.name} not applied: {progress.message}")
            if time.monotonic() >= deadline:
                raise AgentNotRunningError(
                    f"{injection.fault} on pod {injection.target.name} not applied: the agent did not confirm the "
                    f"fault within {ctx.agent_start_timeout:g}s ({progress.message}); does the node run containers "
                    f"and have the image {ctx.agent_image or self.image}?"
                )
            await asyncio.sleep(ctx.agent_poll_interval)

    @staticmethod
    async def _agent_log(ctx: FaultContext, pod_path: str, agent_name: str) -> str:
        try:
            return await ctx.client.get_text(f"{pod_path}/log", {"container": agent_name, "tailLines": 50})
        except ApiError as exc:
            # The log may not be readable yet (container just started); the status still tells a failure.
            if exc.status in (400, 404):
                return ""
            raise

    async def revert(self, client: KubeApi, injection: Injection) -> None:
        """The agent removes the fault itself when its duration ends (or on SIGTERM when the pod stops).

        Ephemeral containers cannot be stopped or removed through the API, so there is nothing to call here;
        what is checked is that the pod still exists (a deleted pod took the fault with it).
        """
        _ = original_of(injection)
        await unless_gone(client.get(target_path(injection.target)))


def _guard_process_target(fault: Fault, pod: Mapping[str, Any], container: str, option: str) -> None:
    """A fault that joins a container's process namespace: never a hostPID pod, and the container must exist."""
    spec = pod.get("spec", {})
    name = pod.get("metadata", {}).get("name")
    if spec.get("hostPID"):
        raise FaultError(f"pod {name} uses hostPID: {fault.type} could reach the node's processes")
    if container not in {c.get("name") for c in spec.get("containers", [])}:
        raise FaultError(f"pod {name} has no container {container!r} ({option})")


class ContainerKillFault(InPodFault[ContainerKillOptions]):
    """container-kill: the agent joins the target container's process namespace and sends the signal once; there
    is nothing to hold or undo."""

    reversible = False

    def __init__(self, image: str = DEFAULT_AGENT_IMAGE) -> None:
        super().__init__(CONTAINER_KILL, container_kill, KILL, image)

    def target_container(self, fault: Fault) -> str | None:
        return given(CONTAINER_KILL.options_of(fault), CONTAINER_KILL).containerName

    def guard_pod(self, fault: Fault, pod: Mapping[str, Any]) -> None:
        try:
            container = given(CONTAINER_KILL.options_of(fault), CONTAINER_KILL).containerName
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
        _guard_process_target(fault, pod, container, "containerKill.containerName")

    async def apply(self, ctx: FaultContext, fault: Fault, injection: Injection) -> InjectionState:
        await super().apply(ctx, fault, injection)
        return InjectionState.IRREVERSIBLE


class ClockSkewFault(InPodFault[ClockSkewOptions]):
    """clock-skew: the agent joins the target container's process namespace with SYS_PTRACE, patches the vDSO of
    its running processes (faults/inpod/clock_skew.py), holds, and restores the original code."""

    def __init__(self, image: str = DEFAULT_AGENT_IMAGE) -> None:
        super().__init__(CLOCK_SKEW, clock_skew, SYS_PTRACE, image)

    def target_container(self, fault: Fault) -> str | None:
        return given(CLOCK_SKEW.options_of(fault), CLOCK_SKEW).containerName

    def guard_pod(self, fault: Fault, pod: Mapping[str, Any]) -> None:
        try:
            container = given(CLOCK_SKEW.options_of(fault), CLOCK_SKEW).containerName
        except ValueError as exc:
            raise FaultError(str(exc)) from exc
        _guard_process_target(fault, pod, container, "clockSkew.containerName")
