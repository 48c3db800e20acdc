"""Operator settings from COORDINATOR_* environment variables, and the errors bad values give."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from coordinator.settings import (
    DEFAULT_PROTECTED_NAMESPACES,
    ConfigurationError,
    Settings,
    get_settings,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the defaults, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.upper().startswith("COORDINATOR_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_defaults() -> None:
    settings = load_settings()
    assert settings.instance_name == "test-coordinator"
    assert settings.namespace == "test-coordinator"
    assert settings.watched == []
    assert settings.protected == frozenset({"kube-system", "kube-public", "kube-node-lease", "test-coordinator"})
    assert settings.cluster_wide_targeting is False
    assert settings.api_qps == 300.0
    assert settings.api_burst == 1200
    assert settings.watch_server_timeout == 300
    assert settings.watch_client_timeout == 330
    assert settings.sweep_interval == 30.0
    assert settings.poll_interval == 0.5


def test_reads_every_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_INSTANCE_NAME", "chaos-staging")
    monkeypatch.setenv("COORDINATOR_NAMESPACE", "chaos-system")
    monkeypatch.setenv("COORDINATOR_WATCH_NAMESPACES", "shop,payments")
    monkeypatch.setenv("COORDINATOR_PROTECTED_NAMESPACES", "kube-system,monitoring")
    monkeypatch.setenv("COORDINATOR_CLUSTER_WIDE_TARGETING", "true")
    monkeypatch.setenv("COORDINATOR_API_QPS", "12.5")
    monkeypatch.setenv("COORDINATOR_API_BURST", "25")
    monkeypatch.setenv("COORDINATOR_WATCH_SERVER_TIMEOUT", "60")
    monkeypatch.setenv("COORDINATOR_WATCH_CLIENT_TIMEOUT", "90")
    monkeypatch.setenv("COORDINATOR_SWEEP_INTERVAL", "5")
    monkeypatch.setenv("COORDINATOR_POLL_INTERVAL", "0.25")
    settings = load_settings()
    assert settings.instance_name == "chaos-staging"
    assert settings.namespace == "chaos-system"
    assert settings.watched == ["shop", "payments"]
    assert settings.protected == frozenset({"kube-system", "monitoring", "chaos-system"})
    assert settings.cluster_wide_targeting is True
    assert settings.api_qps == 12.5
    assert settings.api_burst == 25
    assert settings.watch_server_timeout == 60
    assert settings.watch_client_timeout == 90
    assert settings.sweep_interval == 5.0
    assert settings.poll_interval == 0.25


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_QPS", "1")
    monkeypatch.setenv("NAMESPACE", "elsewhere")
    settings = load_settings()
    assert settings.api_qps == 300.0
    assert settings.namespace == "test-coordinator"


def test_comma_lists_are_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_WATCH_NAMESPACES", " shop , payments,, ,checkout ")
    monkeypatch.setenv("COORDINATOR_PROTECTED_NAMESPACES", "kube-system ,  monitoring,")
    settings = load_settings()
    assert settings.watch_namespaces == "shop,payments,checkout"
    assert settings.watched == ["shop", "payments", "checkout"]
    assert settings.protected_namespaces == "kube-system,monitoring"
    assert settings.protected == frozenset({"kube-system", "monitoring", "test-coordinator"})


def test_protected_always_includes_the_operators_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_NAMESPACE", "chaos-system")
    monkeypatch.setenv("COORDINATOR_PROTECTED_NAMESPACES", "")
    assert load_settings().protected == frozenset({"chaos-system"})


def test_default_protected_namespaces_constant() -> None:
    assert load_settings().protected_namespaces.split(",") == list(DEFAULT_PROTECTED_NAMESPACES)


def test_blank_watch_namespaces_means_cluster_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_WATCH_NAMESPACES", " , ")
    assert load_settings().watched == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("COORDINATOR_API_QPS", "-1"),
        ("COORDINATOR_API_QPS", "0"),
        ("COORDINATOR_API_QPS", "fast"),
        ("COORDINATOR_API_BURST", "0"),
        ("COORDINATOR_API_BURST", "1.5"),
        ("COORDINATOR_WATCH_SERVER_TIMEOUT", "5"),
        ("COORDINATOR_SWEEP_INTERVAL", "0"),
        ("COORDINATOR_POLL_INTERVAL", "11"),
        ("COORDINATOR_POLL_INTERVAL", "-0.5"),
        ("COORDINATOR_INSTANCE_NAME", "Test_Coordinator"),
        ("COORDINATOR_INSTANCE_NAME", "x" * 41),
        ("COORDINATOR_CLUSTER_WIDE_TARGETING", "sometimes"),
        ("COORDINATOR_LOG_LEVEL", "verbose"),
        ("COORDINATOR_LOG_FORMAT", "xml"),
        ("COORDINATOR_DATABASE_POOL_SIZE", "0"),
        ("COORDINATOR_DATABASE_MAX_OVERFLOW", "-1"),
        ("COORDINATOR_REDIS_POOL_SIZE", "0"),
        ("COORDINATOR_REDIS_POOL_SIZE", "many"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=f"^invalid settings: {variable}: ") as info:
        load_settings()
    assert isinstance(info.value, ValueError)
    assert info.value.__cause__ is None  # pydantic's long error is replaced, not chained


def test_negative_qps_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_API_QPS", "-1")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert str(info.value) == "invalid settings: COORDINATOR_API_QPS: Input should be greater than 0"


def test_several_bad_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_API_QPS", "-1")
    monkeypatch.setenv("COORDINATOR_API_BURST", "0")
    with pytest.raises(ConfigurationError) as info:
        load_settings()
    assert "COORDINATOR_API_QPS:" in str(info.value)
    assert "COORDINATOR_API_BURST:" in str(info.value)


@pytest.mark.parametrize(("server", "client"), [("300", "300"), ("300", "299"), ("60", "30")])
def test_watch_client_timeout_must_exceed_the_server_timeout(
    monkeypatch: pytest.MonkeyPatch, server: str, client: str
) -> None:
    monkeypatch.setenv("COORDINATOR_WATCH_SERVER_TIMEOUT", server)
    monkeypatch.setenv("COORDINATOR_WATCH_CLIENT_TIMEOUT", client)
    with pytest.raises(ConfigurationError, match="COORDINATOR_WATCH_CLIENT_TIMEOUT must exceed"):
        load_settings()


def test_watch_client_timeout_just_above_the_server_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_WATCH_SERVER_TIMEOUT", "300")
    monkeypatch.setenv("COORDINATOR_WATCH_CLIENT_TIMEOUT", "301")
    assert load_settings().watch_client_timeout == 301


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValidationError):
        settings.api_qps = 1.0  # type: ignore[misc]
    assert settings.api_qps == 300.0


def test_settings_class_reads_the_environment_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_API_BURST", "7")
    assert Settings().api_burst == 7


@pytest.mark.usefixtures("fresh_cache")
def test_get_settings_loads_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_API_BURST", "7")
    first = get_settings()
    monkeypatch.setenv("COORDINATOR_API_BURST", "9")
    assert get_settings() is first
    assert get_settings().api_burst == 7


@pytest.mark.usefixtures("fresh_cache")
def test_get_settings_raises_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_API_QPS", "-1")
    with pytest.raises(ConfigurationError, match="COORDINATOR_API_QPS"):
        get_settings()


@pytest.mark.parametrize(
    ("raw", "level"), [("info", "INFO"), ("Debug", "DEBUG"), (" warning ", "WARNING"), ("ERROR", "ERROR")]
)
def test_log_levels_in_any_case(monkeypatch: pytest.MonkeyPatch, raw: str, level: str) -> None:
    monkeypatch.setenv("COORDINATOR_LOG_LEVEL", raw)
    monkeypatch.setenv("COORDINATOR_LOG_FORMAT", "Console")
    settings = load_settings()
    assert settings.log_level == level
    assert settings.log_format == "console"


def test_pool_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_DATABASE_POOL_SIZE", "20")
    monkeypatch.setenv("COORDINATOR_DATABASE_MAX_OVERFLOW", "0")
    monkeypatch.setenv("COORDINATOR_REDIS_POOL_SIZE", "8")
    settings = load_settings()
    assert (settings.database_pool_size, settings.database_max_overflow, settings.redis_pool_size) == (20, 0, 8)


def test_progress_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().progress_ttl == 86400
    monkeypatch.setenv("COORDINATOR_PROGRESS_TTL", "3600")
    assert load_settings().progress_ttl == 3600
    monkeypatch.setenv("COORDINATOR_PROGRESS_TTL", "10")
    with pytest.raises(ConfigurationError, match="COORDINATOR_PROGRESS_TTL"):
        load_settings()
