"""One module per fault, all behind ``FaultDriver`` (plan -> apply -> revert, each idempotent).

A fault type is declared in ``coordinator.api.models`` (``FAULT_TYPES``: its options and target kinds) and driven
from here: ``DRIVERS`` below is the registry, one line per driver. docs/adding-a-fault.md walks through it.
"""

from __future__ import annotations

from coordinator.api.models import FaultType
from coordinator.faults.base import FaultDriver
from coordinator.faults.ephemeral import IN_POD_DRIVERS
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
        *IN_POD_DRIVERS.values(),
    )
}


def driver_for(fault_type: FaultType | str) -> FaultDriver:
    return DRIVERS[str(fault_type)]


__all__ = ["DRIVERS", "FaultDriver", "driver_for", "kind_problems"]
