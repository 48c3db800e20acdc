"""Pure domain logic of the operator: durations, target eligibility and selection.

Nothing here talks to Kubernetes or does I/O; callers pass plain data in and act on what comes back.
"""
