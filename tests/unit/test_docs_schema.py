"""The docs name only fields that exist: every `spec.`/`status.` path in README.md and examples/README.md is in a
CRD schema, and every example is listed in examples/README.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = [REPO_ROOT / "README.md", REPO_ROOT / "examples" / "README.md"]
CRDS = sorted((REPO_ROOT / "crds").glob("*.yaml"))
# A field path in backticks: `status.steps[0].recoveryTimeSeconds`, `spec.target.namespaces`.
PATH = re.compile(r"`((?:spec|status)(?:\.[A-Za-z][A-Za-z0-9]*(?:\[[0-9*]*\])?)+)")


def _schemas() -> list[dict[str, Any]]:
    out = []
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        out.append(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return out


def _resolves(schema: dict[str, Any], path: str) -> bool:
    node: dict[str, Any] | None = schema
    for part in re.sub(r"\[[0-9*]*\]", "", path).split("."):
        if node is None:
            return False
        if node.get("type") == "array":
            node = node.get("items")
        properties = (node or {}).get("properties") or {}
        if part in properties:
            node = properties[part]
        elif isinstance((node or {}).get("additionalProperties"), dict):
            node = node["additionalProperties"]  # type: ignore[index]
        else:
            return False
    return True


# Fields of Kubernetes' own kinds the docs mention on purpose (what a fault changes, what a probe reads).
KUBERNETES_FIELDS = {"spec.unschedulable": "Node", "status.readyReplicas": "Deployment"}

NAMED = sorted({(doc.name, m.group(1)) for doc in DOCS for m in PATH.finditer(doc.read_text())})


def test_the_docs_name_fields() -> None:
    assert len(NAMED) >= 10, "the pattern still finds the field paths the docs name"


@pytest.mark.parametrize(("doc", "path"), NAMED, ids=[f"{d}:{p}" for d, p in NAMED])
def test_each_named_field_exists(doc: str, path: str) -> None:
    if path in KUBERNETES_FIELDS:
        return
    assert any(_resolves(schema, path) for schema in _schemas()), f"{doc} names {path}, which no CRD has"


def test_every_example_is_listed() -> None:
    listing = (REPO_ROOT / "examples" / "README.md").read_text()
    for example in sorted((REPO_ROOT / "examples").glob("*.yaml")):
        assert f"({example.name})" in listing, f"examples/README.md does not list {example.name}"
