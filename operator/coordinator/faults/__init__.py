"""One module per fault, all behind ``FaultDriver`` (plan -> apply -> revert, each idempotent)."""

from __future__ import annotations

from coordinator.api.inpod import INPOD_OPTION_FIELDS
from coordinator.api.models import FaultType
from coordinator.faults.base import FaultDriver
from coordinator.faults.ephemeral import driver_for_type
from coordinator.faults.network_partition import NetworkPartitionFault
from coordinator.faults.node_cordon import NodeCordonFault
from coordinator.faults.node_drain import NodeDrainFault
from coordinator.faults.pod_failure import PodFailureFault
from coordinator.faults.pod_kill import PodKillFault
from coordinator.faults.rollout_restart import RolloutRestartFault
from coordinator.faults.scale import ScaleFault

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
        *(driver_for_type(fault) for fault in FaultType if fault.value in INPOD_OPTION_FIELDS),
    )
}


def driver_for(fault_type: FaultType | str) -> FaultDriver:
    return DRIVERS[str(fault_type)]
