"""Workflow runs: a TestRun with spec.workflowRef drives one child TestRun per node of its ChaosWorkflow."""

from coordinator.engine.workflow.children import WAKEUPS, Children
from coordinator.engine.workflow.machine import WorkflowMachine

__all__ = ["WAKEUPS", "Children", "WorkflowMachine"]
