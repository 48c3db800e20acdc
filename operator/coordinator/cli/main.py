"""Entry point of the ``coordinator`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from coordinator import __version__

Handler = Callable[[argparse.Namespace], int]


def crds(args: argparse.Namespace) -> int:
    """Write the CRDs generated from the API models, or with ``--check`` report the files that drifted."""
    from coordinator.api.crd import drifted_crds, write_crds

    directory: Path = args.output_dir
    if args.check:
        drifted = drifted_crds(directory)
        for path in drifted:
            print(f"{path} is out of date with the API models; run `make crds`", file=sys.stderr)
        return 1 if drifted else 0
    for path in write_crds(directory):
        print(f"wrote {path}")
    return 0


CLIENT_LIBRARIES = ("kubernetes", "kubernetes_asyncio")


def import_handlers_without_client_libraries() -> None:
    """Import kopf and register the handlers with the Kubernetes client libraries hidden, unless something
    imported them already.

    The operator talks to the API server through its own async client (adapters/kube.py) and reads its
    credentials itself (adapters/kubeconfig.py); kopf logs in with them (handlers/login.py). kopf still imports
    ``kubernetes`` and ``kubernetes_asyncio`` when they are installed: on import, to recognise their model
    objects, which this process never hands it, and when the first handler is registered, to offer a login
    through them, which handlers/login.py replaces. About 35 + 38 MiB resident for nothing
    (benchmarks/README.md, footprint).
    A ``None`` entry in ``sys.modules`` is Python's documented way to say a module is unavailable; kopf treats it
    like an uninstalled optional library. The entries go again afterwards, so a kubeconfig that needs an exec
    plugin can still have kubernetes_asyncio read it.
    """
    hidden = [name for name in CLIENT_LIBRARIES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        import coordinator.handlers.registry  # noqa: F401 - imports kopf, registers the handlers
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def run(args: argparse.Namespace) -> int:
    """Start the operator and run until interrupted."""
    import asyncio
    import os

    import_handlers_without_client_libraries()
    from coordinator.adapters.kubeconfig import KubeconfigError
    from coordinator.cli.run import run_operator
    from coordinator.observability.logs import configure_logging
    from coordinator.settings import ConfigurationError, load_settings

    # Flags are settings too: through the environment they get the same validation and reach get_settings().
    flags = {
        "COORDINATOR_WATCH_NAMESPACES": ",".join(args.namespace),
        "COORDINATOR_SELECTOR": args.selector,
        "COORDINATOR_LOG_FORMAT": args.log_format,
        "COORDINATOR_LOG_LEVEL": "DEBUG" if args.verbose else None,
    }
    os.environ.update({name: value for name, value in flags.items() if value})
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level, settings.instance_name)
    try:
        return asyncio.run(run_operator(settings, settings.watched, args.kubeconfig))
    except KeyboardInterrupt:
        return 0
    except (ConfigurationError, KubeconfigError) as exc:  # found at start-up: no credentials, the port is taken, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subparser per subcommand, each with its handler as ``handler``."""
    parser = argparse.ArgumentParser(
        prog="coordinator",
        description="Test Coordinator: declarative chaos tests on Kubernetes. Run the operator, check scenarios "
        "offline, and report over the run history.",
        epilog="Settings come from COORDINATOR_* environment variables (README.md, Configuration). "
        "`coordinator COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"coordinator {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    crds_parser = commands.add_parser("crds", help="generate the CustomResourceDefinitions from the API models")
    crds_parser.add_argument(
        "--output-dir", type=Path, default=Path("crds"), help="where the CRD files go (default: crds)"
    )
    crds_parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files differ from the models"
    )
    crds_parser.set_defaults(handler=crds)

    run_parser = commands.add_parser("run", help="run the operator")
    run_parser.add_argument("--kubeconfig", help="kubeconfig to use (default: KUBECONFIG, then in-cluster)")
    run_parser.add_argument(
        "--namespace", action="append", default=[], help="handle TestRuns in this namespace (repeatable); default: all"
    )
    run_parser.add_argument(
        "--selector",
        default=None,
        help="handle only TestRuns/ChaosScenarios whose labels match this selector, e.g. 'shard=a' (sharding)",
    )
    run_parser.add_argument(
        "--log-format", choices=["json", "console"], default=None, help="json (default) or console for humans"
    )
    run_parser.add_argument("--verbose", action="store_true", help="debug logging")
    run_parser.set_defaults(handler=run)

    from coordinator.cli.validate import add_parser as add_validate_parser

    add_validate_parser(commands)

    from coordinator.cli.history import add_history_commands

    add_history_commands(commands)

    from coordinator.cli.pause import add_pause_commands

    add_pause_commands(commands)

    from coordinator.cli.dashboard import add_dashboard_command

    add_dashboard_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand named in ``argv`` (default: the process arguments) and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
