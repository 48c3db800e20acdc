"""The run engine: resolves a TestRun against the cluster and drives its resumable state machine."""
