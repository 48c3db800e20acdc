"""``coordinator report``, ``coordinator history`` and ``coordinator db upgrade``: the history store from the command
line.

All three read the same settings as the operator (``COORDINATOR_DATABASE_URL`` or the embedded SQLite file,
``COORDINATOR_INSTANCE_NAME``, optionally ``COORDINATOR_REDIS_URL`` for the report cache).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.api.durations import parse_duration

if TYPE_CHECKING:
    from coordinator.history.browse import Cursor, HistoryQuery, Page
    from coordinator.history.report import ReportFilters
    from coordinator.history.store import HistoryStore
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


def parse_moment(text: str) -> datetime:
    """A point in time: an ISO time (``2026-12-06T14:30``, UTC without an offset; a date is its midnight) or a
    window back from now (``24h``, ``7d``, as ``--since`` of ``coordinator report``)."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return datetime.now(UTC) - parse_since(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"invalid time {text!r}: use an ISO time (2026-12-06T14:30) or a duration back from now (24h, 7d)"
            ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _settings() -> Settings | None:
    from coordinator.settings import ConfigurationError, load_settings

    try:
        return load_settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def report(args: argparse.Namespace) -> int:
    """Print (or write to ``--output``) a report over the stored runs, or with ``--run`` one run's full report."""
    from coordinator.history.report import ReportFilters

    if args.run and (args.namespace or args.scenario or args.since):
        print("error: --run reports one run: it takes no --namespace, --scenario or --since", file=sys.stderr)
        return 2
    settings = _settings()
    if settings is None:
        return 2
    if _no_history(settings):
        return 1
    # The window starts on a whole minute, so reports asked for within the same minute share the cache.
    since = (datetime.now(UTC) - args.since).replace(second=0, microsecond=0) if args.since else None
    filters = ReportFilters(namespace=args.namespace, scenario=args.scenario, since=since)
    try:
        if args.run:
            text = asyncio.run(_render_run_report(settings, args.run, args.format))
            if text is None:
                print(
                    f"error: no stored run {args.run!r} (NAMESPACE/NAME or its UID; `coordinator history runs` "
                    "lists them)",
                    file=sys.stderr,
                )
                return 1
        else:
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


async def _render_run_report(settings: Settings, run: str, fmt: str) -> str | None:
    """One run's report, the run named ``NAMESPACE/NAME`` (the last stored run of that name) or by its UID."""
    from coordinator.history.run_report import render_run
    from coordinator.history.store import HistoryStore

    store = HistoryStore.from_settings(settings)
    try:
        namespace, slash, name = run.partition("/")
        uid = await store.latest_uid(namespace, name) if slash else run
        found = await store.run_report(uid) if uid else None
        return render_run(found, fmt) if found is not None else None
    finally:
        await store.close()


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


def _no_history(settings: Settings) -> bool:
    """Whether the settings name an embedded history file that does not exist (and say so)."""
    if settings.database_url is None and not settings.history_file.exists():
        # Opening it would create an empty database and answer "no runs": a wrong path must say so instead.
        print(
            f"error: no history at {settings.history_file} (COORDINATOR_HISTORY_PATH, or COORDINATOR_DATABASE_URL "
            "for a shared database)",
            file=sys.stderr,
        )
        return True
    return False


# The columns of each list as a table: (heading, how a row's value reads).
Column = tuple[str, Callable[[dict[str, Any]], str]]


def _time(value: Any) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else "-"


def _secs(value: Any) -> str:
    return f"{value:.1f}s" if isinstance(value, int | float) else "-"


def _text(value: Any, limit: int = 40) -> str:
    text = "-" if value is None or value == "" else " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


TABLE_COLUMNS: dict[str, Sequence[Column]] = {
    "runs": (
        ("COMPLETED", lambda r: _time(r["completed_at"])),
        ("RUN", lambda r: f"{r['namespace']}/{r['name']}"),
        ("SCENARIO", lambda r: r["workflow"] or r["scenario"]),
        ("PHASE", lambda r: r["phase"]),
        ("DURATION", lambda r: _secs(r["duration_seconds"])),
        ("RECOVERY", lambda r: _secs(r["recovery_seconds"])),
        ("CORRELATION ID", lambda r: r["uid"]),
    ),
    "events": (
        ("INJECTED", lambda r: _time(r["injected_at"])),
        ("RUN", lambda r: f"{r['namespace']}/{r['run']}"),
        ("STEP", lambda r: r["step_name"] or str(r["step"])),
        ("FAULT", lambda r: r["fault"]),
        ("TARGET", lambda r: "/".join(p for p in (r["target_kind"], r["target_namespace"], r["target_name"]) if p)),
        ("STATE", lambda r: r["state"]),
        ("REVERTED", lambda r: _time(r["reverted_at"])),
        ("CORRELATION ID", lambda r: r["run_uid"]),
    ),
    "results": (
        ("COMPLETED", lambda r: _time(r["completed_at"])),
        ("RUN", lambda r: f"{r['namespace']}/{r['run']}"),
        ("KIND", lambda r: r["kind"]),
        ("NAME", lambda r: r["name"]),
        ("TYPE", lambda r: _text(r["type"])),
        ("STATE", lambda r: _text(r["state"])),
        ("EXPECTED", lambda r: _text(r["expected"], 20)),
        ("ACTUAL", lambda r: _text(r["actual"])),
        ("CORRELATION ID", lambda r: r["run_uid"]),
    ),
}
# Which filters each list takes (the others are refused, not silently ignored).
LIST_FILTERS = {"runs": {"phase"}, "events": {"status", "fault_type"}, "results": {"status", "assertion_type"}}
ONLY_FOR = {
    "phase": "--phase",
    "status": "--status",
    "fault_type": "--fault-type",
    "assertion_type": "--assertion-type",
}


def render_page(what: str, page: Page, fmt: str) -> str:
    """A page of ``coordinator history WHAT`` as a table (with the next page's ``--after`` below it) or JSON."""
    if fmt == "json":
        items = [{k: _time(v) if isinstance(v, datetime) else v for k, v in item.items()} for item in page.items]
        document = {"kind": what, "items": items, "next": page.next.encode() if page.next else None}
        return json.dumps(document, indent=2) + "\n"
    if not page.items:
        return f"no {what} match\n"
    columns = TABLE_COLUMNS[what]
    rows = [[heading for heading, _ in columns]] + [[cell(item) for _, cell in columns] for item in page.items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    if page.next is not None:
        lines.append(f"next page: --after {page.next.encode()}")
    return "\n".join(lines) + "\n"


def history(args: argparse.Namespace) -> int:
    """``coordinator history runs|events|results``: the stored rows matching the filters, a page at a time."""
    from coordinator.history.browse import BadQuery, Cursor, HistoryQuery
    from coordinator.history.store import HistoryUnavailable

    what: str = args.what
    for option, flag in ONLY_FOR.items():
        if getattr(args, option) and option not in LIST_FILTERS[what]:
            print(f"error: {flag} does not apply to `coordinator history {what}`", file=sys.stderr)
            return 2
    if args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        after = Cursor.decode(args.after, "--after") if args.after else None
    except BadQuery as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    query = HistoryQuery(
        namespace=args.namespace,
        scenario=args.scenario,
        phase=args.phase,
        status=args.status,
        fault_type=args.fault_type,
        assertion_type=args.assertion_type,
        target=args.target,
        correlation_id=args.correlation_id,
        since=args.since,
        until=args.until,
    )
    settings = _settings()
    if settings is None:
        return 2
    if _no_history(settings):
        return 1
    try:
        page = asyncio.run(_read_page(settings, what, query, after, args.limit))
    except HistoryUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_page(what, page, args.format))
    return 0


async def _read_page(settings: Settings, what: str, query: HistoryQuery, after: Cursor | None, limit: int) -> Page:
    from coordinator.history import browse
    from coordinator.history.store import HistoryStore

    lists = {"runs": browse.runs_page, "events": browse.events_page, "results": browse.results_page}
    store: HistoryStore = HistoryStore.from_settings(settings)
    try:
        return await store.read(lambda conn, t: lists[what](conn, t, query, after, limit))
    finally:
        await store.close()


def add_history_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report``, ``history`` and ``db`` on the ``coordinator`` parser."""
    from coordinator.history.browse import PAGE_SIZE
    from coordinator.history.report import FORMATS

    history_parser = commands.add_parser(
        "history",
        help="list stored runs, chaos events or test results by filter (paged)",
        description="List the stored runs, their chaos events (injections) or their probe and assertion results, "
        "newest run first. Filters combine; a page ends with the --after cursor of the next.",
    )
    history_parser.add_argument("what", choices=("runs", "events", "results"), help="what to list")
    history_parser.add_argument("--namespace", help="only runs in this namespace")
    history_parser.add_argument("--scenario", help="only this scenario (or workflow): NAME or NAMESPACE/NAME")
    history_parser.add_argument("--phase", help="runs: only runs that ended in this phase (Passed, Failed, ...)")
    history_parser.add_argument(
        "--status",
        help="events: only injections in this state (Reverted, Irreversible, ...); "
        "results: only results in this state (passed, failed, skipped, error)",
    )
    history_parser.add_argument("--fault-type", help="events: only this fault type (pod-kill, ...)")
    history_parser.add_argument(
        "--assertion-type", help="results: only this assertion or probe type (recovery_time, http, ...)"
    )
    history_parser.add_argument("--target", help="only runs that injected a fault into NAME or NAMESPACE/NAME")
    history_parser.add_argument("--correlation-id", metavar="UID", help="only the run with this UID")
    history_parser.add_argument(
        "--since", type=parse_moment, metavar="TIME", help="only runs completed at or after TIME (ISO time, or 24h ago)"
    )
    history_parser.add_argument(
        "--until", type=parse_moment, metavar="TIME", help="only runs completed at or before TIME (ISO time, or 1h ago)"
    )
    history_parser.add_argument("--format", choices=("table", "json"), default="table", help="default: table")
    history_parser.add_argument("--limit", type=int, default=PAGE_SIZE, help=f"rows per page (default: {PAGE_SIZE})")
    history_parser.add_argument("--after", metavar="CURSOR", help="the page after CURSOR (printed by the page before)")
    history_parser.set_defaults(handler=history)

    report_parser = commands.add_parser("report", help="report over the run history (pass rates, recovery times)")
    report_parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    report_parser.add_argument("--namespace", help="only runs in this namespace")
    report_parser.add_argument("--scenario", help="only this scenario: NAME or NAMESPACE/NAME")
    report_parser.add_argument(
        "--since", type=parse_since, metavar="WINDOW", help="only runs completed within this window, e.g. 7d or 24h"
    )
    report_parser.add_argument(
        "--run",
        metavar="NAMESPACE/NAME|UID",
        help="one run's full report instead: the run, its steps, chaos events, probe and assertion results",
    )
    report_parser.add_argument("--output", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    report_parser.set_defaults(handler=report)

    db_parser = commands.add_parser("db", help="manage the history database")
    db_commands = db_parser.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    upgrade_parser = db_commands.add_parser("upgrade", help="create or migrate the history tables")
    upgrade_parser.set_defaults(handler=db_upgrade)
