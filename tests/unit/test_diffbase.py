"""The diff base kept nowhere: sound only while every changing handler is an on-delete one."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from coordinator.handlers.diffbase import NoDiffBase, changing_reasons_handled


def run_body(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "metadata": {
            "name": "run",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
            "finalizers": ["chaos.coordinator.dev/finalizer"],
            "managedFields": [{"manager": "kopf", "fieldsV1": {"f:metadata": {}}}],
            **metadata,
        },
        "spec": {"scenarioRef": {"name": "kill"}, "parameters": {"slot": "3"}},
        "status": {"phase": "Running", "injections": [{"id": "a", "state": "Recorded"}]},
    }


def test_the_operator_registers_no_handler_that_needs_a_diff_base() -> None:
    """Were an on.create/on.update/on.resume handler added, kopf would never call it with NoDiffBase."""
    import coordinator.handlers.registry  # noqa: F401 - registers the handlers with kopf's default registry

    assert changing_reasons_handled(kopf.get_default_registry()) == {"delete"}


def test_the_check_sees_handlers_that_would_need_one() -> None:
    registry = kopf.OperatorRegistry()

    @kopf.on.update("example.dev", "v1", "things", registry=registry)
    def updated(**_: Any) -> None: ...

    @kopf.on.resume("example.dev", "v1", "things", registry=registry)
    def resumed(**_: Any) -> None: ...

    assert changing_reasons_handled(registry) == {"update", "resume", "any"}


@pytest.mark.parametrize(
    "metadata",
    [{}, {"labels": {"app": "web"}}, {"annotations": {"team": "a", "kopf.zalando.org/x": "y"}, "labels": {}}],
)
def test_every_object_reads_as_already_handled_as_it_is(metadata: dict[str, Any]) -> None:
    storage = NoDiffBase()
    body = kopf.Body(run_body(**metadata))
    assert storage.fetch(body=body) == storage.build(body=body), "the same essence kopf builds: no change"


def test_nothing_is_stored_and_the_body_is_untouched() -> None:
    storage = NoDiffBase()
    raw = run_body(labels={"app": "web"})
    before = copy.deepcopy(raw)
    body = kopf.Body(raw)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch
    assert raw == before
