"""The package layers (docs/architecture.md) hold: ``lint-imports`` keeps the contracts of pyproject.toml on the
real tree, and breaks them, by name, on a copy of the tree with one forbidden import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = {
    contract["id"]: contract["name"]
    for contract in tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
}
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``coordinator`` package under ``root``/operator, with ``root``'s pyproject.toml."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root / "operator")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    shutil.copytree(
        REPO_ROOT / "operator" / "coordinator",
        tmp_path / "operator" / "coordinator",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS.values():
        assert f"{name} KEPT" in result.stdout, result.stdout
    assert set(CONTRACTS) == {"layers", "pure"}


@pytest.mark.parametrize(
    ("module", "forbidden", "contract", "reported"),
    [
        # The import that had crept in (issue 19): the verdict reading probe samples from probes/.
        (
            "domain/verdict.py",
            "from coordinator.probes import base",
            "layers",
            "coordinator.domain.verdict -> coordinator.probes.base",
        ),
        # The engine calling the metrics directly instead of through its observers.
        (
            "engine/probing.py",
            "from coordinator.observability import metrics",
            "layers",
            "coordinator.engine.probing -> coordinator.observability.metrics",
        ),
        # Two packages of one layer are independent: history may not use the probes.
        (
            "history/records.py",
            "from coordinator.probes import http",
            "layers",
            "coordinator.history.records -> coordinator.probes.http",
        ),
        # The domain does no I/O.
        ("domain/selection.py", "import sqlalchemy", "pure", "coordinator.domain.selection -> sqlalchemy"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, forbidden: str, contract: str, reported: str
) -> None:
    root = copy_of_the_tree(tmp_path)
    path = root / "operator" / "coordinator" / module
    path.write_text(path.read_text() + f"\n{forbidden}\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert f"{CONTRACTS[contract]} BROKEN" in result.stdout, result.stdout
    assert reported in result.stdout, result.stdout


def test_a_package_without_a_layer_breaks_the_layers(tmp_path: Path) -> None:
    """The layers contract is exhaustive: a new package fails it until it is given its place."""
    root = copy_of_the_tree(tmp_path)
    (root / "operator" / "coordinator" / "newcomer").mkdir()
    (root / "operator" / "coordinator" / "newcomer" / "__init__.py").write_text('"""A new package."""\n')
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert f"{CONTRACTS['layers']} BROKEN" in result.stdout, result.stdout
    assert "coordinator.newcomer" in result.stdout, result.stdout
