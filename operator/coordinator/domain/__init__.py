"""Pure domain logic of the operator: target eligibility and selection, schedules, parameters, the verdict.

Nothing here talks to Kubernetes or does I/O; callers pass plain data in and act on what comes back.
"""
