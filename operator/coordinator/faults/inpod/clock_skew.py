"""clock-skew: what the agent runs to shift the target container's CLOCK_REALTIME (pure).

The agent joins the target container's PID namespace (``targetContainerName``) with the one capability
``SYS_PTRACE`` and runs the tracer ``coordinator-clock-skew`` (C, ``hack/agent/clock-skew/``, built into the tools
image). The tracer patches ``__vdso_clock_gettime``, ``__vdso_gettimeofday`` and ``__vdso_time`` of every process
whose ``/proc/PID/cgroup`` names the container's ID, reads the bytes back, and says how many it patched; none
patched is a failure (exit 2). The patch carries its own deadline, the hold's end plus ``EXPIRY_MARGIN_SECONDS``,
after which it adds nothing: the dead man's switch for an agent that is SIGKILLed. The revert writes the original
bytes back, copied from the tracer's own vDSO, so it needs no saved state and finding them in place is success.
docs/inpod-faults.md "clock-skew" has the evidence and the limits (x86-64 only; processes started later, such as
``kubectl exec date``, are never skewed).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass

TRACER = "coordinator-clock-skew"
# The patch stops adding the offset this long after the hold would end, even if nobody restores it.
EXPIRY_MARGIN_SECONDS = 5
MAX_OFFSET_SECONDS = 10 * 365 * 24 * 3600
_CONTAINER = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")

# The first line of the checks below: the agent reports their last line of output as the reason they failed.
CHECK = "# clock-skew check\n"
# Refuses every node but x86-64.
ARCH_CHECK = CHECK + (
    'machine=$(uname -m); if [ "$machine" != x86_64 ]; then '
    'echo "clock-skew patches x86-64 machine code; this node is $machine" >&2; exit 2; fi'
)


def explains_itself(argv: list[str] | tuple[str, ...]) -> bool:
    """The tracer and the checks: their output is the report (the reason they failed, or what they did)."""
    return argv[0] == TRACER or argv[-1].startswith(CHECK)


@dataclass(frozen=True)
class ClockSkew:
    """``clock-skew``: CLOCK_REALTIME of ``container``'s running processes reads ``offset_seconds`` off.

    ``container_id`` (``status.containerStatuses[].containerID``, with or without its ``containerd://`` prefix)
    is how the tracer finds the container's processes in the shared PID namespace. None (the status had none: the
    container is not running, or the node runs no containers): the agent refuses with that reason.
    """

    container: str
    offset_seconds: int
    container_id: str | None

    def __post_init__(self) -> None:
        if not _CONTAINER.match(self.container):
            raise ValueError(f'clock-skew: container "{self.container}" is not a container name')
        if self.offset_seconds == 0 or abs(self.offset_seconds) > MAX_OFFSET_SECONDS:
            raise ValueError(
                f"clock-skew: offset_seconds must be non-zero and within {MAX_OFFSET_SECONDS} (10 years), "
                f"got {self.offset_seconds}"
            )
        if self.container_id is not None and not _CONTAINER_ID.match(self.bare_container_id or ""):
            raise ValueError(f'clock-skew: container_id "{self.container_id}" is not a container ID')

    @property
    def bare_container_id(self) -> str | None:
        """``containerd://abc…`` -> ``abc…``."""
        return self.container_id.split("://", 1)[-1] if self.container_id else None

    @property
    def target(self) -> str:
        return f"container:{self.bare_container_id}"

    @property
    def unknown_container(self) -> list[str]:
        """The command that refuses a fault whose container had no ID (its last line is the reason)."""
        reason = (
            f"container {self.container} had no containerID in the pod status when the agent was made "
            "(not running?): its processes cannot be found"
        )
        return ["/bin/sh", "-c", f"{CHECK}echo {shlex.quote(reason)} >&2; exit 2"]


def patch_tag(fault_id: str) -> str:
    """The 16 hex digits the tracer writes into this fault's patch: its restore removes only patches with this tag,
    so a late revert never removes a skew that another fault installed since."""
    return hashlib.sha256(f"clock-skew/{fault_id}".encode()).hexdigest()[:16]


def apply_commands(fault: ClockSkew, fault_id: str, duration_seconds: int) -> list[list[str]]:
    """Refuse other architectures, then patch every process of the container (the tracer exits when done).

    The patch expires by itself ``EXPIRY_MARGIN_SECONDS`` after the hold would end: the tracer counts from its own
    start, which is the moment the hold begins.
    """
    expire_after = duration_seconds + EXPIRY_MARGIN_SECONDS
    if fault.bare_container_id is None:
        return [["/bin/sh", "-c", ARCH_CHECK], fault.unknown_container]
    return [
        ["/bin/sh", "-c", ARCH_CHECK],
        [TRACER, "apply", str(fault.offset_seconds), str(expire_after), fault.target, patch_tag(fault_id)],
    ]


def hold_command(duration_seconds: int) -> list[str]:
    """The skew lives in the target's memory; the agent holds with a sleep (also when the apply can only refuse,
    so the agent is never mistaken for a one-shot fault)."""
    return ["sleep", str(duration_seconds)]


def revert_commands(fault: ClockSkew, fault_id: str) -> list[list[str]]:
    """Put the original code back in every process of the container that holds this fault's patch (none:
    success)."""
    if fault.bare_container_id is None:
        return []  # nothing was applied
    return [[TRACER, "restore", fault.target, patch_tag(fault_id)]]
