"""What every cluster benchmark shares: the simulated cluster, the operator process, the data stores, the
machine description, statistics and the JSON result files.

The benchmarks run against their own control plane (``.cluster-bench/``, ports shifted by 2000, 100 kwok nodes),
so a test session's cluster is left alone; it is booted when not running and stopped afterwards unless
``--keep-cluster``. The operator is a real ``coordinator run`` process (coordinator.testing.process, as the tests
and the demo start it), configured like a production install: PostgreSQL 15 and Redis started on 127.0.0.1
(coordinator.testing.servers), default intervals, INFO JSON logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator import __version__
from coordinator.adapters.kube import ApiError, KubeClient, resource_path
from coordinator.testing.process import OperatorProcess
from coordinator.testing.servers import PostgresServer, RedisServer

REPO = Path(__file__).resolve().parents[1]

RESULTS_ENV = "COORDINATOR_BENCH_RESULTS"  # another folder for the JSON files (run_all.py --quick uses one)


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_ENV) or REPO / "benchmarks" / "results")


LOGS = REPO / ".bench-logs"
CLUSTER_SCRIPT = REPO / "hack" / "cluster"
CLUSTER_ENV = {
    "COORDINATOR_CLUSTER_DIR": str(REPO / ".cluster-bench"),
    "COORDINATOR_CLUSTER_PORT_OFFSET": "2000",  # tests/e2e/test_cluster_lifecycle.py uses +1000
    "COORDINATOR_CLUSTER_NODES": "100",
}
NODES = int(CLUSTER_ENV["COORDINATOR_CLUSTER_NODES"])


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """``--cluster-dir`` and ``--port-offset``: run on another local cluster than the benchmark cluster."""
    parser.add_argument("--cluster-dir", help="another local cluster's directory (hack/cluster)")
    parser.add_argument("--port-offset", help="that cluster's port offset")


def use_cluster_arguments(args: argparse.Namespace) -> None:
    """Point :class:`BenchCluster` at the cluster ``add_cluster_arguments``' options name, if they do."""
    if args.cluster_dir:
        CLUSTER_ENV["COORDINATOR_CLUSTER_DIR"] = args.cluster_dir
    if args.port_offset:
        CLUSTER_ENV["COORDINATOR_CLUSTER_PORT_OFFSET"] = args.port_offset


OPT_IN = {"chaos.coordinator.dev/allow": "true"}
# The operator's settings in every benchmark unless one says otherwise (recorded with each result).
OPERATOR_SETTINGS = {
    "COORDINATOR_LOG_LEVEL": "INFO",
    "COORDINATOR_SWEEP_INTERVAL": "30",
    "COORDINATOR_POLL_INTERVAL": "0.5",
}


# --- the machine and the versions -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    versions = dict(
        line.split("=", 1)
        for line in (REPO / "hack" / "versions.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    meminfo = Path("/proc/meminfo").read_text()
    total_kib = int(re.search(r"MemTotal:\s+(\d+)", meminfo).group(1))  # type: ignore[union-attr]
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO, check=False
    )
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(total_kib / 2**20, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kopf": _dist_version("kopf"),
        "coordinator": __version__,
        "commit": commit.stdout.strip() or None,
        "kubernetes": versions.get("KUBE_VERSION"),
        "etcd": versions.get("ETCD_VERSION"),
        "kwok": versions.get("KWOK_VERSION"),
        "kwok_nodes": NODES,
    }


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


# --- statistics and results -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 0.5), 4),
        "p95": round(percentile(values, 0.95), 4),
        "p99": round(percentile(values, 0.99), 4),
        "max": round(max(values), 4) if values else float("nan"),
    }


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 4) if values else float("nan")


def write_result(name: str, payload: Mapping[str, Any]) -> Path:
    path = results_dir() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, "date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": machine(), **payload}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# --- the cluster --------------------------------------------------------------------------------------------------


@dataclass
class BenchCluster:
    keep: bool = False
    started_here: bool = False
    kubeconfig: Path = field(default_factory=lambda: Path(CLUSTER_ENV["COORDINATOR_CLUSTER_DIR"]) / "kubeconfig")

    def _script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **CLUSTER_ENV}
        return subprocess.run(
            [sys.executable, str(CLUSTER_SCRIPT), *args], env=env, text=True, capture_output=True, check=check
        )

    def __enter__(self) -> BenchCluster:
        if self._script("status", check=False).returncode != 0:
            print(f"booting the benchmark cluster ({NODES} kwok nodes) ...", flush=True)
            out = self._script("up")
            print(out.stdout.strip().splitlines()[0], flush=True)
            self.started_here = True
        # The CRDs as `make crds` generated them, established before any benchmark creates a resource.
        kubectl = ["kubectl", "--kubeconfig", str(self.kubeconfig)]
        subprocess.run([*kubectl, "apply", "--server-side", "-f", str(REPO / "crds")], check=True, capture_output=True)
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(REPO / "crds")],
            check=True,
            capture_output=True,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_here and not self.keep:
            self._script("down", check=False)


# --- data stores and the operator -------------------------------------------------------------------------------


@contextlib.contextmanager
def stores(backend: str) -> Iterator[dict[str, str]]:
    """Operator environment for a history backend: ``postgres`` (PostgreSQL 15 + Redis) or ``sqlite`` (embedded)."""
    if backend == "sqlite":
        path = LOGS / f"history-{os.getpid()}-{time.monotonic_ns()}.db"
        LOGS.mkdir(parents=True, exist_ok=True)
        try:
            yield {"COORDINATOR_HISTORY_PATH": str(path)}
        finally:
            path.unlink(missing_ok=True)
        return
    with PostgresServer() as pg, RedisServer() as redis:
        yield {"COORDINATOR_DATABASE_URL": pg.url(), "COORDINATOR_REDIS_URL": redis.url}


@contextlib.contextmanager
def operator(
    cluster: BenchCluster, namespaces: list[str], env: Mapping[str, str], name: str
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        cluster.kubeconfig, LOGS, env={**OPERATOR_SETTINGS, **env}, namespaces=namespaces, name=name, intervals={}
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@dataclass(frozen=True)
class Usage:
    rss_mib: float
    cpu_seconds: float


def usage(pid: int) -> Usage:
    """Resident memory and CPU seconds (user + system) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14 and 15 of stat)
    return Usage(rss_mib=round(rss_kib / 1024, 1), cpu_seconds=round(cpu, 2))


COMPONENTS = {
    "kube-apiserver": "kube-apiserver",
    "etcd": "etcd",
    "kwok": "kwok",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "postgres": "postgres",
    "redis-server": "redis",
}


def cpu_by_component(operator_pid: int | None = None) -> dict[str, float]:
    """CPU seconds used so far by each control-plane component of the benchmark cluster, the databases, the
    operator and this process.

    Only processes of this benchmark count: the machine is shared, and a test session's cluster beside this one
    runs the same binaries (its API server matched by name alone doubled "kube-apiserver" in a busy hour). A
    control-plane process is this cluster's when its command line names the cluster's directory; the databases
    are this process's children.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    cluster_dir = CLUSTER_ENV["COORDINATOR_CLUSTER_DIR"]
    stats: dict[int, tuple[str, int, float]] = {}  # pid -> (comm, parent pid, CPU seconds)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        stats[int(proc.name)] = (comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)

    def ours(pid: int) -> bool:
        try:
            if cluster_dir in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                return True
        except OSError:
            return False
        seen = 0
        while pid > 1 and seen < 32:  # a descendant of this benchmark (PostgreSQL, Redis)
            pid = stats.get(pid, ("", 1, 0.0))[1]
            if pid == os.getpid():
                return True
            seen += 1
        return False

    out: dict[str, float] = {}
    for pid, (comm, _, seconds) in stats.items():
        if pid == operator_pid:
            name = "operator"
        elif pid == os.getpid():
            name = "benchmark client"
        else:
            name = next((label for prefix, label in COMPONENTS.items() if comm.startswith(prefix[:15])), "")
            if name and not ours(pid):
                name = ""
        if name:
            out[name] = out.get(name, 0.0) + seconds
    return out


def cpu_delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {
        k: round(after[k] - before.get(k, 0.0), 2)
        for k in sorted(after, key=lambda k: -(after[k] - before.get(k, 0.0)))
    }


class Profiler:
    """py-spy sampling the operator process while a benchmark runs: collapsed stacks to a file, and a summary
    of where the samples fall (inclusive share per function, for the frames worth reading)."""

    def __init__(self, pid: int, name: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.path = LOGS / f"profile-{name}.txt"
        py_spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--format",
                "raw",
                "--rate",
                "200",
                "--nonblocking",
                "--output",
                str(self.path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self, top: int = 25) -> list[tuple[str, float]]:
        self.proc.send_signal(2)
        self.proc.wait(60)
        inclusive: dict[str, int] = {}
        total = 0
        for line in self.path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            n = int(count)
            total += n
            for frame in {
                f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" for f in stack.split(";") if " (" in f
            }:
                inclusive[frame] = inclusive.get(frame, 0) + n
        ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]
        return [(frame, round(100 * n / max(total, 1), 1)) for frame, n in ranked]


def scrape(url: str) -> dict[str, float]:
    """``name{labels}`` -> value of the operator's /metrics (without the constant labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:  # noqa: S310 - loopback http
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        key = re.sub(r'(service|instance|version)="[^"]*",?', "", key).replace(",}", "}").replace("{}", "")
        out[key] = float(value)
    return out


_REQUEST_LINE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


async def apiserver_requests(kubeconfig: Path) -> dict[str, float]:
    """The API server's own request counters (every client), as ``VERB resource[/subresource]`` -> count."""
    command = ["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/metrics"]
    done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=True)
    text = done.stdout
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _REQUEST_LINE.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group("labels")))
        if labels.get("verb") == "WATCH":
            continue
        resource = labels.get("resource", "") + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        key = f"{labels.get('verb', '')} {resource or labels.get('component', '')}"
        out[key] = out.get(key, 0.0) + float(match.group("value"))
    return out


def counter_delta(before: Mapping[str, float], after: Mapping[str, float], per: float = 1.0) -> dict[str, float]:
    """``after - before`` per key (divided by ``per``), largest first, zeros dropped."""
    delta = {k: (v - before.get(k, 0.0)) / per for k, v in after.items()}
    return {k: round(v, 2) for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v > 0}


@dataclass(frozen=True)
class ApiUse:
    """The operator's Kubernetes API requests by method, and the seconds they waited for its rate limiter."""

    requests: dict[str, int]
    throttled_seconds: float

    @classmethod
    def scrape(cls, url: str) -> ApiUse:
        """From the operator's /metrics (``coordinator_kube_api_*``), counted since it started."""
        metrics = scrape(url)
        requests = {
            re.search(r'method="(\w+)"', key).group(1): int(v)  # type: ignore[union-attr]
            for key, v in metrics.items()
            if key.startswith("coordinator_kube_api_requests_total{")
        }
        return cls(requests, metrics.get("coordinator_kube_api_throttled_seconds_total", 0.0))

    def since(self, before: ApiUse) -> ApiUse:
        return ApiUse(
            {m: n - before.requests.get(m, 0) for m, n in self.requests.items() if n > before.requests.get(m, 0)},
            round(self.throttled_seconds - before.throttled_seconds, 2),
        )

    @property
    def total(self) -> int:
        return sum(self.requests.values())


# --- Kubernetes objects -------------------------------------------------------------------------------------------


async def connect(cluster: BenchCluster) -> KubeClient:
    # The benchmark's own client must never be the bottleneck: no client-side limit worth the name.
    return await KubeClient.connect(str(cluster.kubeconfig), qps=5000, burst=5000)


def round_namespace(base: str) -> str:
    """A namespace name no earlier round used: ``base`` and a random suffix.

    A namespace deleted and created again under the same name within 30 s costs every request in it a live GET
    of the namespace: the API server's NamespaceLifecycle admission plugin keeps a namespace it saw deleted in a
    "force live lookup" cache for 30 s. A round that reused the name of the round before sent 1,250 such GETs in
    a burst of 100 runs, a third of the API server's requests, which no user's burst would (finding 25).
    """
    return f"{base}-{secrets.token_hex(3)}"


async def fresh_namespace(client: KubeClient, name: str) -> None:
    """Delete ``name`` if it exists (waiting until it is gone), then create it opted in to chaos."""
    path = resource_path("Namespace", name=name)
    with contextlib.suppress(ApiError):
        await client.delete(path)
    # An earlier benchmark that was interrupted can leave objects whose finalizer no operator will remove now.
    for kind in ("TestRun", "ChaosScenario"):
        with contextlib.suppress(ApiError):
            for obj in await client.list(resource_path(kind, name)):
                if obj["metadata"].get("finalizers"):
                    await client.patch(
                        resource_path(kind, name, obj["metadata"]["name"]), {"metadata": {"finalizers": None}}
                    )

    async def gone() -> bool:
        return await client.get_or_none(path) is None

    await eventually(gone, within=300, what=f"namespace {name} deleted")
    await client.create(
        resource_path("Namespace"), {"metadata": {"name": name, "labels": {**OPT_IN, "benchmark": "true"}}}
    )
    # Pods are refused until the ServiceAccount controller made the namespace's default account.
    sa = f"/api/v1/namespaces/{name}/serviceaccounts/default"

    async def account() -> bool:
        return await client.get_or_none(sa) is not None

    await eventually(account, within=60, what=f"the default ServiceAccount of {name}")


async def eventually(check: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.2) -> None:
    """Poll ``check`` until it holds; TimeoutError naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:.0f}s")
        await asyncio.sleep(interval)


async def delete_namespace(client: KubeClient, name: str, within: float = 300, wait: bool = True) -> None:
    """Delete a round's namespace and (``wait``) wait until it is gone: the namespace controller deleting
    thousands of Events, pods and TestRuns must not run on the same cores as the next round."""
    path = resource_path("Namespace", name=name)
    with contextlib.suppress(ApiError):
        await client.delete(path)
    if not wait:
        return

    async def gone() -> bool:
        return await client.get_or_none(path) is None

    await eventually(gone, within=within, what=f"namespace {name} deleted", interval=0.5)


def pod_manifest(name_prefix: str, labels: Mapping[str, str], node: int) -> dict[str, Any]:
    """A pod bound to a kwok node directly (no scheduling): kwok marks it Running and Ready at once."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": name_prefix, "labels": dict(labels)},
        "spec": {
            "nodeName": f"kwok-node-{node % NODES}",
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


async def create_pods(
    client: KubeClient, namespace: str, manifests: Sequence[dict[str, Any]], parallel: int = 64
) -> None:
    gate = asyncio.Semaphore(parallel)

    async def one(body: dict[str, Any]) -> None:
        async with gate:
            await client.create(resource_path("Pod", namespace), body)

    await asyncio.gather(*(one(m) for m in manifests))


async def watch_events(client: KubeClient, path: str, label_selector: str = "") -> AsyncIterator[dict[str, Any]]:
    """The collection's objects (as ADDED events), then its watch events, forever: a closed watch is resumed from
    the last resourceVersion, an expired one (410) relisted."""
    version: str | None = None
    params: dict[str, str | int] = {"labelSelector": label_selector} if label_selector else {}
    while True:
        if version is None:
            listing = await client.get(path, params=params)
            version = listing["metadata"]["resourceVersion"]
            for item in listing.get("items", []):
                yield {"type": "ADDED", "object": item}
        try:
            async for event in client.watch(
                path, resource_version=version, timeout_seconds=240, label_selector=label_selector
            ):
                if event.get("type") == "ERROR":
                    version = None
                    break
                version = event["object"]["metadata"].get("resourceVersion", version)
                yield event
        except ApiError as exc:
            if exc.status != 410:
                raise
            version = None


def iso_to_epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
