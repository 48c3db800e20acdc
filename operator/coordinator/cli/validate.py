"""``coordinator validate FILE|DIR...``: offline checks for GitOps pre-merge pipelines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coordinator.domain.addresses import DEFAULT_DENIED_CIDRS, IPNetwork, parse_cidrs
from coordinator.settings import DEFAULT_PROTECTED_NAMESPACES, ConfigurationError, load_settings


def operator_limits() -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """The namespaces the operator would refuse and the addresses its probes never call, from the same
    COORDINATOR_* variables it reads."""
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(
            f"warning: {exc}; checking against the default protected namespaces and denied addresses", file=sys.stderr
        )
        return frozenset({*DEFAULT_PROTECTED_NAMESPACES, "test-coordinator"}), parse_cidrs(DEFAULT_DENIED_CIDRS)
    return settings.protected, settings.probe_deny_cidrs


def validate(args: argparse.Namespace) -> int:
    """Print every finding as ``file:line: field: message`` (or JSON); exit 1 when there is an error, or with
    ``--strict`` a warning."""
    # Imported here: the checks load the CRD schemas and every fault driver, which other commands never need.
    from coordinator.validation import validate_paths

    protected, denied = operator_limits()
    report = validate_paths([Path(p) for p in args.paths], protected, denied)
    if report.documents == 0 and report.ok:
        # Nothing checked is not "ok": a typo'd path or the wrong directory must fail a pipeline, not pass it.
        where = ", ".join(args.paths)
        message = f"no ChaosScenario, ChaosWorkflow or TestRun documents in {where} ({report.files} YAML file(s) read)"
        if args.format == "json":
            print(json.dumps({"ok": False, "files": report.files, "documents": 0, "errors": [message]}, indent=2))
        else:
            print(f"error: {message}", file=sys.stderr)
        return 1
    ok = report.ok and not (args.strict and report.warnings)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "ok": ok,
                    "files": report.files,
                    "documents": report.documents,
                    "errors": [finding.to_json() for finding in report.findings],
                    "warnings": [finding.to_json() for finding in report.warnings],
                },
                indent=2,
            )
        )
    else:
        for finding in report.findings:
            print(finding)
        for finding in report.warnings:
            print(finding.as_warning())
        summary = f"{report.documents} document(s) in {report.files} file(s)"
        counts = [f"{len(report.findings)} error(s)"] if report.findings else []
        counts += [f"{len(report.warnings)} warning(s)"] if report.warnings else []
        if ok:
            print(f"ok: {summary}" + (f" ({', '.join(counts)})" if counts else ""), file=sys.stderr)
        else:
            print(f"{' and '.join(counts)} in {summary}", file=sys.stderr)
    return 0 if ok else 1


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "validate",
        help="check ChaosScenario/ChaosWorkflow/TestRun YAML offline (schema, CEL rules, semantic checks)",
        description="Check ChaosScenario, ChaosWorkflow and TestRun YAML offline, without a cluster; exits 1 on any error (and with --strict on any warning).",
    )
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR", help="YAML files, or directories searched for them")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 on warnings too (a fault that does not serve its scenario's type: docs/scenario-types.md)",
    )
    parser.set_defaults(handler=validate)
