"""YAML documents with the line of every field, so a finding can point at ``file:line``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from coordinator.domain.fieldpaths import format_path as format_path

FieldPath = tuple[str | int, ...]
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Finding:
    """One problem: where (file, line, field) and what."""

    file: str
    line: int
    message: str
    field: str = ""

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


@dataclass
class Document:
    """One YAML document of a file: its data and the line (1-based) of each field path in it."""

    file: str
    index: int
    data: Any
    line: int
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int:
        """The line of ``path``, or of its nearest ancestor present in the file (for a missing field)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.line

    def finding(self, path: Sequence[str | int], message: str) -> Finding:
        return Finding(self.file, self.line_of(path), message, format_path(path))

    @property
    def kind(self) -> str:
        return str(self.data.get("kind") or "") if isinstance(self.data, dict) else ""

    @property
    def ref(self) -> str:
        meta = self.data.get("metadata") if isinstance(self.data, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        return f"{meta.get('namespace') or '(default)'}/{meta.get('name') or '(unnamed)'}"


def _positions(
    node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], duplicates: list[tuple[FieldPath, int]]
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[object] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*path, key)
            if key in seen:
                duplicates.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _positions(value_node, child, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*path, index)
            lines[child] = item.start_mark.line + 1
            _positions(item, child, lines, duplicates)


def _documents(text: str, file: str) -> Iterator[Document | Finding]:
    loader = yaml.SafeLoader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            data = loader.construct_document(node)
            if data is None:
                continue
            lines: dict[FieldPath, int] = {}
            duplicates: list[tuple[FieldPath, int]] = []
            _positions(node, (), lines, duplicates)
            for path, line in duplicates:
                yield Finding(file, line, "duplicate key: the API server would refuse it", format_path(path))
            yield Document(file, index, data, node.start_mark.line + 1, lines)
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        yield Finding(file, line, f"invalid YAML: {exc.problem or exc}")
    finally:
        loader.dispose()


def load_file(path: Path, display: str | None = None) -> tuple[list[Document], list[Finding]]:
    """The documents of one YAML file, and findings for what could not be read."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Finding(name, 1, f"cannot read: {exc}")]
    documents: list[Document] = []
    findings: list[Finding] = []
    for item in _documents(text, name):
        (documents if isinstance(item, Document) else findings).append(item)  # type: ignore[arg-type]
    return documents, findings


def expand(paths: Sequence[Path]) -> Iterator[Path]:
    """Files named, and the YAML files under directories named (recursively, sorted)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file())
        else:
            yield path
