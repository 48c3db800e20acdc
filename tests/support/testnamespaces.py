"""Namespaces a test makes for itself: a name that says which test and session, and a delete that does not wait."""

from __future__ import annotations

import re
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException


def create_test_namespace(
    core: client.CoreV1Api, request: pytest.FixtureRequest, prefix: str, labels: dict[str, str], length: int = 36
) -> str:
    """``<prefix>-<test name>-<random>``, labelled with ``labels``."""
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:length].strip("-")
    name = f"{prefix}-{base}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    return name


def delete_test_namespace(core: client.CoreV1Api, name: str) -> None:
    """Delete without waiting (deletion is the cluster's job); already gone is fine."""
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
