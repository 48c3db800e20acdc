"""Sharding TestRuns (and ChaosScenarios) across operator instances with a Kubernetes label selector.

``coordinator run --selector 'team in (shop,payments),tier!=critical'`` makes an instance handle only the objects
whose labels match. The syntax is kubectl's: comma-separated requirements, each one of ``key``, ``!key``,
``key=value`` (or ``==``), ``key!=value``, ``key in (a,b)`` and ``key notin (a,b)``; all must hold. As in
Kubernetes, ``!=`` and ``notin`` also match objects that lack the label. The empty selector matches everything.

Pure: parsing happens once at start-up (a bad selector stops the operator with a message naming the part that
is wrong), matching on every event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

# A label key: an optional DNS-subdomain prefix and a slash, then a name of at most 63 characters.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_KEY = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
_VALUE = re.compile(rf"^({_NAME})?$")

_SET = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(r"^(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)$")
_ABSENT = re.compile(r"^!\s*(?P<key>[^\s!=(),]+)$")
_PRESENT = re.compile(r"^(?P<key>[^\s!=(),]+)$")


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True)
class Requirement:
    """One condition on one label."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.operator:
            case Operator.EXISTS:
                return present
            case Operator.DOES_NOT_EXIST:
                return not present
            case Operator.EQUALS | Operator.IN:
                return present and value in self.values
            case Operator.NOT_EQUALS | Operator.NOT_IN:
                return not present or value not in self.values
        raise AssertionError(self.operator)  # pragma: no cover - every operator is matched above

    def __str__(self) -> str:
        match self.operator:
            case Operator.EXISTS:
                return self.key
            case Operator.DOES_NOT_EXIST:
                return f"!{self.key}"
            case Operator.EQUALS | Operator.NOT_EQUALS:
                return f"{self.key}{self.operator.value}{self.values[0]}"
        return f"{self.key} {self.operator.value} ({','.join(self.values)})"


@dataclass(frozen=True)
class ShardSelector:
    """A parsed label selector; every requirement must match."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    @property
    def everything(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _split(text: str) -> list[str]:
    """Split on the commas that separate requirements (not those inside ``in (a,b)``)."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' in {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ValueError(f"unbalanced '(' in {text!r}")
    parts.append("".join(current))
    return parts


def _key(key: str, part: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"{part!r}: {key!r} is not a valid label key")
    return key


def _value(value: str, part: str) -> str:
    if not _VALUE.match(value):
        raise ValueError(f"{part!r}: {value!r} is not a valid label value")
    return value


def _requirement(part: str) -> Requirement:
    if match := _SET.match(part):
        values = tuple(_value(v.strip(), part) for v in match["values"].split(","))
        if values == ("",):
            raise ValueError(f"{part!r}: a set needs at least one value")
        operator = Operator.IN if match["op"] == "in" else Operator.NOT_IN
        return Requirement(_key(match["key"], part), operator, tuple(sorted(set(values))))
    if match := _EQUALITY.match(part):
        operator = Operator.NOT_EQUALS if match["op"] == "!=" else Operator.EQUALS
        return Requirement(_key(match["key"], part), operator, (_value(match["value"], part),))
    if match := _ABSENT.match(part):
        return Requirement(_key(match["key"], part), Operator.DOES_NOT_EXIST)
    if match := _PRESENT.match(part):
        return Requirement(_key(match["key"], part), Operator.EXISTS)
    raise ValueError(f"{part!r} is not a label requirement (key, !key, key=value, key!=value, key in (a,b))")


def parse_shard_selector(text: str) -> ShardSelector:
    """Parse a kubectl-style label selector; raise ``ValueError`` naming the offending requirement."""
    if not text.strip():
        return ShardSelector()
    requirements = []
    for raw in _split(text):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty requirement in {text!r}")
        requirements.append(_requirement(part))
    return ShardSelector(tuple(requirements))
