"""``coordinator pause`` and ``coordinator resume``: the emergency stop, set and cleared with the user's kubeconfig.

``pause --namespace NS`` labels namespace NS ``chaos.coordinator.dev/paused=true``: the operator cancels every run
touching it, reverting every change, and holds new ones Pending (reason Paused). Without ``--namespace`` the
label goes on the operator's own namespace (``COORDINATOR_NAMESPACE``), which pauses the whole cluster.
``resume`` removes the label. Both act with the caller's own rights: whoever may label the namespace may stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from coordinator.api.models import PAUSED_LABEL
from coordinator.domain.pauses import PauseScope

DESCRIPTION = (
    f"`pause --namespace NS` labels namespace NS {PAUSED_LABEL}=true: the operator cancels every run that touches "
    "it, reverting every change, and new runs wait (Pending, reason Paused). Without --namespace the label goes on "
    "the operator's own namespace (COORDINATOR_NAMESPACE): the whole cluster is paused. `resume` removes the label. "
    "Both act with your kubeconfig's rights."
)


async def set_paused(scope: PauseScope, paused: bool, kubeconfig: str | None) -> str:
    """Set or clear the label on the scope's namespace; returns what was done. Raises ApiError (404, 403...)."""
    from coordinator.adapters.kube import KubeClient
    from coordinator.engine.pausing import set_paused as label_namespace

    client = await KubeClient.connect(kubeconfig)
    try:
        return await label_namespace(client, scope, paused)
    finally:
        await client.close()


def _pause_or_resume(args: argparse.Namespace, paused: bool) -> int:
    from aiohttp import ClientError

    from coordinator.adapters.kube import ApiError
    from coordinator.adapters.kubeconfig import KubeconfigError
    from coordinator.settings import ConfigurationError, load_settings

    if args.namespace:
        scope = PauseScope(args.namespace, cluster_wide=False)
    else:
        try:
            scope = PauseScope(load_settings().namespace, cluster_wide=True)
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    verb = "pause" if paused else "resume"
    try:
        print(asyncio.run(set_paused(scope, paused, args.kubeconfig)))
    except KubeconfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        if exc.not_found:
            hint = " (set COORDINATOR_NAMESPACE to the operator's namespace)" if scope.cluster_wide else ""
            print(f"error: cannot {verb}: {scope.named} not found{hint}", file=sys.stderr)
        elif exc.status == 403:
            print(f"error: cannot {verb}: not allowed to label {scope.named}: {exc.message}", file=sys.stderr)
        else:
            print(f"error: cannot {verb} {scope.named}: Kubernetes API: {exc}", file=sys.stderr)
        return 1
    except (ClientError, OSError) as exc:
        print(f"error: cannot {verb} {scope.named}: the API server did not answer: {exc}", file=sys.stderr)
        return 1
    return 0


def pause(args: argparse.Namespace) -> int:
    """Label a namespace (or the operator's, for the whole cluster) paused."""
    return _pause_or_resume(args, paused=True)


def resume(args: argparse.Namespace) -> int:
    """Remove the pause label."""
    return _pause_or_resume(args, paused=False)


def add_pause_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pause`` and ``resume`` on the ``coordinator`` parser."""
    for name, handler, help_text in (
        ("pause", pause, "emergency stop: cancel and revert the runs of a namespace (default: of the whole cluster)"),
        ("resume", resume, "end a pause: waiting runs start"),
    ):
        parser = commands.add_parser(name, help=help_text, description=DESCRIPTION)
        parser.add_argument(
            "--namespace",
            help="the namespace to " + name + " (default: the operator's namespace, COORDINATOR_NAMESPACE: "
            "the whole cluster)",
        )
        parser.add_argument("--kubeconfig", help="kubeconfig to use (default: KUBECONFIG, then in-cluster)")
        parser.set_defaults(handler=handler)
