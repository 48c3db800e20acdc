"""Build the local control plane's binaries from Go modules, once, into a cache outside the repository.

Each binary lands in ``<cache>/bin/<component>-<version>/``; a directory that exists is never rebuilt, so changing
one pin in ``hack/versions.env`` rebuilds only that component. Standard library only: this runs before any
virtualenv exists.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HACK_DIR = Path(__file__).resolve().parent.parent
VERSIONS_FILE = HACK_DIR / "versions.env"
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# A real node (``make cluster-up REAL=1``): built from the same wrapper module as the control plane, on demand.
NODE_COMMANDS = ("kubelet", "kube-proxy")
# kube-router's v2.1.0 (the newest the module proxy serves) pins dependencies with published advisories; the wrapper
# module raises these to the releases below (pinned, so every machine builds the same binary), which kube-router's
# code builds against unchanged.
KUBE_ROUTER_DEPENDENCY_UPGRADES = (
    "golang.org/x/net@v0.63.0",
    "golang.org/x/crypto@v0.59.0",
    "golang.org/x/oauth2@v0.38.0",
    "google.golang.org/grpc@v1.85.0",
    "google.golang.org/protobuf@v1.36.12",
)


class BuildError(RuntimeError):
    """A binary could not be built; the message says which and why."""


@dataclass(frozen=True)
class Versions:
    kube: str
    kube_staging: str
    etcd: str
    kwok: str
    kube_router: str
    helm: str
    otelcol: str


def read_versions(path: Path = VERSIONS_FILE) -> Versions:
    """Read the pinned versions (``KEY=VALUE`` lines, ``#`` comments)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    try:
        return Versions(
            kube=values["KUBE_VERSION"],
            kube_staging=values["KUBE_STAGING_VERSION"],
            etcd=values["ETCD_VERSION"],
            kwok=values["KWOK_VERSION"],
            kube_router=values["KUBE_ROUTER_VERSION"],
            helm=values["HELM_VERSION"],
            otelcol=values["OTELCOL_VERSION"],
        )
    except KeyError as exc:
        raise BuildError(f"{path}: missing {exc.args[0]}") from None


def cache_root() -> Path:
    explicit = os.environ.get("COORDINATOR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "test-coordinator"


@dataclass(frozen=True)
class Binaries:
    """Where each binary of a pinned set lives."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    etcd: Path
    kwok: Path


@dataclass(frozen=True)
class NodeBinaries:
    """The binaries of a real node (``REAL=1``)."""

    kubelet: Path
    kube_proxy: Path
    kube_router: Path


def binary_dirs(versions: Versions, root: Path | None = None) -> dict[str, Path]:
    bin_root = (root or cache_root()) / "bin"
    return {
        "kube": bin_root / f"kube-{versions.kube}",
        "etcd": bin_root / f"etcd-{versions.etcd}",
        "kwok": bin_root / f"kwok-{versions.kwok}",
        "node": bin_root / f"kube-node-{versions.kube}",
        "kube-router": bin_root / f"kube-router-{versions.kube_router}",
        "helm": bin_root / f"helm-{versions.helm}",
        "otelcol": bin_root / f"otelcol-{versions.otelcol}",
    }


def binaries(versions: Versions, root: Path | None = None) -> Binaries:
    dirs = binary_dirs(versions, root)
    return Binaries(
        kube_apiserver=dirs["kube"] / "kube-apiserver",
        kube_controller_manager=dirs["kube"] / "kube-controller-manager",
        kube_scheduler=dirs["kube"] / "kube-scheduler",
        etcd=dirs["etcd"] / "etcd",
        kwok=dirs["kwok"] / "kwok",
    )


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed or not on PATH. The local control plane is built from Go modules "
            "(Go >= 1.24 is needed); install Go or point KUBECONFIG/COORDINATOR_TEST_KUBECONFIG at a cluster."
        )
    return go


def _run_logged(name: str, cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    """Run a Go command, appending to ``log`` and printing a heartbeat so a person knows it is working."""
    started = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(30):
                print(f"  ... {name}: still building ({time.monotonic() - started:.0f}s)", flush=True)

        threading.Thread(target=heartbeat, daemon=True).start()
        try:
            code = proc.wait()
        finally:
            done.set()
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise BuildError(f"building {name} failed (exit {code}); last lines of {log}:\n{tail}")


def _go_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": "local"})
    env.setdefault("GOPATH", str(Path.home() / "go"))
    return env


def download_module(module: str, env: dict[str, str], workdir: Path) -> dict[str, str]:
    """``go mod download -json module@version``: where the module's go.mod and source landed."""
    out = subprocess.run(
        [_go(), "mod", "download", "-json", module],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise BuildError(f"cannot download {module}:\n{out.stdout}{out.stderr}")
    info: dict[str, str] = json.loads(out.stdout)
    return info


def _kube_wrapper_go_mod(versions: Versions, env: dict[str, str], workdir: Path) -> str:
    """A go.mod that requires k8s.io/kubernetes and pins every staging module it replaces locally.

    k8s.io/kubernetes points its staging modules at ``./staging/src/...`` (and requires them at v0.0.0), which a
    downstream module cannot use; the list is read from its own go.mod so a version bump needs no edit here.
    """
    upstream = Path(download_module(f"k8s.io/kubernetes@{versions.kube}", env, workdir)["GoMod"]).read_text()
    staging = sorted(
        {line.split()[0] for line in upstream.splitlines() if "=> ./staging/src/" in line and line.split()}
    )
    go_line = next((ln for ln in upstream.splitlines() if ln.startswith("go ")), "go 1.24.0")
    replaces = "\n".join(f"\t{mod} => {mod} {versions.kube_staging}" for mod in staging)
    return (
        f"module local/kube-build\n\n{go_line}\n\nrequire k8s.io/kubernetes {versions.kube}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def _tools_go(imports: list[str]) -> str:
    lines = "\n".join(f'\t_ "{imp}"' for imp in imports)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{lines}\n)\n"


def _install(target: Path, staged: Path) -> None:
    """Move a finished build into place atomically, so a half-built directory never looks cached."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(staged)
        return
    staged.rename(target)


def build_kube(versions: Versions, cache: Path, log: Path) -> None:
    _build_kube_commands(versions, cache, log, KUBE_COMMANDS, "kube")


def build_node(versions: Versions, cache: Path, log: Path) -> None:
    _build_kube_commands(versions, cache, log, NODE_COMMANDS, "node")


def _build_kube_commands(versions: Versions, cache: Path, log: Path, commands: tuple[str, ...], key: str) -> None:
    env = _go_env(cache)
    with tempfile.TemporaryDirectory(prefix=f"{key}-build-", dir=cache) as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(_kube_wrapper_go_mod(versions, env, work))
        (work / "tools.go").write_text(_tools_go([f"k8s.io/kubernetes/cmd/{c}" for c in commands]))
        _run_logged("kubernetes (go mod tidy)", [_go(), "mod", "tidy"], work, env, log)
        stamp = (
            f"-s -w -X k8s.io/component-base/version.gitVersion={versions.kube}"
            " -X k8s.io/component-base/version.gitTreeState=clean"
            f" -X k8s.io/component-base/version.buildDate={time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
        )
        out = work / "out"
        out.mkdir()
        cmd = [_go(), "build", "-trimpath", "-ldflags", stamp, "-o", str(out) + "/"]
        cmd += [f"k8s.io/kubernetes/cmd/{c}" for c in commands]
        _run_logged(f"{'/'.join(commands)} {versions.kube}", cmd, work, env, log)
        _install(binary_dirs(versions, cache)[key], out)


def build_kube_router(versions: Versions, cache: Path, log: Path) -> None:
    """kube-router, only its NetworkPolicy firewall is used (boot passes ``--run-router=false`` and so on)."""
    env = _go_env(cache)
    module = "github.com/cloudnativelabs/kube-router/v2"
    with tempfile.TemporaryDirectory(prefix="kube-router-build-", dir=cache) as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(
            f"module local/kube-router-build\n\ngo 1.24\n\nrequire {module} {versions.kube_router}\n"
        )
        (work / "tools.go").write_text(_tools_go([f"{module}/cmd/kube-router"]))
        _run_logged("kube-router (go mod tidy)", [_go(), "mod", "tidy"], work, env, log)
        _run_logged(
            "kube-router (dependency upgrades)", [_go(), "get", *KUBE_ROUTER_DEPENDENCY_UPGRADES], work, env, log
        )
        out = work / "out"
        out.mkdir()
        stamp = f"-s -w -X {module}/pkg/version.Version={versions.kube_router}"
        cmd = [
            _go(),
            "build",
            "-trimpath",
            "-ldflags",
            stamp,
            "-o",
            str(out / "kube-router"),
            f"{module}/cmd/kube-router",
        ]
        _run_logged(f"kube-router {versions.kube_router}", cmd, work, env, log)
        _install(binary_dirs(versions, cache)["kube-router"], out)


def build_etcd(versions: Versions, cache: Path, log: Path) -> None:
    """etcd's own go.mod uses relative ``replace`` lines, so ``go install`` cannot build it; wrap it."""
    env = _go_env(cache)
    with tempfile.TemporaryDirectory(prefix="etcd-build-", dir=cache) as tmp:
        work = Path(tmp)
        (work / "go.mod").write_text(
            f"module local/etcd-build\n\ngo 1.23\n\nrequire go.etcd.io/etcd/server/v3 {versions.etcd}\n"
        )
        (work / "main.go").write_text(
            'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() { etcdmain.Main(os.Args) }\n"
        )
        _run_logged("etcd (go mod tidy)", [_go(), "mod", "tidy"], work, env, log)
        out = work / "out"
        out.mkdir()
        _run_logged(
            f"etcd {versions.etcd}",
            [_go(), "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."],
            work,
            env,
            log,
        )
        _install(binary_dirs(versions, cache)["etcd"], out)


def build_kwok(versions: Versions, cache: Path, log: Path) -> None:
    env = _go_env(cache)
    with tempfile.TemporaryDirectory(prefix="kwok-build-", dir=cache) as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        env["GOBIN"] = str(out)
        env["GOFLAGS"] = "-buildvcs=false"
        _run_logged(
            f"kwok {versions.kwok}",
            [
                _go(),
                "install",
                "-trimpath",
                "-ldflags",
                "-s -w",
                f"sigs.k8s.io/kwok/cmd/kwok@{versions.kwok}",
            ],
            Path(tmp),
            env,
            log,
        )
        _install(binary_dirs(versions, cache)["kwok"], out)


def build_helm(versions: Versions, cache: Path, log: Path) -> None:
    """helm, for the chart's tests (``helm lint``, ``helm template``) and for installing with it."""
    env = _go_env(cache)
    with tempfile.TemporaryDirectory(prefix="helm-build-", dir=cache) as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        env["GOBIN"] = str(out)
        env["GOFLAGS"] = "-buildvcs=false"
        stamp = f"-s -w -X helm.sh/helm/v3/internal/version.version={versions.helm}"
        _run_logged(
            f"helm {versions.helm}",
            [_go(), "install", "-trimpath", "-ldflags", stamp, f"helm.sh/helm/v3/cmd/helm@{versions.helm}"],
            Path(tmp),
            env,
            log,
        )
        _install(binary_dirs(versions, cache)["helm"], out)


# The tracing tests' receiver: an OpenTelemetry Collector of two components, OTLP in (HTTP and gRPC) and a file
# out, built from the collector's Go modules (the released distributions are not Go-installable). The program is
# what the collector's builder (ocb) generates for such a manifest, written out here.
OTELCOL_MAIN = """package main

import (
\t"log"

\t"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
\t"go.opentelemetry.io/collector/component"
\t"go.opentelemetry.io/collector/confmap"
\t"go.opentelemetry.io/collector/confmap/provider/fileprovider"
\t"go.opentelemetry.io/collector/exporter"
\t"go.opentelemetry.io/collector/otelcol"
\t"go.opentelemetry.io/collector/receiver"
\t"go.opentelemetry.io/collector/receiver/otlpreceiver"
\t"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

var version = "dev"

func components() (otelcol.Factories, error) {
\tvar err error
\tfactories := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
\tif factories.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
\t\treturn otelcol.Factories{}, err
\t}
\tif factories.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory()); err != nil {
\t\treturn otelcol.Factories{}, err
\t}
\treturn factories, nil
}

func main() {
\tsettings := otelcol.CollectorSettings{
\t\tBuildInfo: component.BuildInfo{Command: "otelcol", Description: "OTLP receiver and file exporter", Version: version},
\t\tFactories: components,
\t\tConfigProviderSettings: otelcol.ConfigProviderSettings{
\t\t\tResolverSettings: confmap.ResolverSettings{
\t\t\t\tProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory()},
\t\t\t\tDefaultScheme:     "file",
\t\t\t},
\t\t},
\t}
\tif err := otelcol.NewCommand(settings).Execute(); err != nil {
\t\tlog.Fatal(err)
\t}
}
"""


def build_otelcol(versions: Versions, cache: Path, log: Path) -> None:
    """The OpenTelemetry Collector the tracing tests export to and read spans back from (its file exporter)."""
    env = _go_env(cache)
    release = versions.otelcol
    with tempfile.TemporaryDirectory(prefix="otelcol-build-", dir=cache) as tmp:
        work = Path(tmp)
        (work / "main.go").write_text(OTELCOL_MAIN)
        (work / "go.mod").write_text("module local/otelcol-build\n\ngo 1.24.0\n")
        out = work / "out"
        out.mkdir()
        name = f"otelcol {release}"
        modules = [
            f"go.opentelemetry.io/collector/otelcol@{release}",
            f"go.opentelemetry.io/collector/receiver/otlpreceiver@{release}",
            f"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter@{release}",
        ]
        _run_logged(name, [_go(), "get", *modules], work, env, log)
        _run_logged(name, [_go(), "mod", "tidy"], work, env, log)
        stamp = f"-s -w -X main.version={release}"
        _run_logged(
            name, [_go(), "build", "-trimpath", "-ldflags", stamp, "-o", str(out / "otelcol"), "."], work, env, log
        )
        _install(binary_dirs(versions, cache)["otelcol"], out)


def _ensure_tool(name: str, builder: Builder, versions: Versions | None, cache: Path | None) -> Path:
    """Build the single-binary tool ``name`` if missing; return its path."""
    versions = versions or read_versions()
    cache = cache or cache_root()
    _build_missing(versions, cache, [(name, builder)])
    binary = binary_dirs(versions, cache)[name] / name
    if not binary.is_file():
        raise BuildError(f"build finished but {binary} is missing")
    return binary


def ensure_otelcol(versions: Versions | None = None, cache: Path | None = None) -> Path:
    """Build the collector if missing; return its path."""
    return _ensure_tool("otelcol", build_otelcol, versions, cache)


def ensure_helm(versions: Versions | None = None, cache: Path | None = None) -> Path:
    """Build helm if missing; return its path."""
    return _ensure_tool("helm", build_helm, versions, cache)


POD_STAGES = ("pod-ready.yaml", "pod-complete.yaml", "pod-delete.yaml")


def ensure_kwok_stages(versions: Versions, cache: Path) -> Path:
    """Copy kwok's own "fast" pod Stages next to its binary (boot.py adds a per-pod ready delay to them).

    They come from the same module version as the binary, so a kwok upgrade brings its matching stages.
    """
    target = binary_dirs(versions, cache)["kwok"] / "stages"
    if all((target / name).is_file() for name in POD_STAGES):
        return target
    module = download_module(f"sigs.k8s.io/kwok@{versions.kwok}", _go_env(cache), cache)
    source = Path(module["Dir"]) / "kustomize" / "stage" / "pod" / "fast"
    target.mkdir(parents=True, exist_ok=True)
    for name in POD_STAGES:
        (target / name).write_text((source / name).read_text())
    return target


Builder = Callable[[Versions, Path, Path], None]


def _build_missing(versions: Versions, cache: Path, steps: list[tuple[str, Builder]]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "logs").mkdir(exist_ok=True)
    dirs = binary_dirs(versions, cache)
    for name, build in steps:
        if dirs[name].is_dir():
            continue
        log = cache / "logs" / f"{dirs[name].name}.log"
        log.write_text("")
        print(f"==> building {dirs[name].name} from Go modules (first time only; log: {log})", flush=True)
        started = time.monotonic()
        build(versions, cache, log)
        print(f"==> built {dirs[name].name} in {time.monotonic() - started:.0f}s", flush=True)


def ensure_binaries(versions: Versions | None = None, cache: Path | None = None) -> Binaries:
    """Build whatever is missing for the pinned versions and return where the binaries are."""
    versions = versions or read_versions()
    cache = cache or cache_root()
    _build_missing(versions, cache, [("kube", build_kube), ("etcd", build_etcd), ("kwok", build_kwok)])
    ensure_kwok_stages(versions, cache)
    found = binaries(versions, cache)
    missing = [str(p) for p in vars(found).values() if not Path(p).is_file()]
    if missing:
        raise BuildError(f"build finished but binaries are missing: {', '.join(missing)}")
    return found


def ensure_node_binaries(versions: Versions | None = None, cache: Path | None = None) -> NodeBinaries:
    """Build a real node's kubelet, kube-proxy and kube-router if missing."""
    versions = versions or read_versions()
    cache = cache or cache_root()
    _build_missing(versions, cache, [("node", build_node), ("kube-router", build_kube_router)])
    dirs = binary_dirs(versions, cache)
    found = NodeBinaries(
        kubelet=dirs["node"] / "kubelet",
        kube_proxy=dirs["node"] / "kube-proxy",
        kube_router=dirs["kube-router"] / "kube-router",
    )
    missing = [str(p) for p in vars(found).values() if not Path(p).is_file()]
    if missing:
        raise BuildError(f"build finished but binaries are missing: {', '.join(missing)}")
    return found


def main() -> int:
    try:
        found = ensure_binaries()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in vars(found).values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
