"""Build the project's container images without a Docker engine, cache them, and import them into containerd.

``python3 hack/images [--import-to SOCKET] [NAMES...]``; without names: the images a node runs (pause, tools,
operator, web). Each image is built once into ``<cache>/images/<name>-<tag>-<hash>.tar``, where the hash covers
everything the image is made from; an archive that exists is never rebuilt. Standard library only: this runs before
any virtualenv exists, and ``hack/cluster/node.py`` imports it (``ensure_images``, ``import_images``).

The images, in build order:

``debian:bookworm-slim``, ``python:3.11.10-slim-bookworm``
    Local stand-ins for the Docker Hub base images that the Dockerfile names, so that it builds unchanged with no
    registry. Bootstrapped with mmdebstrap (variant minbase, docs and locales left out as the slim images do) from
    the host's Debian bookworm apt sources. The python one is NOT the upstream image: it is Debian's python3, so
    Python 3.11.x as bookworm ships it (not 3.11.10 built from source), with venv and pip, ``/usr/local/bin/python``
    and ``pip`` linked to Debian's, and no PEP 668 marker, like the upstream image.
``test-coordinator-pause:3.10``
    The pod sandbox image: ``pause/main.go``, static, FROM scratch.
``test-coordinator-tools:<version>``, ``test-coordinator:<version>``
    The Dockerfile's ``tools`` and ``runtime`` stages (the agent and the operator), built by buildah.
``test-coordinator-web:<version>``
    The sample workload: ``web/server.py`` on the python base (``web/Containerfile``).

buildah runs with chroot isolation, the host network and vfs storage under the cache, so nothing global is touched.
pip inside a build gets the host's pip settings (its pip.conf files and ``PIP_*`` variables, merged into one
pip.conf bound over ``/etc/pip.conf``) and every host file they name (the CA bundle, say), bound read-only: nothing of
it ends up in an image.

Why Docker archives rather than OCI archives: ``ctr images import`` names the images of a Docker archive from its
``RepoTags`` through the same reference normalization that the CRI plugin applies to a pod's ``image:``, so the short
name in the archive becomes exactly the name kubelet asks for. An OCI archive would need the registry-qualified name
in its ``io.containerd.image.name`` annotation, and this repository never spells out a registry host.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import fcntl
import hashlib
import importlib.util
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatch
from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent
# The containerd image label that records which archive an image was imported from (import_images skips those).
ARCHIVE_LABEL = "test-coordinator.archive"
REPO_ROOT = IMAGES_DIR.parent.parent
IGNORE_FILE = IMAGES_DIR / "context.ignore"
# Bump when the build changes in a way that no hashed input shows: every image is then rebuilt.
RECIPE_VERSION = "1"
SUITE = "bookworm"
HASH_LENGTH = 16
HEARTBEAT_SECONDS = 20
DEFAULT_IMAGES = ("pause", "tools", "operator", "web")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the slim images leave out (dpkg path filters, kept in the image so later installs leave them out too), and
# dpkg without fsync: a throwaway root does not need it, and it halves the time of a bootstrap.
SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
    "force-unsafe-io",
)
APT_OPTIONS = ('Acquire::Languages "none"',)
# Files every base image gets, last (after mmdebstrap's package cache is saved). The apt settings are those of the
# Docker Hub Debian images: a Dockerfile's "apt-get install" leaves no package files in its layer. /etc/hosts exists
# so that buildah, which binds the host's over it during RUN, has no empty mount point to leave in a layer.
APT_CLEAN = "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"
BASE_FILES = (
    (
        "/etc/apt/apt.conf.d/docker-clean",
        f'DPkg::Post-Invoke {{ "{APT_CLEAN}"; }};\nAPT::Update::Post-Invoke {{ "{APT_CLEAN}"; }};\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
    ),
    ("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
)
# mmdebstrap's own hook: /usr merged the way debootstrap does it. Without it, apt satisfies init-system-helpers'
# dependency with the usrmerge package, which brings 50 MB of perl into the image.
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class ImageBuildError(RuntimeError):
    """An image could not be built or imported; the message says which, why, and where the log is."""


# --- what the images are -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """A Debian base image bootstrapped with mmdebstrap (variant minbase) from the host's bookworm apt sources."""

    packages: tuple[str, ...] = ()
    customize: tuple[str, ...] = ()  # shell commands run as mmdebstrap --customize-hook; "$1" is the new root
    files: tuple[tuple[str, str], ...] = ()  # (path in the image, text), written after the BASE_FILES
    env: tuple[str, ...] = (PATH_ENV,)
    cmd: tuple[str, ...] = ("bash",)


@dataclass(frozen=True)
class StaticGo:
    """A FROM-scratch image of one static Go program (standard library only), which is its entrypoint."""

    source: str  # repository-relative directory with a go.mod
    binary: str  # absolute path inside the image
    user: str = "65535:65535"  # unprivileged, as the upstream pause image: it needs no rights


@dataclass(frozen=True)
class Containerfile:
    """An image built by buildah from a Dockerfile (or Containerfile) of this repository."""

    file: str  # repository-relative
    context: str  # repository-relative
    target: str | None = None  # a stage name; None: the last stage


Recipe = Bootstrap | StaticGo | Containerfile


@dataclass(frozen=True)
class Image:
    key: str  # what the command line and ensure_images() call it: "web"
    ref: str  # what a pod spec or a FROM line calls it: "test-coordinator-web:0.1.0"
    recipe: Recipe

    @property
    def repository(self) -> str:
        return split_reference(self.ref)[0]

    @property
    def tag(self) -> str:
        return split_reference(self.ref)[1]


def project_version(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The operator's version (pyproject.toml), which tags the project's own images."""
    with pyproject.open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


def catalog(version: str | None = None) -> dict[str, Image]:
    """Every image this script builds, by key, in an order where an image comes after the images it is built from."""
    version = version or project_version()
    images = [
        Image("debian", "debian:bookworm-slim", Bootstrap()),
        Image(
            "python",
            "python:3.11.10-slim-bookworm",
            Bootstrap(
                packages=("ca-certificates", "netbase", "python3", "python3-pip", "python3-venv"),
                customize=(
                    'ln -s /usr/bin/python3 "$1/usr/local/bin/python"',
                    'ln -s /usr/bin/pip3 "$1/usr/local/bin/pip"',
                    'rm -f "$1"/usr/lib/python3.*/EXTERNALLY-MANAGED',
                ),
                # Present, so that a build can bind the host's pip settings over it (see _containerfile).
                files=(("/etc/pip.conf", "# pip's site settings: none (pip's defaults).\n"),),
                env=(PATH_ENV, "LANG=C.UTF-8"),
                cmd=("python3",),
            ),
        ),
        Image("pause", "test-coordinator-pause:3.10", StaticGo(source="hack/images/pause", binary="/pause")),
        Image("tools", f"test-coordinator-tools:{version}", Containerfile("Dockerfile", ".", target="tools")),
        Image("operator", f"test-coordinator:{version}", Containerfile("Dockerfile", ".", target="runtime")),
        Image(
            "web", f"test-coordinator-web:{version}", Containerfile("hack/images/web/Containerfile", "hack/images/web")
        ),
        # The history database of the shipped install (manifests/base/history-postgresql.yaml): a stand-in for the
        # official image, with its interface, from Debian's postgresql-15.
        Image(
            "postgres",
            "postgres:15-bookworm",
            Containerfile("hack/images/postgres/Containerfile", "hack/images/postgres"),
        ),
    ]
    return {image.key: image for image in images}


def select_images(names: Iterable[str] | None, images: Mapping[str, Image]) -> list[str]:
    """Keys of the images named by key ("web") or by reference ("test-coordinator-web:0.1.0"); None: the defaults."""
    if names is None:
        return list(DEFAULT_IMAGES)
    by_ref = {image.ref: key for key, image in images.items()}
    keys: list[str] = []
    for name in names:
        key = name if name in images else by_ref.get(familiar_name(name))
        if key is None:
            known = ", ".join(f"{k} ({image.ref})" for k, image in images.items())
            raise ImageBuildError(f"unknown image {name!r}; known: {known}")
        if key not in keys:
            keys.append(key)
    return keys


# --- image references ----------------------------------------------------------------------------------------------


def split_reference(ref: str) -> tuple[str, str]:
    """``name[:tag]`` -> (name, tag); the tag defaults to "latest". A port in a registry host is not a tag."""
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def split_domain(ref: str) -> tuple[str | None, str]:
    """(registry host or None, the rest), by the rule of Docker references: a first component naming a host."""
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, ref


def familiar_name(ref: str) -> str:
    """A reference as a person writes it: without the registry host and the implicit ``library/``; tag kept."""
    _, path = split_domain(ref)
    if path.startswith("library/") and path.count("/") == 1:
        path = path.removeprefix("library/")
    return path


def is_pullable_as(listed: str, ref: str) -> bool:
    """Whether an image that containerd lists as ``listed`` is what a pod spec ``image: ref`` resolves to.

    kubelet/CRI qualify a short name with the default registry (and ``library/``), never with ``localhost``; an
    image imported under a bare or ``localhost/`` name would be invisible to a pod that asks for it.
    """
    domain, _ = split_domain(listed)
    if domain is None or domain == "localhost":
        return False
    wanted_name, wanted_tag = split_reference(familiar_name(ref))
    listed_name, listed_tag = split_reference(familiar_name(listed))
    return (listed_name, listed_tag) == (wanted_name, wanted_tag)


# --- Dockerfiles: what a target is made from -----------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]  # (KEYWORD, arguments), continuation lines joined


def parse_stages(text: str) -> list[Stage]:
    """The stages of a Dockerfile. Comment lines go first, as in Docker's parser (they may sit in a continuation)."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("#")]
    logical = re.sub(r"\\[ \t]*\n", " ", "\n".join(lines))
    stages: list[tuple[str, str | None, list[tuple[str, str]]]] = []
    for line in logical.splitlines():
        keyword, _, arguments = line.strip().partition(" ")
        if not keyword:
            continue
        if keyword.upper() == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append((words[0], name, []))
        elif stages:
            stages[-1][2].append((keyword.upper(), arguments.strip()))
    return [Stage(base, name, tuple(instructions)) for base, name, instructions in stages]


def _copy_arguments(arguments: str) -> tuple[dict[str, str], list[str]]:
    """COPY/ADD arguments: (flags, paths); the last path is the destination. JSON form included."""
    words = json.loads(arguments) if arguments.startswith("[") else arguments.split()
    flags = dict(word[2:].partition("=")[::2] for word in words if word.startswith("--"))
    return flags, [word for word in words if not word.startswith("--")]


def stages_for(stages: Sequence[Stage], target: str | None) -> list[Stage]:
    """The stages a build of ``target`` runs (the last stage when None), dependencies first."""
    by_name = {stage.name: stage for stage in stages if stage.name}
    if target is None:
        wanted = stages[-1]
    elif target in by_name:
        wanted = by_name[target]
    else:
        raise ImageBuildError(f"no stage named {target!r}; the stages are {sorted(by_name)}")
    needed: list[Stage] = []

    def visit(stage: Stage) -> None:
        if stage in needed:
            return
        if stage.base in by_name:
            visit(by_name[stage.base])
        for keyword, arguments in stage.instructions:
            if keyword in ("COPY", "ADD"):
                source = _copy_arguments(arguments)[0].get("from")
                if source in by_name:
                    visit(by_name[source])
        needed.append(stage)

    visit(wanted)
    return needed


def external_bases(stages: Sequence[Stage], target: str | None) -> list[str]:
    """The images a build of ``target`` starts from or copies from (stage names excluded)."""
    names = {stage.name for stage in stages if stage.name}
    bases: list[str] = []
    for stage in stages_for(stages, target):
        candidates = [stage.base]
        for keyword, arguments in stage.instructions:
            if keyword in ("COPY", "ADD"):
                candidates.append(_copy_arguments(arguments)[0].get("from", ""))
        bases += [c for c in candidates if c and c not in names and c != "scratch" and c not in bases]
    return bases


def context_sources(stages: Sequence[Stage], target: str | None) -> list[str]:
    """The build-context paths (globs allowed) that a build of ``target`` copies in."""
    sources: list[str] = []
    for stage in stages_for(stages, target):
        for keyword, arguments in stage.instructions:
            if keyword in ("COPY", "ADD"):
                flags, paths = _copy_arguments(arguments)
                if "from" not in flags:
                    sources += [path for path in paths[:-1] if path not in sources]
    return sources


# --- the content hash ----------------------------------------------------------------------------------------------


def inputs_digest(parts: Mapping[str, bytes]) -> str:
    """A short hash of labelled inputs; independent of their order, sensitive to every label and byte."""
    digest = hashlib.sha256()
    for label in sorted(parts):
        digest.update(f"{label}\0{len(parts[label])}\0".encode())
        digest.update(parts[label])
    return digest.hexdigest()[:HASH_LENGTH]


def read_ignore_patterns(path: Path = IGNORE_FILE) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def is_ignored(relative: str, patterns: Sequence[str]) -> bool:
    """Whether a context path (``a/b/c``) is left out by the ignore patterns: ``**/<glob>`` matches any component."""
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif fnmatch(relative, pattern.strip("/")):
            return True
    return False


def tree_inputs(root: Path, paths: Iterable[str], patterns: Sequence[str], label: str) -> dict[str, bytes]:
    """Every file under ``root``/``paths`` (globs allowed) that a build would copy, by ``label/<relative path>``."""
    parts: dict[str, bytes] = {}
    for source in paths:
        matches = sorted(root.glob(source)) if any(c in source for c in "*?[") else [root / source]
        if not matches or not all(path.exists() or path.is_symlink() for path in matches):
            raise ImageBuildError(f"{root}: {source!r} is copied into an image but does not exist")
        for match in matches:
            files = [match] if not match.is_dir() else sorted(p for p in match.rglob("*") if not p.is_dir())
            for file in files:
                relative = file.relative_to(root).as_posix()
                if is_ignored(relative, patterns):
                    continue
                parts[f"{label}/{relative}"] = (
                    f"symlink:{os.readlink(file)}".encode() if file.is_symlink() else file.read_bytes()
                )
    return parts


def bookworm_sources(files: Mapping[str, str], suite: str = SUITE) -> str:
    """The host's enabled apt sources of ``suite`` (and its -updates, -security) as deb822 stanzas.

    ``files`` maps a file name (``*.sources`` is deb822, anything else one-line format) to its text. Other
    repositories the host has (a vendor's, a newer release) are left out of the image.
    """
    suites = {suite, f"{suite}-updates", f"{suite}-security"}
    stanzas: list[dict[str, str]] = []
    for name, text in files.items():
        if name.endswith(".sources"):
            for block in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in block.splitlines():
                    if line.strip() and not line.startswith("#") and not line[0].isspace():
                        key, _, value = line.partition(":")
                        fields[key.strip()] = value.strip()
                if fields and fields.get("Enabled", "yes").lower() != "no":
                    stanzas.append(fields)
        else:
            for line in text.splitlines():
                match = re.match(r"\s*deb\s+(?:\[([^]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)", line)
                if match:
                    options = dict(option.partition("=")[::2] for option in (match[1] or "").split())
                    stanza = {"Types": "deb", "URIs": match[2], "Suites": match[3], "Components": match[4]}
                    if "signed-by" in options:
                        stanza["Signed-By"] = options["signed-by"]
                    stanzas.append(stanza)
    kept: list[str] = []
    for fields in stanzas:
        wanted = [s for s in fields.get("Suites", "").split() if s in suites]
        if "deb" in fields.get("Types", "").split() and wanted:
            fields = {**fields, "Types": "deb", "Suites": " ".join(wanted)}
            kept.append("".join(f"{key}: {value}\n" for key, value in fields.items()))
    return "\n".join(kept)


def host_apt_sources() -> str:
    files: dict[str, str] = {}
    main_list = Path("/etc/apt/sources.list")
    if main_list.is_file():
        files[main_list.name] = main_list.read_text()
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*")):
        if path.suffix in (".list", ".sources") and path.is_file():
            files[path.name] = path.read_text()
    sources = bookworm_sources(files)
    if not sources:
        raise ImageBuildError(
            f"the host's apt sources (/etc/apt/sources.list*) have no Debian {SUITE} entry; the base images are "
            f"bootstrapped from them"
        )
    return sources


# --- base images ---------------------------------------------------------------------------------------------------


def base_files(recipe: Bootstrap) -> list[tuple[str, str]]:
    return [*BASE_FILES, *recipe.files]


def mmdebstrap_command(recipe: Bootstrap, *, work: Path, debs: Path, rootfs: Path, sources: Path) -> list[str]:
    """The mmdebstrap command of a base image; the caller writes ``base_files`` to ``work``/file-<n> first."""
    uploads = [
        f"--customize-hook=upload {work / f'file-{number}'} {path}"
        for number, (path, _) in enumerate(base_files(recipe))
    ]
    return [
        "mmdebstrap",
        "--variant=minbase",
        "--format=tar",
        "--mode=root",
        *(f"--dpkgopt={option}" for option in SLIM_DPKG_OPTIONS),
        *(f"--aptopt={option}" for option in APT_OPTIONS),
        *([f"--include={','.join(recipe.packages)}"] if recipe.packages else []),
        *([f"--hook-dir={MERGED_USR_HOOKS}"] if MERGED_USR_HOOKS.is_dir() else []),
        # The package cache (mmdebstrap's documented recipe): what an earlier bootstrap downloaded is reused.
        "--skip=essential/unlink",
        '--setup-hook=mkdir -p "$1/var/cache/apt/archives"',
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
        *(f"--customize-hook={command}" for command in recipe.customize),
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        *uploads,
        # mmdebstrap's cleanup removes only the packages it downloaded itself, not those the cache brought in; and
        # it asks apt where its caches are, which docker-clean has just made apt forget.
        '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin',
        SUITE,
        str(rootfs),
        str(sources),
    ]


# --- the cache -----------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """The project's cache directory, by the rule of hack/cluster/build.py (loaded from there, never copied)."""
    path = REPO_ROOT / "hack" / "cluster" / "build.py"
    name = "_test_coordinator_cluster_build"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImageBuildError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve the module's annotations through sys.modules
        spec.loader.exec_module(module)
    return Path(module.cache_root())


def archive_name(image: Image, digest: str) -> str:
    repository, tag = split_reference(image.ref)
    return f"{repository.replace('/', '_')}-{tag}-{digest}.tar"


def stale_archives(directory: Path, image: Image, digest: str) -> list[Path]:
    """Archives of ``image`` built from other inputs (earlier versions), which the new one replaces."""
    repository, tag = split_reference(image.ref)
    pattern = re.compile(re.escape(f"{repository.replace('/', '_')}-{tag}-") + rf"[0-9a-f]{{{HASH_LENGTH}}}\.tar")
    current = archive_name(image, digest)
    return sorted(p for p in directory.glob("*.tar") if pattern.fullmatch(p.name) and p.name != current)


# --- Docker archives -----------------------------------------------------------------------------------------------


def go_arch(machine: str | None = None) -> str:
    machine = (machine or platform.machine()).lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_docker_archive(out: Path, ref: str, layers: Sequence[Path], config: Mapping[str, object], how: str) -> None:
    """Write an image of uncompressed layer tarballs as a Docker archive (what ``docker save`` writes).

    ``RepoTags`` holds ``ref`` as given (a short name); whoever loads the archive qualifies it by its own rules.
    """
    diff_ids = [_sha256_file(layer) for layer in layers]
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    image_config = {
        "architecture": go_arch(),
        "os": "linux",
        "created": created,
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
        "history": [{"created": created, "created_by": how} for _ in layers],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{d}/layer.tar" for d in diff_ids]}]

    def add(tar: tarfile.TarFile, name: str, size: int, data: io.BufferedIOBase | io.BytesIO) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, int(time.time())
        tar.addfile(info, data)

    with tarfile.open(out, "w") as tar:
        add(tar, config_name, len(config_bytes), io.BytesIO(config_bytes))
        for layer, digest in zip(layers, diff_ids, strict=True):
            with layer.open("rb") as data:
                add(tar, f"{digest}/layer.tar", layer.stat().st_size, data)
        manifest_bytes = json.dumps(manifest).encode()
        add(tar, "manifest.json", len(manifest_bytes), io.BytesIO(manifest_bytes))


def archive_refs(archive: Path) -> list[str]:
    """The names a Docker archive carries (its ``RepoTags``)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise ImageBuildError(f"{archive}: no manifest.json; not a Docker archive")
        manifest = json.load(member)
    return [ref for entry in manifest for ref in entry.get("RepoTags") or []]


def image_paths(archive: Path) -> set[str]:
    """Every path in a Docker archive's image, without a leading slash (whiteouts are not subtracted)."""
    paths: set[str] = set()
    with tarfile.open(archive) as outer:
        member = outer.extractfile("manifest.json")
        if member is None:
            raise ImageBuildError(f"{archive}: no manifest.json; not a Docker archive")
        for layer_name in json.load(member)[0]["Layers"]:
            layer = outer.extractfile(layer_name)
            if layer is None:
                raise ImageBuildError(f"{archive}: no layer {layer_name}")
            with tarfile.open(fileobj=layer, mode="r:") as tar:
                paths |= {name.removeprefix("./").strip("/") for name in tar.getnames()}
    paths.discard("")
    return paths


def single_file_layer(out: Path, data: bytes, path: str, mode: int = 0o755) -> None:
    """A layer tarball holding one root-owned file."""
    info = tarfile.TarInfo(path.lstrip("/"))
    info.size, info.mode, info.mtime = len(data), mode, 0
    with tarfile.open(out, "w") as tar:
        tar.addfile(info, io.BytesIO(data))


# --- pip settings for builds ---------------------------------------------------------------------------------------


def pip_settings(environ: Mapping[str, str], config_files: Sequence[Path]) -> configparser.ConfigParser:
    """The host's pip configuration as one config: its files in pip's order, then ``PIP_*`` variables on top.

    pip reads ``PIP_FOO_BAR`` as the option ``foo-bar``; in a file that is ``foo-bar = ...`` under ``[global]``.
    """
    settings = configparser.ConfigParser(interpolation=None)
    settings.read([str(path) for path in config_files if path.is_file()])
    if not settings.has_section("global"):
        settings.add_section("global")
    for key, value in sorted(environ.items()):
        if key.startswith("PIP_") and key != "PIP_CONFIG_FILE":
            settings.set("global", key[4:].lower().replace("_", "-"), value)
    return settings


def host_paths_named(settings: configparser.ConfigParser) -> list[Path]:
    """The absolute host paths that pip settings name (cert, client-cert, find-links, ...) and that exist."""
    paths: list[Path] = []
    for section in settings.sections():
        for _, value in settings.items(section):
            for word in value.split():
                path = Path(word)
                if path.is_absolute() and path.exists() and path not in paths:
                    paths.append(path)
    return paths


def host_pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    home = Path(environ.get("HOME", str(Path.home())))
    xdg = Path(environ.get("XDG_CONFIG_HOME", str(home / ".config")))
    files = [Path("/etc/xdg/pip/pip.conf"), Path("/etc/pip.conf"), home / ".pip" / "pip.conf", xdg / "pip" / "pip.conf"]
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return files


# --- running the tools ---------------------------------------------------------------------------------------------


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ImageBuildError(f"{name} is not installed (Debian: apt-get install {package}); the images need it")
    return found


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_logged(
    label: str,
    cmd: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    capture: bool = False,
) -> str:
    """Run a command with its output appended to ``log`` and a heartbeat on stdout.

    With ``capture``, its standard output is kept apart and its last line returned (an ID a command prints).
    """
    started = time.monotonic()
    with log.open("a") as out, tempfile.TemporaryFile(mode="w+") as captured:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env or os.environ),
            stdout=captured if capture else out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(HEARTBEAT_SECONDS):
                print(f"  ... {label}: still working ({time.monotonic() - started:.0f}s)", flush=True)

        threading.Thread(target=heartbeat, daemon=True).start()
        try:
            code = proc.wait()
        finally:
            done.set()
        captured.seek(0)
        stdout = captured.read()
        out.write(stdout)
    if code != 0:
        raise ImageBuildError(f"{label}: {Path(cmd[0]).name} failed (exit {code}); last lines of {log}:\n{_tail(log)}")
    lines = stdout.strip().splitlines()
    return lines[-1] if lines else ""


def scratch_parent(minimum_free: int = 4 << 30) -> Path | None:
    """A tmpfs for a bootstrap's throwaway root where one is large enough: dpkg is several times faster there."""
    shm = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp, never a fixed file name
    try:
        if os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= minimum_free:
            return shm
    except OSError:
        pass
    return None


# --- building ------------------------------------------------------------------------------------------------------


class ImageBuilder:
    """Builds images into one cache, each once; one at a time per cache (a file lock)."""

    def __init__(
        self, cache: Path, images: Mapping[str, Image], repo: Path = REPO_ROOT, apt_sources: str | None = None
    ) -> None:
        self.cache = cache
        self.images = images
        self.repo = repo
        self.archives = cache / "images"
        self.logs = cache / "logs"
        self.tmp = cache / "tmp"
        self._digests: dict[str, str] = {}
        self._ensured: dict[str, Path] = {}
        self._loaded: set[str] = set()
        self._paths: dict[str, set[str]] = {}
        self._sources = apt_sources  # None: the host's, read when first needed

    # inputs and hashes

    def apt_sources(self) -> str:
        if self._sources is None:
            self._sources = host_apt_sources()
        return self._sources

    def stages(self, recipe: Containerfile) -> list[Stage]:
        return parse_stages((self.repo / recipe.file).read_text())

    def dependencies(self, key: str) -> list[str]:
        """Keys of the images that ``key`` is built from (the known bases of its Dockerfile stages)."""
        recipe = self.images[key].recipe
        if not isinstance(recipe, Containerfile):
            return []
        by_ref = {image.ref: k for k, image in self.images.items()}
        return [by_ref[ref] for ref in external_bases(self.stages(recipe), recipe.target) if ref in by_ref]

    def inputs(self, key: str) -> dict[str, bytes]:
        image = self.images[key]
        recipe = image.recipe
        described = {"version": RECIPE_VERSION, "ref": image.ref, "kind": type(recipe).__name__}
        parts = {"recipe": json.dumps({**described, **dataclasses.asdict(recipe)}, sort_keys=True).encode()}
        if isinstance(recipe, Bootstrap):
            places = {
                "work": Path("/work"),
                "debs": Path("/debs"),
                "rootfs": Path("/rootfs"),
                "sources": Path("/sources"),
            }
            parts["mmdebstrap"] = "\0".join(mmdebstrap_command(recipe, **places)).encode()
            parts["files"] = json.dumps(base_files(recipe)).encode()
            parts["sources"] = self.apt_sources().encode()
        elif isinstance(recipe, StaticGo):
            parts |= tree_inputs(self.repo, [recipe.source], [], "source")
        else:
            patterns = read_ignore_patterns()
            parts["containerfile"] = (self.repo / recipe.file).read_bytes()
            parts["ignore"] = "\n".join(patterns).encode()
            sources = context_sources(self.stages(recipe), recipe.target)
            parts |= tree_inputs(self.repo / recipe.context, sources, patterns, "context")
        for dependency in self.dependencies(key):
            parts[f"base/{dependency}"] = self.digest(dependency).encode()
        return parts

    def digest(self, key: str) -> str:
        if key not in self._digests:
            self._digests[key] = inputs_digest(self.inputs(key))
        return self._digests[key]

    def archive(self, key: str) -> Path:
        return self.archives / archive_name(self.images[key], self.digest(key))

    # the build

    @contextmanager
    def locked(self) -> Iterator[None]:
        for directory in (self.archives, self.logs, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        with (self.archives / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure(self, key: str) -> Path:
        """The archive of ``key``, built (with the images it is made from) unless it exists. Call under locked()."""
        if key in self._ensured:
            return self._ensured[key]
        image = self.images[key]
        archive = self.archive(key)
        if archive.is_file():
            print(f"images: {image.ref}: cached ({archive.name})", flush=True)
        else:
            for dependency in self.dependencies(key):
                self.ensure(dependency)
            log = self.logs / f"images-{key}.log"
            log.write_text(f"# {image.ref} -> {archive}\n")
            print(f"images: {image.ref}: building ({type(image.recipe).__name__}; log {log})", flush=True)
            started = time.monotonic()
            work = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=self.tmp))
            try:
                staged = work / "image.tar"
                self._build(image, staged, work, log)
                archive_refs(staged)  # a readable Docker archive, or fail here rather than at import
                staged.replace(archive)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            for stale in stale_archives(self.archives, image, self.digest(key)):
                stale.unlink()
            size = archive.stat().st_size / 1e6
            print(f"images: {image.ref}: built in {time.monotonic() - started:.0f}s ({size:.0f} MB)", flush=True)
        self._ensured[key] = archive
        return archive

    def _build(self, image: Image, out: Path, work: Path, log: Path) -> None:
        if isinstance(image.recipe, Bootstrap):
            self._bootstrap(image, image.recipe, out, work, log)
        elif isinstance(image.recipe, StaticGo):
            self._static_go(image, image.recipe, out, work, log)
        else:
            self._containerfile(image, image.recipe, out, work, log)

    def _bootstrap(self, image: Image, recipe: Bootstrap, out: Path, work: Path, log: Path) -> None:
        sources = work / f"{SUITE}.sources"
        sources.write_text(self.apt_sources())
        debs = self.cache / "debs" / SUITE  # downloaded packages, kept for the next bootstrap
        debs.mkdir(parents=True, exist_ok=True)
        rootfs = work / "rootfs.tar"
        for number, (_, text) in enumerate(base_files(recipe)):
            (work / f"file-{number}").write_text(text)
        cmd = mmdebstrap_command(recipe, work=work, debs=debs, rootfs=rootfs, sources=sources)
        cmd[0] = _tool("mmdebstrap", "mmdebstrap")
        scratch = Path(tempfile.mkdtemp(prefix="mmdebstrap-", dir=scratch_parent() or work))
        try:
            run_logged(image.ref, cmd, log, env={**os.environ, "TMPDIR": str(scratch)})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        packages = ", ".join(recipe.packages) or "nothing else"
        config = {"Env": list(recipe.env), "Cmd": list(recipe.cmd)}
        how = f"mmdebstrap --variant=minbase {SUITE} (slim; with {packages}) by hack/images/images.py"
        write_docker_archive(out, image.ref, [rootfs], config, how)

    def _static_go(self, image: Image, recipe: StaticGo, out: Path, work: Path, log: Path) -> None:
        binary = work / Path(recipe.binary).name
        env = {
            **os.environ,
            "CGO_ENABLED": "0",
            "GOOS": "linux",
            "GOARCH": go_arch(),
            "GOFLAGS": "-mod=mod",
            "GOTOOLCHAIN": "local",
        }
        go = _tool("go", "golang-go (or Go from its own distribution)")
        cmd = [go, "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", str(binary), "."]
        run_logged(image.ref, cmd, log, env=env, cwd=self.repo / recipe.source)
        layer = work / "layer.tar"
        single_file_layer(layer, binary.read_bytes(), recipe.binary)
        config = {"Entrypoint": [recipe.binary], "Env": [PATH_ENV], "User": recipe.user}
        write_docker_archive(out, image.ref, [layer], config, f"go build {recipe.source} (static) by hack/images")

    def buildah(self) -> list[str]:
        return [
            _tool("buildah", "buildah"),
            "--root",
            str(self.cache / "buildah" / "root"),
            "--runroot",
            str(self.cache / "buildah" / "run"),
            "--storage-driver",
            "vfs",
        ]

    def buildah_env(self) -> dict[str, str]:
        return {**os.environ, "TMPDIR": str(self.tmp), "BUILDAH_ISOLATION": "chroot"}

    def paths_in(self, key: str) -> set[str]:
        """The paths in image ``key`` (no leading slash), from its archive."""
        if key not in self._paths:
            self._paths[key] = image_paths(self.ensure(key))
        return self._paths[key]

    def _load(self, key: str, log: Path) -> None:
        """Put a base image's archive into buildah's storage under its short name (what a FROM line says)."""
        if key in self._loaded:
            return
        image = self.images[key]
        archive = self.ensure(key)
        env = self.buildah_env()
        pull = [*self.buildah(), "pull", "--quiet", f"docker-archive:{archive}"]
        image_id = run_logged(image.ref, pull, log, env=env, capture=True)
        run_logged(image.ref, [*self.buildah(), "tag", image_id, image.ref], log, env=env)
        self._loaded.add(key)

    def _containerfile(self, image: Image, recipe: Containerfile, out: Path, work: Path, log: Path) -> None:
        for dependency in self.dependencies(image.key):
            self._load(dependency, log)
        settings = pip_settings(os.environ, host_pip_config_files(os.environ))
        pip_conf = work / "pip.conf"
        with pip_conf.open("w") as file:
            settings.write(file)
        wanted = {Path("/etc/pip.conf"): pip_conf, HOST_CA_BUNDLE: HOST_CA_BUNDLE}
        wanted |= {path: path for path in host_paths_named(settings)}
        # buildah creates a missing mount point in the container and leaves it, empty, in the layer: bind only
        # over paths that every base of this build has (RUN steps that need more are not this script's to guess).
        present = set.intersection(*(self.paths_in(key) for key in self.dependencies(image.key))) or set()
        mounts: list[str] = []
        for target, source in wanted.items():
            if source.exists() and target.as_posix().lstrip("/") in present:
                mounts.append(f"{source}:{target}:ro")
            elif source.exists():
                with log.open("a") as note:
                    note.write(f"# not bound into the build (no {target} in its base images): {source}\n")
        iidfile = work / "iid"
        env = self.buildah_env()
        cmd = [
            *self.buildah(),
            "build",
            "--isolation=chroot",
            "--network=host",
            "--pull=never",
            "--format=docker",
            f"--ignorefile={IGNORE_FILE}",
            f"--iidfile={iidfile}",
            f"--file={self.repo / recipe.file}",
            *([f"--target={recipe.target}"] if recipe.target else []),
            *(f"--volume={mount}" for mount in mounts),
            str(self.repo / recipe.context),
        ]
        try:
            run_logged(image.ref, cmd, log, env=env)
        finally:
            self._remove_containers()
        image_id = iidfile.read_text().strip()
        try:
            push = [*self.buildah(), "push", "--quiet", image_id, f"docker-archive:{out}:{image.ref}"]
            run_logged(image.ref, push, log, env=env)
        finally:
            # The archive is what is kept; the storage keeps only the base images, so it does not grow per build.
            subprocess.run([*self.buildah(), "rmi", "--force", image_id], env=env, capture_output=True, check=False)
            subprocess.run([*self.buildah(), "rmi", "--prune"], env=env, capture_output=True, check=False)

    def _remove_containers(self) -> None:
        """Drop working containers a failed build left behind (the storage is this cache's alone, and locked)."""
        cmd = [*self.buildah(), "rm", "--all"]
        subprocess.run(cmd, env=self.buildah_env(), capture_output=True, check=False)


def ensure_images(names: Iterable[str] | None = None, cache: Path | None = None) -> dict[str, Path]:
    """Build what is missing of the named images (keys or references; None: pause, tools, operator, web).

    Returns key -> Docker archive. Blocks while another process builds into the same cache.
    """
    images = catalog()
    keys = select_images(names, images)
    builder = ImageBuilder(cache or cache_root(), images)
    with builder.locked():
        return {key: builder.ensure(key) for key in keys}


def parse_image_list(text: str) -> dict[str, dict[str, str]]:
    """``ctr images list`` output -> name -> labels. Its SIZE column has a space ("1.6 MiB"); LABELS is last."""
    listed: dict[str, dict[str, str]] = {}
    for line in text.splitlines()[1:]:
        words = line.split()
        if len(words) >= 2:
            labels = words[-1] if words[-1] != "-" else ""
            listed[words[0]] = dict(label.partition("=")[::2] for label in labels.split(",") if label)
    return listed


def names_for(refs: Iterable[str], listed: Iterable[str]) -> dict[str, str | None]:
    """For each archive reference, the containerd image name that a pod asking for it gets (None: none)."""
    names = list(listed)
    return {ref: next((name for name in names if is_pullable_as(name, ref)), None) for ref in refs}


def import_images(
    socket: Path,
    archives: Iterable[Path] | Mapping[str, Path],
    *,
    namespace: str = "k8s.io",
    snapshotter: str | None = None,
    log: Path | None = None,
) -> None:
    """Import archives into a containerd (``ctr images import``) and check that pods will find them by name.

    An archive whose images containerd already has from that very archive (the ``ARCHIVE_LABEL`` image label) is
    skipped, so importing into a containerd that kept its images from an earlier boot costs nothing.
    """
    paths = list(archives.values()) if isinstance(archives, Mapping) else list(archives)
    ctr = [_tool("ctr", "containerd"), "--address", str(socket), "--namespace", namespace]
    if log is None:
        logs = cache_root() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / "images-import.log"

    def listed() -> dict[str, dict[str, str]]:
        result = subprocess.run([*ctr, "images", "list"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImageBuildError(f"ctr images list at {socket} failed: {result.stderr.strip()}")
        return parse_image_list(result.stdout)

    for path in paths:
        refs = archive_refs(path)
        before = listed()
        found = names_for(refs, before)
        if all(name and before[name].get(ARCHIVE_LABEL) == path.name for name in found.values()):
            print(f"images: {', '.join(map(familiar_name, refs))}: already imported", flush=True)
            continue
        started = time.monotonic()
        cmd = [*ctr, "images", "import", "--all-platforms", *([f"--snapshotter={snapshotter}"] if snapshotter else [])]
        run_logged(f"import {path.name}", [*cmd, str(path)], log)
        found = names_for(refs, listed())
        missing = [ref for ref, name in found.items() if name is None]
        if missing:
            raise ImageBuildError(
                f"containerd at {socket} imported {path.name} but has no image that a pod asking for {missing} gets; "
                f"see {log}"
            )
        for name in found.values():
            run_logged(f"label {name}", [*ctr, "images", "label", str(name), f"{ARCHIVE_LABEL}={path.name}"], log)
        print(f"images: imported {path.name} in {time.monotonic() - started:.0f}s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 hack/images", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"keys or references (default: {' '.join(DEFAULT_IMAGES)})")
    parser.add_argument("--import-to", type=Path, metavar="SOCKET", help="a containerd socket to import into (k8s.io)")
    parser.add_argument("--snapshotter", help="the snapshotter to unpack into on import (containerd's default)")
    parser.add_argument("--list", action="store_true", help="list the images and their archives, build nothing")
    args = parser.parse_args(argv)
    try:
        if args.list:
            images = catalog()
            builder = ImageBuilder(cache_root(), images)
            for key, image in images.items():
                archive = builder.archive(key)
                state = "built" if archive.is_file() else "missing"
                print(f"{key:9} {image.ref:32} {state:8} {archive}")
            return 0
        started = time.monotonic()
        archives = ensure_images(args.names or None)
        print(f"images: {len(archives)} ready in {time.monotonic() - started:.0f}s", flush=True)
        if args.import_to:
            import_images(args.import_to, archives, snapshotter=args.snapshotter)
        for key, path in archives.items():
            print(f"{key}\t{path}")
    except ImageBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
