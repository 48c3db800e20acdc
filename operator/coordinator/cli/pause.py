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
from dataclasses import dataclass

from coordinator.api.models import PAUSED_LABEL

DESCRIPTION = (
    f"`pause --namespace NS` labels namespace NS {PAUSED_LABEL}=true: the operator cancels every run that touches "
    "it, reverting every change, and new runs wait (Pending, reason Paused). Without --namespace the label goes on "
    "the operator's own namespace (COORDINATOR_NAMESPACE): the whole cluster is paused. `resume` removes the label. "
    "Both act with your kubeconfig's rights."
)


@dataclass(frozen=True)
class Scope:
    """What a pause or resume acts on: a namespace, or the cluster (the operator's namespace)."""

    namespace: str
    cluster_wide: bool

    @property
    def named(self) -> str:
        return f"the operator's namespace {self.namespace}" if self.cluster_wide else f"namespace {self.namespace}"

    @property
    def resume_command(self) -> str:
        return "coordinator resume" + ("" if self.cluster_wide else f" --namespace {self.namespace}")


def label_patch(paused: bool) -> dict[str, object]:
    """The merge patch that sets (or removes) the pause label."""
    return {"metadata": {"labels": {PAUSED_LABEL: "true" if paused else None}}}


def done_message(scope: Scope, paused: bool, was_paused: bool) -> str:
    """What ``pause`` or ``resume`` did, for the person who asked."""
    label = f"{PAUSED_LABEL}=true"
    if paused:
        if was_paused:
            return f"{scope.named} is already paused ({label}); `{scope.resume_command}` ends the pause"
        what = "the whole cluster" if scope.cluster_wide else f"namespace {scope.namespace}"
        runs = "every run" if scope.cluster_wide else "every run that touches it"
        return (
            f"paused {what} (label {label} on {scope.named}): {runs} is cancelled with every change reverted, "
            f"and new runs wait until `{scope.resume_command}`"
        )
    if not was_paused:
        return f"{scope.named} was not paused; nothing to do"
    what = "the whole cluster" if scope.cluster_wide else f"namespace {scope.namespace}"
    return f"resumed {what} (label {PAUSED_LABEL} removed from {scope.named}): waiting runs start"


async def set_paused(scope: Scope, paused: bool, kubeconfig: str | None) -> str:
    """Set or clear the label on the scope's namespace; returns what was done. Raises ApiError (404, 403...)."""
    from coordinator.adapters.kube import KubeClient, resource_path
    from coordinator.engine.pausing import is_paused

    client = await KubeClient.connect(kubeconfig)
    try:
        path = resource_path("Namespace", name=scope.namespace)
        current = await client.get(path)
        was_paused = is_paused((current.get("metadata") or {}).get("labels"))
        if was_paused != paused:
            await client.patch(path, label_patch(paused))
        return done_message(scope, paused, was_paused)
    finally:
        await client.close()


def _pause_or_resume(args: argparse.Namespace, paused: bool) -> int:
    from aiohttp import ClientError

    from coordinator.adapters.kube import ApiError
    from coordinator.adapters.kubeconfig import KubeconfigError
    from coordinator.settings import ConfigurationError, load_settings

    if args.namespace:
        scope = Scope(args.namespace, cluster_wide=False)
    else:
        try:
            scope = Scope(load_settings().namespace, cluster_wide=True)
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
