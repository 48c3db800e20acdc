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
    login = parser.add_mutually_exclusive_group()
    login.add_argument(
        "--in-cluster",
        action="store_true",
        help="run in a pod (manifests/dashboard): each browser session logs in with a Kubernetes bearer token, "
        "verified by TokenReview with the pod's ServiceAccount, and acts with that token only",
    )
    login.add_argument(
        "--token-login",
        action="store_true",
        help="the in-cluster mode's token login, from outside the cluster: --kubeconfig names the dashboard's own "
        "identity, used only for TokenReviews",
    )
    parser.set_defaults(handler=dashboard)


def dashboard(args: argparse.Namespace) -> int:
    from coordinator.adapters.kubeconfig import KubeconfigError
    from coordinator.dashboard.app import serve

    try:
        asyncio.run(
            serve(args.address, args.port, args.kubeconfig, in_cluster=args.in_cluster, token_login=args.token_login)
        )
    except KeyboardInterrupt:
        return 0
    except KubeconfigError as exc:
        print(f"coordinator dashboard: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"coordinator dashboard: cannot serve on {args.address}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
