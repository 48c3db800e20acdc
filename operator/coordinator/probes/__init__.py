"""Steady-state probes: one module per probe type, each turning a probe spec into one ``Sample``."""
