"""``coordinator report`` and ``coordinator db upgrade``: the history store from the command line.

Both read the same settings as the operator (``COORDINATOR_DATABASE_URL`` or the embedded SQLite file,
``COORDINATOR_INSTANCE_NAME``, optionally ``COORDINATOR_REDIS_URL`` for the report cache).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from coordinator.api.durations import parse_duration

if TYPE_CHECKING:
    from coordinator.history.report import ReportFilters
    from coordinator.settings import Settings

_DAYS = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(d|w)$")


def parse_since(text: str) -> timedelta:
    """A time window back from now: ``7d``, ``2w``, or a Go-style duration such as ``24h`` or ``90m``."""
    match = _DAYS.match(text.strip())
    if match:
        days = float(match.group(1)) * (7 if match.group(2) == "w" else 1)
        return timedelta(days=days)
    try:
        return timedelta(seconds=parse_duration(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --since {text!r}: use e.g. 7d, 2w, 24h or 30m") from None


def _settings() -> Settings | None:
    from coordinator.settings import ConfigurationError, load_settings

    try:
        return load_settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def report(args: argparse.Namespace) -> int:
    """Print (or write to ``--output``) a report over the stored runs."""
    from coordinator.history.report import ReportFilters

    settings = _settings()
    if settings is None:
        return 2
    if settings.database_url is None and not settings.history_file.exists():
        # Opening it would create an empty database and report "no runs": a wrong path must say so instead.
        print(
            f"error: no history at {settings.history_file} (COORDINATOR_HISTORY_PATH, or COORDINATOR_DATABASE_URL "
            "for a shared database)",
            file=sys.stderr,
        )
        return 1
    # The window starts on a whole minute, so reports asked for within the same minute share the cache.
    since = (datetime.now(UTC) - args.since).replace(second=0, microsecond=0) if args.since else None
    filters = ReportFilters(namespace=args.namespace, scenario=args.scenario, since=since)
    try:
        text = asyncio.run(_render_report(settings, filters, args.format))
    except Exception as exc:
        from coordinator.history.store import HistoryUnavailable

        if isinstance(exc, HistoryUnavailable):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise
    if args.output:
        output: Path = args.output
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _render_report(settings: Settings, filters: ReportFilters, fmt: str) -> str:
    from coordinator.history.report import needs_runs, render
    from coordinator.history.store import HistoryStore, fetch_report

    store = HistoryStore.from_settings(settings)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    # Without Redis the in-process cache would live only as long as this command: no cache at all then (and no
    # Redis client to import: start-up time is most of a report's latency).
    services = None
    if redis_url:
        from coordinator.history.redis import redis_services

        services = redis_services(
            redis_url, settings.instance_name, announce=False, max_connections=settings.redis_pool_size
        )
    try:
        result = await fetch_report(
            store,
            filters,
            cache=services.cache if services else None,
            include_runs=needs_runs(fmt),
            ttl=settings.report_cache_ttl,
        )
        return render(result, fmt)
    finally:
        if services is not None:
            await services.close()
        await store.close()


def db_upgrade(args: argparse.Namespace) -> int:
    """Create or migrate the history tables of this instance."""
    from coordinator.history.store import HistoryStore, HistoryUnavailable

    settings = _settings()
    if settings is None:
        return 2

    async def upgrade() -> str:
        store = HistoryStore.from_settings(settings)
        try:
            revision = await store.upgrade()
        finally:
            await store.close()
        return f"history store {store.description} (tables {store.tables.prefix}_*) at revision {revision}"

    try:
        print(asyncio.run(upgrade()))
    except HistoryUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def add_history_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report`` and ``db`` on the ``coordinator`` parser."""
    from coordinator.history.report import FORMATS

    report_parser = commands.add_parser("report", help="report over the run history (pass rates, recovery times)")
    report_parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report_parser.add_argument("--namespace", help="only runs in this namespace")
    report_parser.add_argument("--scenario", help="only this scenario: NAME or NAMESPACE/NAME")
    report_parser.add_argument(
        "--since", type=parse_since, metavar="WINDOW", help="only runs completed within this window, e.g. 7d or 24h"
    )
    report_parser.add_argument("--output", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    report_parser.set_defaults(handler=report)

    db_parser = commands.add_parser("db", help="manage the history database")
    db_commands = db_parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade_parser = db_commands.add_parser("upgrade", help="create or migrate the history tables")
    upgrade_parser.set_defaults(handler=db_upgrade)
