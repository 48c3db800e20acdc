"""YAML documents with the line of every field, so a finding can point at ``file:line``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from dataclasses import field as dataclass_field
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
    # "admission": the API server refuses the document; "run start": it accepts it, and the operator ends the run
    # Error when it starts (a parameter's value, a protected namespace, a fault for another target kind).
    stage: str = dataclass_field(default="admission", compare=False)

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}{self.message}"

    def as_warning(self) -> str:
        """The finding as a warning line: ``file:line: field: warning: message``."""
        where = f"{self.field}: " if self.field else ""
        return f"{self.file}:{self.line}: {where}warning: {self.message}"

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


# What validate reads, bounded so that a hostile file is refused at once instead of hanging it (kubectl refuses
# the same files; see tests/README.md for the measured API server limits).
MAX_FILE_BYTES = 64 * 1024 * 1024  # a file larger than this is not read at all
# The API server refuses a request body over 3 MiB; a document is refused unparsed when its YAML is larger.
MAX_REQUEST_BYTES = 3 * 1024 * 1024
# What etcd stores at most (its default --max-request-bytes, 1.5 MiB, less the write's own overhead): the API server
# answers "etcdserver: request is too large" for a created object whose JSON is larger (measured on the local cluster).
MAX_OBJECT_BYTES = 1_572_864 - 512
# No field of our kinds nests deeper than ~15; a document nested deeper than this is refused by the schema anyway,
# and its parse would recurse once per level.
MAX_DEPTH = 100
# Values in a document once every alias is expanded: a "billion laughs" bomb is a few lines that expand to 10^9.
MAX_VALUES = 100_000


class LimitExceeded(yaml.MarkedYAMLError):
    """A document over one of the limits above: refused before the work it would cost."""


class _LimitedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses documents nested deeper than ``MAX_DEPTH``."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise LimitExceeded(problem=f"nested deeper than {MAX_DEPTH} levels", problem_mark=mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_values(node: yaml.Node) -> int:
    """How many values ``node`` holds with every alias expanded; raises LimitExceeded past ``MAX_VALUES`` or for an
    alias to a node that contains it (each node's count is computed once, so a bomb costs no more than its text)."""
    counted: dict[int, int] = {}
    open_nodes: set[int] = set()

    def count(item: yaml.Node) -> int:
        key = id(item)
        if key in counted:
            return counted[key]
        if key in open_nodes:
            raise LimitExceeded(problem="an alias refers to a node that contains it", problem_mark=item.start_mark)
        open_nodes.add(key)
        total = 1
        if isinstance(item, yaml.SequenceNode):
            total += sum(count(child) for child in item.value)
        elif isinstance(item, yaml.MappingNode):
            total += sum(count(k) + count(v) for k, v in item.value)
        open_nodes.discard(key)
        if total > MAX_VALUES:
            raise LimitExceeded(
                problem=f"more than {MAX_VALUES} values once its aliases are expanded (an alias bomb?)",
                problem_mark=item.start_mark,
            )
        counted[key] = total
        return total

    return count(node)


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


_DOCUMENT_MARKER = re.compile(r"^---(\s|$)")
_PREAMBLE = re.compile(r"^\s*(#.*|%.*)?$")


def _chunks(text: str) -> Iterator[tuple[int, str]]:
    """The text of each YAML document with its first line (0-based), split where a line starts with ``---``.

    Such a line starts a document wherever it stands (YAML forbids it inside any scalar), so the split needs no
    parse: an oversized document is measured before it is read.
    """
    lines = text.splitlines(keepends=True)
    start = 0
    for number, line in enumerate(lines):
        if number > start and _DOCUMENT_MARKER.match(line):
            before = lines[start:number]
            if not all(_PREAMBLE.match(item) for item in before):  # directives and comments go with what follows
                yield start, "".join(before)
                start = number
    if start < len(lines):
        yield start, "".join(lines[start:])


def json_size(data: Any) -> int:
    """The bytes of ``data`` as JSON, as kubectl sends it and etcd stores it."""
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def _documents(text: str, file: str) -> Iterator[Document | Finding]:
    index = 0
    for offset, chunk in _chunks(text):
        size = len(chunk.encode())
        if size > MAX_REQUEST_BYTES:
            yield Finding(
                file,
                offset + 1,
                f"document of {size} bytes: the API server refuses a request over {MAX_REQUEST_BYTES} bytes (not read)",
            )
            continue
        for item in _chunk_documents(chunk, file, offset, index):
            if isinstance(item, Document):
                index += 1
            yield item


def _chunk_documents(text: str, file: str, offset: int, index: int) -> Iterator[Document | Finding]:
    loader = _LimitedLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _expanded_values(node)
            data = loader.construct_document(node)
            if data is None:
                continue
            lines: dict[FieldPath, int] = {}
            duplicates: list[tuple[FieldPath, int]] = []
            _positions(node, (), lines, duplicates)
            for path, line in duplicates:
                yield Finding(file, offset + line, "duplicate key: the API server would refuse it", format_path(path))
            shifted = {path: offset + line for path, line in lines.items()}
            yield Document(file, index, data, offset + node.start_mark.line + 1, shifted)
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = offset + (mark.line + 1 if mark is not None else 1)
        yield Finding(file, line, f"invalid YAML: {exc.problem or exc}")
    finally:
        loader.dispose()


def load_file(path: Path, display: str | None = None) -> tuple[list[Document], list[Finding]]:
    """The documents of one YAML file, and findings for what could not be read (or was over a limit)."""
    name = display or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            return [], [Finding(name, 1, f"file of {size} bytes: validate reads at most {MAX_FILE_BYTES} (not read)")]
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
