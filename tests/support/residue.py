"""Nothing of ours outlives a run: every object of a namespace (and the nodes a run touched) searched for a key of
the chaos.coordinator.dev group, at any depth (a pod template's annotations, a ReplicaSet copied from a
Deployment, a finalizer)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

from coordinator.api.models import GROUP

# Our own kinds carry our keys by design; Events only tell what happened.
IGNORED_RESOURCES = {"events", "events.events.k8s.io"}


def _ours(text: str) -> bool:
    return text.startswith(f"{GROUP}/") or text.startswith(f"{GROUP}.")


def keys_of_ours(node: Any, path: str = "", ignore: Collection[str] = ()) -> Iterator[str]:
    """Every ``path: key`` of the group at any depth of ``node``, and every finalizer of ours; keys in ``ignore``
    are the test's own (the real node's label, which its workloads select)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and _ours(key) and key not in ignore:
                yield f"{path}.{key}" if path else key
            yield from keys_of_ours(value, f"{path}.{key}" if path else str(key), ignore)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            if path.endswith("finalizers") and isinstance(value, str) and _ours(value):
                yield f"{path}[{index}]: {value}"
            yield from keys_of_ours(value, f"{path}[{index}]", ignore)


def _kubectl(kubeconfig: Path, *args: str) -> str:
    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def namespaced_resources(kubeconfig: Path) -> list[str]:
    names = _kubectl(kubeconfig, "api-resources", "--namespaced=true", "--verbs=list", "-o", "name").split()
    return sorted(n for n in names if n not in IGNORED_RESOURCES and not n.endswith(f".{GROUP}"))


def residue(kubeconfig: Path, namespace: str, nodes: Sequence[str] = (), ignore: Collection[str] = ()) -> list[str]:
    """``kind/name: path`` of every key of ours left in ``namespace`` and on ``nodes`` (empty means clean); keys in
    ``ignore`` are the test's own."""
    items = json.loads(
        _kubectl(kubeconfig, "get", ",".join(namespaced_resources(kubeconfig)), "-n", namespace, "-o", "json")
    )["items"]
    items += [json.loads(_kubectl(kubeconfig, "get", "node", node, "-o", "json")) for node in nodes]
    found = []
    for item in items:
        where = f"{item['kind']}/{item['metadata']['name']}"
        found += [f"{where}: {key}" for key in keys_of_ours(item, ignore=ignore)]
    return found
