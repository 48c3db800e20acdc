"""Test Coordinator: a Kubernetes operator for declarative, safe, measurable chaos tests."""

__version__ = "0.1.0"
