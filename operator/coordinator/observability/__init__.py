"""Watching the operator from outside: Prometheus metrics, health endpoints, structured logs."""
