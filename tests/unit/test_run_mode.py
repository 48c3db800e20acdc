"""`coordinator run`: its settings (server, logs, sharding, leader election), its flags, and the handler wrapper."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
import structlog

from coordinator.cli.main import build_parser, main
from coordinator.cli.supervision import Supervisor
from coordinator.engine import observers
from coordinator.engine.sweeper import namespace_in, sweep_scope
from coordinator.observability import metrics
from coordinator.observability.instrumentation import instrumented
from coordinator.settings import ConfigurationError, get_settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("COORDINATOR_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    settings = load_settings()
    assert settings.environment == "development"
    assert settings.selector == ""
    assert settings.log_format == "json"
    assert settings.log_level == "INFO"
    assert (settings.metrics_address, settings.metrics_port) == ("0.0.0.0", 8080)  # noqa: S104
    assert settings.leader_election is False
    assert settings.lease_name == "test-coordinator-leader"
    assert (
        settings.leader_election_lease_duration,
        settings.leader_election_renew_deadline,
        settings.leader_election_retry_period,
    ) == (15.0, 10.0, 2.0)


def test_reads_the_run_mode_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "COORDINATOR_INSTANCE_NAME": "shard-a",
        "COORDINATOR_ENVIRONMENT": "production",
        "COORDINATOR_SELECTOR": "shard in (a, b)",
        "COORDINATOR_LOG_FORMAT": "console",
        "COORDINATOR_LOG_LEVEL": "DEBUG",
        "COORDINATOR_METRICS_PORT": "9100",
        "COORDINATOR_METRICS_ADDRESS": "127.0.0.1",
        "COORDINATOR_LEADER_ELECTION": "true",
        "COORDINATOR_LEADER_ELECTION_LEASE_DURATION": "6",
        "COORDINATOR_LEADER_ELECTION_RENEW_DEADLINE": "4",
        "COORDINATOR_LEADER_ELECTION_RETRY_PERIOD": "1",
        "COORDINATOR_IDENTITY": "pod-0",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.environment == "production"
    assert settings.selector == "shard in (a,b)", "stored in canonical form"
    assert (settings.log_format, settings.log_level) == ("console", "DEBUG")
    assert (settings.metrics_address, settings.metrics_port) == ("127.0.0.1", 9100)
    assert settings.leader_election is True
    assert settings.lease_name == "shard-a-leader"
    assert settings.identity == "pod-0"
    monkeypatch.setenv("COORDINATOR_LEADER_ELECTION_LEASE_NAME", "custom")
    assert load_settings().lease_name == "custom"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("COORDINATOR_SELECTOR", "shard=a b", "COORDINATOR_SELECTOR: Value error, 'shard=a b' is not a label"),
        ("COORDINATOR_LOG_FORMAT", "xml", "COORDINATOR_LOG_FORMAT"),
        ("COORDINATOR_LOG_LEVEL", "LOUD", "COORDINATOR_LOG_LEVEL"),
        ("COORDINATOR_METRICS_PORT", "70000", "COORDINATOR_METRICS_PORT"),
        ("COORDINATOR_LEADER_ELECTION_LEASE_NAME", "Not_A_Name", "COORDINATOR_LEADER_ELECTION_LEASE_NAME"),
        ("COORDINATOR_LEADER_ELECTION_RENEW_DEADLINE", "20", "COORDINATOR_LEADER_ELECTION_RENEW_DEADLINE"),
        ("COORDINATOR_LEADER_ELECTION_RETRY_PERIOD", "10", "COORDINATOR_LEADER_ELECTION_RETRY_PERIOD"),
    ],
)
def test_bad_values_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert message in str(caught.value)


def test_run_flags() -> None:
    args = build_parser().parse_args(
        ["run", "--namespace", "a", "--namespace", "b-*", "--selector", "shard=a", "--log-format", "console"]
    )
    assert args.namespace == ["a", "b-*"]
    assert args.selector == "shard=a"
    assert args.log_format == "console"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--log-format", "xml"])


def test_a_bad_selector_flag_stops_the_run_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COORDINATOR_SELECTOR", "")  # main() writes flags into the environment; restored afterwards
    assert main(["run", "--selector", "tier in (a"]) == 2
    assert "COORDINATOR_SELECTOR" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("watched", "scope"),
    [
        ("", None),
        ("shop", ["shop"]),
        ("shop,payments", ["shop", "payments"]),
        ("c1-*", ["c1-*"]),
        ("shop,c1-*", ["shop", "c1-*"]),
    ],
)
def test_the_sweep_scope_is_what_the_operator_watches(
    monkeypatch: pytest.MonkeyPatch, watched: str, scope: list[str] | None
) -> None:
    monkeypatch.setenv("COORDINATOR_WATCH_NAMESPACES", watched)
    assert sweep_scope(load_settings()) == scope


@pytest.mark.parametrize(
    ("namespace", "patterns", "inside"),
    [
        ("c1-shop", ["c1-*"], True),
        ("c1h-history", ["c1-*"], False),  # another instance's namespaces: the CI failure this guards against
        ("shop", ["shop", "c1-*"], True),
        ("c1-skip", ["c1-*", "!c1-skip"], False),
        ("payments", ["!c1-*"], True),
    ],
)
def test_glob_scopes_keep_a_sweep_to_the_watched_namespaces(namespace: str, patterns: list[str], inside: bool) -> None:
    """An operator watching c1-* swept cluster-wide and released another instance's deleted runs (into its own
    history store) while that instance's database was down."""
    assert namespace_in(namespace, patterns) is inside


async def test_instrumented_handlers_keep_their_name_and_report() -> None:
    seen: dict[str, Any] = {}

    @instrumented("unit_handler")
    async def unit_handler(body: kopf.Body, **_: Any) -> str:
        """A handler."""
        seen.update(structlog.contextvars.get_contextvars())
        seen["live"] = "uid-9" in metrics.LIVE.bodies
        await asyncio.sleep(0)
        return "done"

    assert unit_handler.__name__ == "unit_handler", "kopf derives handler ids from the name"
    assert unit_handler.__doc__ == "A handler."
    labels = {
        "service": "test-coordinator",
        "instance": "test-coordinator",
        "version": "0.1.0",
        "handler": "unit_handler",
    }
    before = metrics.REGISTRY.get_sample_value("coordinator_handler_invocations_total", labels) or 0
    body = {
        "kind": "TestRun",
        "metadata": {"namespace": "shop", "name": "run-1", "uid": "uid-9"},
        "spec": {"scenarioRef": {"name": "kill"}},
    }
    assert await unit_handler(body=body, retry=0) == "done"
    assert seen == {
        "namespace": "shop",
        "run": "run-1",
        "scenario": "shop/kill",
        "correlation_id": "uid-9",
        "live": True,
    }
    assert structlog.contextvars.get_contextvars() == {}, "the context does not outlive the call"
    assert "uid-9" not in metrics.LIVE.bodies
    assert metrics.REGISTRY.get_sample_value("coordinator_handler_invocations_total", labels) == before + 1

    @instrumented("unit_failing")
    async def unit_failing(**_: Any) -> None:
        raise kopf.TemporaryError("later", delay=1)

    with pytest.raises(kopf.TemporaryError):
        await unit_failing(body=None)
    errors = {**labels, "handler": "unit_failing", "error": "TemporaryError"}
    assert metrics.REGISTRY.get_sample_value("coordinator_handler_errors_total", errors) == 1


async def test_supervisor_without_leader_election_leads_at_once_and_cleans_up() -> None:
    settings = load_settings().model_copy(update={"metrics_port": 0})
    before = list(observers._observers)
    async with Supervisor(settings, client=None) as supervisor:  # type: ignore[arg-type]
        assert len(observers._observers) == len(before) + 2, "metrics and log observers registered"
        assert await supervisor.lead() is True
        assert supervisor.leading
    assert supervisor.exit_code == 0
    assert observers._observers == before


async def test_supervisor_refuses_a_taken_metrics_port_naming_the_settings() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        settings = load_settings().model_copy(update={"metrics_port": port, "metrics_address": "127.0.0.1"})
        before = list(observers._observers)
        with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port} .*COORDINATOR_METRICS_PORT"):
            async with Supervisor(settings, client=None):  # type: ignore[arg-type]
                pass
        assert observers._observers == before, "nothing left registered after a failed start"
