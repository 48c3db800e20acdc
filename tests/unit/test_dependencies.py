"""The operator's runtime dependencies: what the package imports is what pyproject.toml installs with it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "coordinator"


def _imported_top_level_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_the_operator_never_imports_the_sync_kubernetes_client() -> None:
    """It talks to the API server through adapters/kube.py (and kubernetes_asyncio for exec-plugin kubeconfigs);
    the sync client is a dev dependency for the test tiers only, so an import of it would fail in the image."""
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in PACKAGE.rglob("*.py")
        if "kubernetes" in _imported_top_level_modules(path)
    )
    assert importers == []


def test_the_sync_kubernetes_client_is_a_dev_dependency_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {
            requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].strip() for requirement in requirements
        }

    assert "kubernetes" not in names(project["dependencies"])
    assert "kubernetes" in names(project["optional-dependencies"]["dev"])
    assert "kubernetes_asyncio" in names(project["dependencies"])
