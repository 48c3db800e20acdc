"""What runs inside a target pod for the in-pod faults (network shaping and filtering, stress, container kill,
clock skew, DNS, HTTP).

The operator adds an ephemeral container to the target pod; the container shares the pod's network namespace
(and, with ``targetContainerName``, the target container's PID namespace) and runs one POSIX ``sh`` script, the
*agent*, that applies the fault, holds it for the duration and removes it on exit or SIGTERM. Everything here is
pure: ``commands`` builds the exact argv lists from small frozen option classes, ``agent`` renders the script.
See docs/inpod-faults.md for the mechanism and the kernel features each fault needs.
"""

from __future__ import annotations

from coordinator.faults.inpod.agent import agent_command, agent_script, revert_agent_command, revert_script
from coordinator.faults.inpod.clock_skew import ClockSkew
from coordinator.faults.inpod.commands import (
    ContainerKill,
    CpuStress,
    FaultCommands,
    InPodFault,
    IoStress,
    MemoryStress,
    NetworkBandwidth,
    NetworkCorrupt,
    NetworkDelay,
    NetworkDuplicate,
    NetworkLoss,
    NetworkPartition,
    TrafficScope,
    apply_commands,
    build_commands,
    fault_id_for,
    fault_name,
    hold_command,
    revert_commands,
)
from coordinator.faults.inpod.dns import DnsFault
from coordinator.faults.inpod.http import HttpFault

__all__ = [
    "ClockSkew",
    "ContainerKill",
    "CpuStress",
    "DnsFault",
    "FaultCommands",
    "HttpFault",
    "InPodFault",
    "IoStress",
    "MemoryStress",
    "NetworkBandwidth",
    "NetworkCorrupt",
    "NetworkDelay",
    "NetworkDuplicate",
    "NetworkLoss",
    "NetworkPartition",
    "TrafficScope",
    "agent_command",
    "agent_script",
    "apply_commands",
    "build_commands",
    "fault_id_for",
    "fault_name",
    "hold_command",
    "revert_agent_command",
    "revert_commands",
    "revert_script",
]
