"""The history settings: database and Redis URLs (validated without echoing secrets), the SQLite default path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordinator.history.store import database_url
from coordinator.settings import ConfigurationError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("COORDINATOR_") or name == "XDG_DATA_HOME":
            monkeypatch.delenv(name)


def test_history_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/chaos")
    settings = load_settings()
    assert (settings.database_url, settings.redis_url) == (None, None)
    assert settings.history_retention_days == 90
    assert settings.report_cache_ttl == 60.0
    assert settings.history_file == Path("/home/chaos/.local/share/test-coordinator/history.db")


def test_the_sqlite_file_follows_xdg_data_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", "/data")
    assert load_settings().history_file == Path("/data/test-coordinator/history.db")


def test_an_explicit_history_path_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_HISTORY_PATH", "/var/lib/chaos/h.db")
    assert str(database_url(load_settings())) == "sqlite+aiosqlite:////var/lib/chaos/h.db"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://app:pw@db/chaos", "postgresql+asyncpg://app:pw@db/chaos"),
        ("postgresql+asyncpg://app:pw@db:5433/chaos", "postgresql+asyncpg://app:pw@db:5433/chaos"),
        ("sqlite:////tmp/h.db", "sqlite+aiosqlite:////tmp/h.db"),
    ],
)
def test_database_urls_get_an_async_driver(monkeypatch: pytest.MonkeyPatch, given: str, used: str) -> None:
    monkeypatch.setenv("COORDINATOR_DATABASE_URL", given)
    assert database_url(load_settings()).render_as_string(hide_password=False) == used


def test_settings_never_show_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATOR_DATABASE_URL", "postgresql://app:hunter2@db/chaos")
    monkeypatch.setenv("COORDINATOR_REDIS_URL", "redis://:hunter3@cache:6379/0")
    shown = repr(load_settings())
    assert "hunter2" not in shown
    assert "hunter3" not in shown


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("COORDINATOR_DATABASE_URL", "mysql://app:hunter2@db/chaos", "unsupported database 'mysql'"),
        ("COORDINATOR_DATABASE_URL", "not a url hunter2", "not a database URL"),
        ("COORDINATOR_REDIS_URL", "http://:hunter2@cache", "not a Redis URL"),
        ("COORDINATOR_HISTORY_RETENTION_DAYS", "-1", "COORDINATOR_HISTORY_RETENTION_DAYS"),
    ],
)
def test_bad_values_name_the_variable_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError) as raised:
        load_settings()
    assert variable in str(raised.value)
    assert message in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_schema_head_names_the_newest_migration() -> None:
    """``ensure_schema`` skips Alembic when the version table holds SCHEMA_HEAD: it must be the scripts' head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from coordinator.history.migrations import MIGRATIONS_DIR
    from coordinator.history.models import SCHEMA_HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_HEAD]


def test_report_on_a_missing_history_file_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from coordinator.cli.main import main

    missing = tmp_path / "nope" / "history.db"
    monkeypatch.setenv("COORDINATOR_HISTORY_PATH", str(missing))
    monkeypatch.delenv("COORDINATOR_DATABASE_URL", raising=False)
    assert main(["report"]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not missing.exists(), "no empty database is created on the way"
