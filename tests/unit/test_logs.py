"""Logs: JSON lines (or console lines) for our records, kopf's records and structlog's, with run context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
import structlog

from coordinator.api.models import FaultType, Injection, InjectionState, Phase, TargetRef, TestRunStatus
from coordinator.domain.runs import RunInfo
from coordinator.observability.logs import RunLogger, admission_chatter, configure_logging, run_context


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    stream = io.StringIO()
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def _configure(stream: io.StringIO, log_format: str = "json", level: int = logging.INFO) -> None:
    handler = configure_logging(log_format, level)  # type: ignore[arg-type]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def _records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_stdlib_records_become_json_lines(captured: io.StringIO) -> None:
    _configure(captured)
    logging.getLogger("coordinator.engine").warning("sweep reverted %d orphaned fault(s)", 2)
    (record,) = _records(captured)
    assert record["event"] == "sweep reverted 2 orphaned fault(s)"
    assert record["level"] == "warning"
    assert record["logger"] == "coordinator.engine"
    assert record["timestamp"].endswith("Z")


def test_kopf_object_records_carry_namespace_and_run(captured: io.StringIO) -> None:
    _configure(captured)
    # What kopf's ObjectLogger attaches to each record about the object being handled.
    ref = {
        "apiVersion": "chaos.coordinator.dev/v1alpha1",
        "kind": "TestRun",
        "name": "run-1",
        "namespace": "shop",
        "uid": "0b6f1f8e-5c1a-4d1e-9a53-2f3c7f1b9e10",
    }
    logging.getLogger("kopf.objects").info("Handler 'testrun_deleted' succeeded.", extra={"k8s_ref": ref})
    other = {"kind": "ChaosScenario", "name": "kill-web", "namespace": "shop"}
    extras = {"k8s_ref": other, "settings": kopf.OperatorSettings(), "k8s_skip": True}
    logging.getLogger("kopf.objects").info("Timer succeeded.", extra=extras)
    first, second = _records(captured)
    assert (first["namespace"], first["run"]) == ("shop", "run-1")
    assert first["correlation_id"] == "0b6f1f8e-5c1a-4d1e-9a53-2f3c7f1b9e10", "kopf's lines about a run carry its UID"
    assert first["event"] == "Handler 'testrun_deleted' succeeded."
    assert second["object"] == "ChaosScenario/kill-web"
    assert "settings" not in second, "kopf's internal extras stay out of the line"
    assert "correlation_id" not in second, "only runs have a correlation ID"


def test_bound_context_reaches_stdlib_records_of_the_same_task(captured: io.StringIO) -> None:
    _configure(captured)
    with structlog.contextvars.bound_contextvars(namespace="shop", run="run-1", scenario="shop/kill-web"):
        logging.getLogger("coordinator.engine.run.machine").info("step planned")
    logging.getLogger("coordinator.engine.run.machine").info("outside")
    inside, outside = _records(captured)
    assert (inside["namespace"], inside["run"], inside["scenario"]) == ("shop", "run-1", "shop/kill-web")
    assert "run" not in outside


def test_exceptions_are_one_json_field(captured: io.StringIO) -> None:
    _configure(captured)
    try:
        raise RuntimeError("api down")
    except RuntimeError:
        logging.getLogger("coordinator").exception("sweep failed")
    (record,) = _records(captured)
    assert record["level"] == "error"
    assert "RuntimeError: api down" in record["exception"]


def test_level_filters(captured: io.StringIO) -> None:
    _configure(captured, level=logging.WARNING)
    logging.getLogger("coordinator").info("quiet")
    logging.getLogger("coordinator").warning("loud")
    assert [r["event"] for r in _records(captured)] == ["loud"]


def test_console_format_is_for_humans(captured: io.StringIO) -> None:
    _configure(captured, "console")
    logging.getLogger("coordinator").info("operator ready, watching %s", "shop")
    line = captured.getvalue()
    assert "operator ready, watching shop" in line
    assert not line.lstrip().startswith("{")


def test_run_logger_logs_run_events_with_context(captured: io.StringIO) -> None:
    _configure(captured)
    run = RunInfo(namespace="shop", name="run-1", uid="u", scenario="shop/kill-web")
    target = TargetRef(kind="Deployment", namespace="shop", name="web")
    injection = Injection(
        id="0.0/scale/Deployment/shop/web", step=0, fault=FaultType.SCALE, target=target, state=InjectionState.APPLIED
    )
    logger = RunLogger()
    logger.run_started(run)
    logger.fault_injected(run, injection)
    logger.fault_reverted(run, injection)
    logger.run_finished(run, TestRunStatus(phase=Phase.FAILED, reason="ProbeFailed", durationSeconds=3.0))
    records = _records(captured)
    assert [r["event"] for r in records] == ["run started", "fault injected", "fault reverted", "run finished"]
    for record in records:
        assert (record["namespace"], record["run"], record["scenario"]) == ("shop", "run-1", "shop/kill-web")
        assert record["correlation_id"] == "u"
    assert records[1]["target"] == "Deployment shop/web"
    assert records[1]["fault"] == "scale"
    assert records[3]["level"] == "warning"
    assert records[3]["phase"] == "Failed"


def test_run_context_of_kopf_bodies() -> None:
    run = {
        "kind": "TestRun",
        "metadata": {"namespace": "shop", "name": "run-1", "uid": "u-1"},
        "spec": {"scenarioRef": {"name": "kill-web"}},
    }
    assert run_context(run) == {
        "namespace": "shop",
        "run": "run-1",
        "scenario": "shop/kill-web",
        "correlation_id": "u-1",
    }
    run["status"] = {"scenario": "other/kill-web"}
    assert run_context(run)["scenario"] == "other/kill-web", "the snapshot's scenario wins once the run started"
    scenario = {"kind": "ChaosScenario", "metadata": {"namespace": "shop", "name": "kill-web", "uid": "s-1"}}
    assert run_context(scenario) == {"namespace": "shop", "scenario": "shop/kill-web"}
    assert run_context(None) == {}


def test_alembic_setup_noise_stays_out_of_an_info_log() -> None:
    import logging

    from coordinator.observability.logs import configure_logging

    configure_logging("json", logging.INFO)
    assert not logging.getLogger("alembic.runtime.migration").isEnabledFor(logging.INFO)


def test_help_is_help_not_a_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    from coordinator.cli.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Entry point" not in out
    assert "chaos tests on Kubernetes" in out


def test_kopfs_admission_successes_are_dropped_and_its_failures_kept() -> None:
    def record(message: str, level: int = logging.INFO, name: str = "kopf.objects") -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, None, None)

    assert not admission_chatter(record("Webhook 'requested-by-testruns' succeeded."))
    assert admission_chatter(record("Webhook 'rights-testruns' failed permanently: no", logging.ERROR))
    assert admission_chatter(record("Handler 'testrun_daemon' succeeded."))
    assert admission_chatter(record("Webhook 'x' succeeded.", name="coordinator"))


def test_every_line_names_the_instance(captured: io.StringIO) -> None:
    handler = configure_logging("json", logging.INFO, "shop-chaos")
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(captured)
    logging.getLogger("kopf.objects").info("Handler 'x' succeeded.")
    structlog.get_logger("coordinator.engine").warning("step reverted", step="kill")
    records = _records(captured)
    assert [r["instance"] for r in records] == ["shop-chaos", "shop-chaos"]
    assert records[1]["step"] == "kill"


def test_no_instance_field_without_one(captured: io.StringIO) -> None:
    _configure(captured)
    logging.getLogger("coordinator").warning("x")
    assert "instance" not in _records(captured)[0]
