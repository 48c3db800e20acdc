"""One module per fault, all behind ``FaultDriver`` (plan -> apply -> revert, each idempotent).

A fault type is declared in ``coordinator.api.models`` (``FAULT_TYPES``: its options and target kinds) and driven
from here: ``DRIVERS`` below is the registry, one line per driver. docs/adding-a-fault.md walks through it.
"""

from __future__ import annotations

from coordinator.api.models import (
    CPU_STRESS,
    DNS_FAULT,
    HTTP_FAULT,
    IO_STRESS,
    MEMORY_STRESS,
    NETWORK_BANDWIDTH,
    NETWORK_CORRUPT,
    NETWORK_DELAY,
    NETWORK_DUPLICATE,
    NETWORK_LOSS,
    FaultType,
)
from coordinator.faults import ephemeral
from coordinator.faults.base import FaultDriver
from coordinator.faults.ephemeral import NET_ADMIN, NO_CAPABILITY, ClockSkewFault, ContainerKillFault, InPodFault
from coordinator.faults.network_partition import NetworkPartitionFault
from coordinator.faults.node_cordon import NodeCordonFault
from coordinator.faults.node_drain import NodeDrainFault
from coordinator.faults.pod_failure import PodFailureFault
from coordinator.faults.pod_kill import PodKillFault
from coordinator.faults.rollout_restart import RolloutRestartFault
from coordinator.faults.scale import ScaleFault
from coordinator.faults.target_kinds import kind_problems

DRIVERS: dict[str, FaultDriver] = {
    str(driver.type): driver
    for driver in (
        PodKillFault(),
        PodFailureFault(),
        RolloutRestartFault(),
        ScaleFault(),
        NodeCordonFault(),
        NodeDrainFault(),
        NetworkPartitionFault(),
        InPodFault(NETWORK_DELAY, ephemeral.network_delay, NET_ADMIN),
        InPodFault(NETWORK_LOSS, ephemeral.network_loss, NET_ADMIN),
        InPodFault(NETWORK_DUPLICATE, ephemeral.network_duplicate, NET_ADMIN),
        InPodFault(NETWORK_CORRUPT, ephemeral.network_corrupt, NET_ADMIN),
        InPodFault(NETWORK_BANDWIDTH, ephemeral.network_bandwidth, NET_ADMIN),
        InPodFault(CPU_STRESS, ephemeral.cpu_stress, NO_CAPABILITY),
        InPodFault(MEMORY_STRESS, ephemeral.memory_stress, NO_CAPABILITY),
        InPodFault(IO_STRESS, ephemeral.io_stress, NO_CAPABILITY),
        ContainerKillFault(),
        ClockSkewFault(),
        InPodFault(DNS_FAULT, ephemeral.dns_fault, NET_ADMIN),
        InPodFault(HTTP_FAULT, ephemeral.http_fault, NET_ADMIN),
    )
}


def driver_for(fault_type: FaultType | str) -> FaultDriver:
    return DRIVERS[str(fault_type)]


__all__ = ["DRIVERS", "FaultDriver", "driver_for", "kind_problems"]
