"""hack/images/images.py without building anything: the cache hash, Dockerfile reading, names, archives, settings."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

import pytest

from support.hackmodules import hack_module

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGES_DIR = REPO_ROOT / "hack" / "images"
# The same rule as test_dockerfile.py: image files name short references only, never a registry host.
REGISTRY_HOSTS = re.compile(r"\b(docker\.io|ghcr\.io|quay\.io|gcr\.io|[a-z0-9-]+\.pkg\.dev|registry\.[a-z.]+|ecr\.)")


images = hack_module("hack_images", "images/images.py")
SOURCES = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"


def _fake_repo(root: Path) -> Path:
    """The files the image recipes read, with the real Dockerfile and web/pause sources."""
    (root / "operator" / "coordinator" / "__pycache__").mkdir(parents=True)
    (root / "operator" / "coordinator" / "__init__.py").write_text("VALUE = 1\n")
    (root / "operator" / "coordinator" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"\0")
    (root / "operator" / "test_coordinator.egg-info").mkdir()
    (root / "operator" / "test_coordinator.egg-info" / "PKG-INFO").write_text("Name: test-coordinator\n")
    (root / "pyproject.toml").write_text('[project]\nname = "test-coordinator"\nversion = "0.1.0"\n')
    (root / "README.md").write_text("# Test Coordinator\n")
    (root / "Dockerfile").write_text((REPO_ROOT / "Dockerfile").read_text())
    for relative in (
        "hack/images/web/Containerfile",
        "hack/images/web/server.py",
        "hack/images/pause/main.go",
        "hack/images/postgres/Containerfile",
        "hack/images/postgres/entrypoint.sh",
        "hack/agent/clock-skew/clock-skew.c",
        "operator/coordinator/faults/inpod/programs/dns_fault.py",
    ):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text((REPO_ROOT / relative).read_text())
    (root / "hack" / "images" / "pause" / "go.mod").write_text("module local/pause\n\ngo 1.22\n")
    return root


def _digests(repo: Path, sources: str = SOURCES, catalog: dict[str, object] | None = None) -> dict[str, str]:
    builder = images.ImageBuilder(repo / ".cache", catalog or images.catalog("0.1.0"), repo=repo, apt_sources=sources)
    return {key: builder.digest(key) for key in builder.images}


# --- the cache hash ------------------------------------------------------------------------------------------------


def test_inputs_digest_ignores_order_but_not_labels_or_bytes() -> None:
    base = images.inputs_digest({"a": b"1", "b": b"2"})
    assert base == images.inputs_digest({"b": b"2", "a": b"1"})
    assert base != images.inputs_digest({"a": b"1", "b": b"3"})
    assert base != images.inputs_digest({"a": b"1", "c": b"2"})
    # Length-prefixed: moving bytes between two inputs is a change.
    assert images.inputs_digest({"a": b"12", "b": b""}) != images.inputs_digest({"a": b"1", "b": b"2"})
    assert len(base) == images.HASH_LENGTH


def test_an_operator_source_change_rebuilds_the_operator_image_only(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    before = _digests(repo)
    (repo / "operator" / "coordinator" / "__init__.py").write_text("VALUE = 2\n")
    after = _digests(repo)
    assert before["operator"] != after["operator"]
    assert {key for key in before if before[key] != after[key]} == {"operator"}


@pytest.mark.parametrize(
    "relative",
    ["operator/coordinator/__pycache__/__init__.cpython-311.pyc", "operator/test_coordinator.egg-info/PKG-INFO"],
)
def test_files_the_ignore_file_leaves_out_change_nothing(tmp_path: Path, relative: str) -> None:
    repo = _fake_repo(tmp_path)
    before = _digests(repo)
    (repo / relative).write_bytes(b"changed")
    assert _digests(repo) == before


@pytest.mark.parametrize(
    ("relative", "changed"),
    [
        ("README.md", {"operator"}),  # the Dockerfile copies it into the build stage
        ("pyproject.toml", {"operator"}),
        ("Dockerfile", {"operator", "tools"}),
        ("hack/images/web/server.py", {"web"}),
        ("hack/images/web/Containerfile", {"web"}),
        ("hack/images/pause/main.go", {"pause"}),
        ("hack/images/postgres/entrypoint.sh", {"postgres"}),
        ("hack/agent/clock-skew/clock-skew.c", {"tools"}),  # the clock-skew-build stage compiles it for tools
        # The tools stage copies the agent's programs; the operator's build stage copies all of operator/.
        ("operator/coordinator/faults/inpod/programs/dns_fault.py", {"operator", "tools"}),
    ],
)
def test_each_input_rebuilds_the_images_made_from_it(tmp_path: Path, relative: str, changed: set[str]) -> None:
    repo = _fake_repo(tmp_path)
    before = _digests(repo)
    path = repo / relative
    path.write_text(path.read_text() + "\n# changed\n")
    after = _digests(repo)
    assert {key for key in before if before[key] != after[key]} == changed


def test_a_base_image_change_rebuilds_what_is_built_from_it(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    before = _digests(repo)
    catalog = images.catalog("0.1.0")
    python = catalog["python"]
    recipe = python.recipe
    catalog["python"] = images.Image("python", python.ref, type(recipe)(**{**vars(recipe), "packages": ("python3",)}))
    after = _digests(repo, catalog=catalog)
    assert {key for key in before if before[key] != after[key]} == {"python", "operator", "web"}


def test_other_apt_sources_rebuild_every_debian_based_image(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    before = _digests(repo)
    after = _digests(repo, sources=SOURCES.replace("mirror.example", "other.example"))
    assert {key for key in before if before[key] != after[key]} == {
        "debian",
        "python",
        "tools",
        "operator",
        "web",
        "postgres",
    }


def test_a_missing_copy_source_is_an_error_before_any_build(tmp_path: Path) -> None:
    repo = _fake_repo(tmp_path)
    (repo / "README.md").unlink()
    with pytest.raises(images.ImageBuildError, match=r"README\.md"):
        _digests(repo)


def test_archive_names_and_stale_archives_do_not_mix_images(tmp_path: Path) -> None:
    catalog = images.catalog("0.1.0")
    operator, tools = catalog["operator"], catalog["tools"]
    assert images.archive_name(operator, "0" * 16) == f"test-coordinator-0.1.0-{'0' * 16}.tar"
    for name in (
        images.archive_name(operator, "1" * 16),
        images.archive_name(operator, "2" * 16),
        images.archive_name(tools, "1" * 16),
    ):
        (tmp_path / name).touch()
    stale = images.stale_archives(tmp_path, operator, "2" * 16)
    assert [path.name for path in stale] == [images.archive_name(operator, "1" * 16)]


# --- Dockerfiles ---------------------------------------------------------------------------------------------------


def test_the_dockerfile_targets_start_from_the_local_base_images() -> None:
    stages = images.parse_stages((REPO_ROOT / "Dockerfile").read_text())
    assert images.external_bases(stages, "tools") == ["debian:bookworm-slim"]
    assert images.external_bases(stages, "runtime") == ["python:3.11.10-slim-bookworm"]
    assert [stage.name for stage in images.stages_for(stages, "runtime")] == ["build", "runtime"]
    assert images.context_sources(stages, "runtime") == ["pyproject.toml", "README.md", "operator"]
    assert [stage.name for stage in images.stages_for(stages, "tools")] == ["clock-skew-build", "tools"]
    assert images.context_sources(stages, "tools") == [
        "hack/agent/clock-skew/clock-skew.c",
        "operator/coordinator/faults/inpod/programs/",
    ]
    refs = {image.ref for image in images.catalog("0.1.0").values()}
    assert set(images.external_bases(stages, None)) <= refs


def test_parse_stages_joins_continuations_and_drops_comments() -> None:
    text = (
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=linux/amd64 base:1 AS first\n"
        "RUN a \\\n"
        "# a comment inside a continuation\n"
        "    && b\n"
        "FROM first\n"
        'COPY ["x y", "/dst/"]\n'
        "COPY --from=other:2 /bin/tool /usr/bin/\n"
        "ADD --chown=1:1 src/*.py /app/\n"
    )
    stages = images.parse_stages(text)
    assert [(stage.base, stage.name) for stage in stages] == [("base:1", "first"), ("first", None)]
    assert stages[0].instructions == (("RUN", "a      && b"),)
    assert images.external_bases(stages, None) == ["base:1", "other:2"]
    assert images.context_sources(stages, None) == ["x y", "src/*.py"]
    with pytest.raises(images.ImageBuildError, match="no stage named"):
        images.stages_for(stages, "missing")


def test_dependencies_come_from_the_containerfiles(tmp_path: Path) -> None:
    builder = images.ImageBuilder(tmp_path, images.catalog("0.1.0"), repo=_fake_repo(tmp_path), apt_sources=SOURCES)
    assert {key: builder.dependencies(key) for key in builder.images} == {
        "debian": [],
        "python": [],
        "pause": [],
        "tools": ["debian"],
        "operator": ["python"],
        "web": ["python"],
        "postgres": ["debian"],
    }


# --- names ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("test-coordinator:0.1.0", ("test-coordinator", "0.1.0")),
        ("web", ("web", "latest")),
        ("mirror.example:5000/team/web", ("mirror.example:5000/team/web", "latest")),
        ("mirror.example:5000/team/web:2", ("mirror.example:5000/team/web", "2")),
    ],
)
def test_split_reference(ref: str, expected: tuple[str, str]) -> None:
    assert images.split_reference(ref) == expected


@pytest.mark.parametrize(
    ("ref", "familiar"),
    [
        ("mirror.example/library/test-coordinator:0.1.0", "test-coordinator:0.1.0"),
        ("mirror.example/team/web:1", "team/web:1"),
        ("localhost/web:1", "web:1"),
        ("team/web:1", "team/web:1"),  # "team" is no host: no dot, no port, not localhost
        ("test-coordinator:0.1.0", "test-coordinator:0.1.0"),
    ],
)
def test_familiar_name(ref: str, familiar: str) -> None:
    assert images.familiar_name(ref) == familiar


@pytest.mark.parametrize(
    ("listed", "pullable"),
    [
        ("mirror.example/library/test-coordinator:0.1.0", True),
        ("test-coordinator:0.1.0", False),  # a bare name: CRI never looks one up
        ("localhost/test-coordinator:0.1.0", False),
        ("mirror.example/library/test-coordinator:0.2.0", False),
        ("mirror.example/library/test-coordinator-web:0.1.0", False),
        ("sha256:" + "a" * 64, False),
    ],
)
def test_is_pullable_as_what_a_pod_spec_asks_for(listed: str, pullable: bool) -> None:
    assert images.is_pullable_as(listed, "test-coordinator:0.1.0") is pullable


def test_select_images_by_key_reference_or_qualified_name() -> None:
    catalog = images.catalog("0.1.0")
    assert images.select_images(None, catalog) == ["pause", "tools", "operator", "web"]
    assert images.select_images(["web", "test-coordinator:0.1.0", "web"], catalog) == ["web", "operator"]
    assert images.select_images(["mirror.example/library/debian:bookworm-slim"], catalog) == ["debian"]
    with pytest.raises(images.ImageBuildError, match="unknown image 'nginx'"):
        images.select_images(["nginx"], catalog)


def test_no_image_file_names_a_registry_host() -> None:
    for path in IMAGES_DIR.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert not REGISTRY_HOSTS.search(path.read_text()), path


# --- archives, apt sources, pip settings ---------------------------------------------------------------------------


def test_a_docker_archive_round_trips(tmp_path: Path) -> None:
    layer = tmp_path / "layer.tar"
    images.single_file_layer(layer, b"#!/bin/true\n", "/pause")
    archive = tmp_path / "image.tar"
    images.write_docker_archive(archive, "test-coordinator-pause:3.10", [layer], {"Entrypoint": ["/pause"]}, "test")
    assert images.archive_refs(archive) == ["test-coordinator-pause:3.10"]
    assert images.image_paths(archive) == {"pause"}
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer.read_bytes()).hexdigest()}"]
    assert config["config"]["Entrypoint"] == ["/pause"]
    assert len(config["history"]) == len(config["rootfs"]["diff_ids"])


def test_bookworm_sources_keep_only_the_debian_release() -> None:
    files = {
        "debian.sources": (
            "Types: deb deb-src\n"
            "# a comment\n"
            "URIs: http://mirror.example/debian\n"
            "Suites: bookworm bookworm-updates trixie\n"
            "Components: main\n"
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            "\n"
            "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n"
            "\n"
            "Types: deb\nURIs: http://mirror.example/off\nSuites: bookworm\nComponents: main\nEnabled: no\n"
        ),
        "vendor.sources": "Types: deb\nURIs: https://vendor.example/apt\nSuites: nodistro\nComponents: main\n",
        "sources.list": (
            "deb [signed-by=/k.gpg] http://mirror.example/extra bookworm main contrib\n"
            "deb https://vendor.example/apt cloud-sdk-bookworm main\n"
            "# deb http://mirror.example/debian bookworm main\n"
        ),
    }
    kept = images.bookworm_sources(files)
    assert "Suites: bookworm bookworm-updates\n" in kept
    assert "Types: deb\n" in kept
    assert "deb-src" not in kept
    assert "Suites: bookworm-security\n" in kept
    assert "URIs: http://mirror.example/extra\nSuites: bookworm\nComponents: main contrib\nSigned-By: /k.gpg\n" in kept
    for left_out in ("vendor.example", "trixie", "/off"):
        assert left_out not in kept
    assert images.bookworm_sources({"vendor.sources": files["vendor.sources"]}) == ""


def test_pip_settings_merge_files_then_environment(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_text("cert\n")
    site = tmp_path / "pip.conf"
    site.write_text(f"[global]\ncert = {bundle}\ntimeout = 10\n")
    environ = {
        "PIP_DEFAULT_TIMEOUT": "180",
        "PIP_FIND_LINKS": f"{tmp_path} /nowhere",
        "PIP_CONFIG_FILE": "/x",
        "HOME": "/",
    }
    settings = images.pip_settings(environ, [site, tmp_path / "missing.conf"])
    assert dict(settings.items("global")) == {
        "cert": str(bundle),
        "timeout": "10",
        "default-timeout": "180",
        "find-links": f"{tmp_path} /nowhere",
    }
    assert images.host_paths_named(settings) == [bundle, tmp_path]


def test_mmdebstrap_keeps_the_package_cache_out_of_the_image() -> None:
    recipe = images.catalog("0.1.0")["python"].recipe
    cmd = images.mmdebstrap_command(
        recipe, work=Path("/w"), debs=Path("/debs"), rootfs=Path("/r.tar"), sources=Path("/s")
    )
    assert cmd[-3:] == ["bookworm", "/r.tar", "/s"]
    assert "--include=ca-certificates,netbase,python3,python3-pip,python3-venv" in cmd
    sync_out = cmd.index("--customize-hook=sync-out /var/cache/apt/archives /debs")
    uploads = [i for i, arg in enumerate(cmd) if arg.startswith("--customize-hook=upload ")]
    removal = next(i for i, arg in enumerate(cmd) if "/var/cache/apt/archives/*.deb" in arg)
    assert len(uploads) == len(images.base_files(recipe)) == 3
    assert sync_out < min(uploads)
    assert max(uploads) < removal


def test_parse_image_list_reads_names_and_labels() -> None:
    digest = "sha256:" + "1" * 64
    text = (
        "REF  TYPE  DIGEST  SIZE  PLATFORMS  LABELS\n"
        f"mirror.example/library/web:0.1.0 application/vnd.docker.distribution.manifest.v2+json {digest} 145.0 MiB "
        "linux/amd64 io.cri-containerd.image=managed,test-coordinator.archive=web-0.1.0-abc.tar\n"
        f"mirror.example/library/other:1 application/vnd.oci.image.index.v1+json {digest} 1.6 MiB "
        "linux/amd64,linux/arm64 -\n"
    )
    listed = images.parse_image_list(text)
    assert listed == {
        "mirror.example/library/web:0.1.0": {
            "io.cri-containerd.image": "managed",
            images.ARCHIVE_LABEL: "web-0.1.0-abc.tar",
        },
        "mirror.example/library/other:1": {},
    }
    assert images.names_for(["web:0.1.0", "web:0.2.0"], listed) == {
        "web:0.1.0": "mirror.example/library/web:0.1.0",
        "web:0.2.0": None,
    }
