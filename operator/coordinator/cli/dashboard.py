"""``coordinator dashboard``: the web dashboard, served on 127.0.0.1:8765 with your kubeconfig's rights.

It opens nothing by itself: it prints its URL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_PORT = 8765


def add_dashboard_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "dashboard",
        help="serve the web dashboard (live runs, timelines, trends, actions) with your own rights",
        description="Serve the web dashboard on --address:--port (default 127.0.0.1:8765). It talks to the cluster "
        "with your kubeconfig's credentials, as kubectl proxy does, and reads the history store the operator "
        "writes (COORDINATOR_DATABASE_URL or COORDINATOR_HISTORY_PATH).",
    )
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"address to listen on (default {DEFAULT_ADDRESS})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--kubeconfig", help="kubeconfig to use (default: KUBECONFIG, then ~/.kube/config)")
    parser.set_defaults(handler=dashboard)


def dashboard(args: argparse.Namespace) -> int:
    from coordinator.dashboard.app import serve

    try:
        asyncio.run(serve(args.address, args.port, args.kubeconfig))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"coordinator dashboard: cannot serve on {args.address}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
