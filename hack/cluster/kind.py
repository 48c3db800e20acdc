"""The standard path for users with a Docker engine: a kind cluster behind the same commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

KIND_CLUSTER_NAME = "test-coordinator"


def kind_main(argv: list[str], workdir: Path) -> int:
    command = argv[0] if argv else "up"
    kind = shutil.which("kind")
    if kind is None:
        print("error: KIND=1 needs the `kind` binary on PATH (and a running Docker engine)", file=sys.stderr)
        return 1
    kubeconfig = workdir / "kubeconfig"
    if command == "up":
        workdir.mkdir(parents=True, exist_ok=True)
        existing = subprocess.run([kind, "get", "clusters"], capture_output=True, text=True, check=False).stdout
        if KIND_CLUSTER_NAME not in existing.split():
            proc = subprocess.run(
                [
                    kind,
                    "create",
                    "cluster",
                    "--name",
                    KIND_CLUSTER_NAME,
                    "--kubeconfig",
                    str(kubeconfig),
                    "--wait",
                    "120s",
                ],
                check=False,
            )
            if proc.returncode != 0:
                print("error: kind create cluster failed (is the Docker engine running?)", file=sys.stderr)
                return 1
        else:
            subprocess.run(
                [kind, "export", "kubeconfig", "--name", KIND_CLUSTER_NAME, "--kubeconfig", str(kubeconfig)],
                check=True,
            )
        print(f"kind cluster ready\n  export KUBECONFIG={kubeconfig}")
        return 0
    if command == "down":
        subprocess.run([kind, "delete", "cluster", "--name", KIND_CLUSTER_NAME], check=False)
        kubeconfig.unlink(missing_ok=True)
        return 0
    if command == "kubeconfig":
        print(kubeconfig)
        return 0
    print(f"usage: KIND=1 hack/cluster [up|down|kubeconfig] (got {command!r})", file=sys.stderr)
    return 2
