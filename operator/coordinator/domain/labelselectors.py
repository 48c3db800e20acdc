"""Kubernetes label selectors: one parsed form, read from either of the two ways users write them.

- ``coordinator run --selector 'team in (shop,payments),tier!=critical'`` (sharding) is kubectl's string syntax:
  comma-separated requirements, each one of ``key``, ``!key``, ``key=value`` (or ``==``), ``key!=value``,
  ``key in (a,b)`` and ``key notin (a,b)``. :func:`parse_selector` reads it.
- A scenario's ``spec.target.labelSelector`` is the API's structured ``matchLabels``/``matchExpressions``
  (:class:`~coordinator.api.models.LabelSelector`). :func:`selector_from_model` reads it.

Both give a :class:`Selector`: every requirement must hold; as in Kubernetes, ``!=`` and ``notin`` also match
objects that lack the label, and the empty selector matches everything. ``str(selector)`` is the string the API
server accepts as a ``labelSelector`` query and selects exactly what :meth:`Selector.matches` matches, so a list
narrowed on the server and a match done here never disagree.

Pure. A bad selector raises ``ValueError`` naming the part that is wrong: label syntax is checked as the API server
checks it (k8s.io/apimachinery validation), since no object can carry an invalid label anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from coordinator.api.models import LabelSelector, SelectorOperator

# A label key is an optional DNS-subdomain prefix (at most 253 characters) and "/", then a name; a name and a
# non-empty value are at most 63 characters of letters, digits, "-", "_" and ".", starting and ending alphanumeric.
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# The string syntax, one requirement at a time (after splitting on the top-level commas).
_SET = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(r"^(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)$")
_ABSENT = re.compile(r"^!\s*(?P<key>[^\s!=(),]+)$")
_PRESENT = re.compile(r"^(?P<key>[^\s!=(),]+)$")


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label key (``app``, ``example.com/tier``)."""
    prefix, slash, name = key.rpartition("/")
    return (
        0 < len(name) <= 63
        and _LABEL_NAME.fullmatch(name) is not None
        and (not slash or (0 < len(prefix) <= 253 and _DNS_SUBDOMAIN.fullmatch(prefix) is not None))
    )


def is_label_value(value: str) -> bool:
    """Whether ``value`` is a valid label value (the empty string is)."""
    return not value or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)


class Operator(StrEnum):
    EQUALS = "="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"


@dataclass(frozen=True)
class Requirement:
    """One condition on one label. Set values are sorted and unique; an equality has exactly one value."""

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
        # A set holding the empty value renders as "(,a)"; "()" alone would mean {""} to the server, and an
        # empty set cannot be built (both readers refuse it).
        return f"{self.key} {self.operator.value} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
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


def _set(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


# --- the string syntax ------------------------------------------------------------------------------------------


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
    if not is_label_key(key):
        raise ValueError(f"{part!r}: {key!r} is not a valid label key")
    return key


def _value(value: str, part: str) -> str:
    if not is_label_value(value):
        raise ValueError(f"{part!r}: {value!r} is not a valid label value")
    return value


def _requirement(part: str) -> Requirement:
    if match := _SET.match(part):
        values = tuple(_value(v.strip(), part) for v in match["values"].split(","))
        if values == ("",):
            raise ValueError(f"{part!r}: a set needs at least one value")
        operator = Operator.IN if match["op"] == "in" else Operator.NOT_IN
        return Requirement(_key(match["key"], part), operator, _set(values))
    if match := _EQUALITY.match(part):
        operator = Operator.NOT_EQUALS if match["op"] == "!=" else Operator.EQUALS
        return Requirement(_key(match["key"], part), operator, (_value(match["value"], part),))
    if match := _ABSENT.match(part):
        return Requirement(_key(match["key"], part), Operator.DOES_NOT_EXIST)
    if match := _PRESENT.match(part):
        return Requirement(_key(match["key"], part), Operator.EXISTS)
    raise ValueError(f"{part!r} is not a label requirement (key, !key, key=value, key!=value, key in (a,b))")


def parse_selector(text: str) -> Selector:
    """Parse a kubectl-style label selector string; raise ``ValueError`` naming the offending requirement."""
    if not text.strip():
        return Selector()
    requirements = []
    for raw in _split(text):
        part = raw.strip()
        if not part:
            raise ValueError(f"empty requirement in {text!r}")
        requirements.append(_requirement(part))
    return Selector(tuple(requirements))


# --- the structured form ----------------------------------------------------------------------------------------

_FROM_MODEL = {
    SelectorOperator.IN: Operator.IN,
    SelectorOperator.NOT_IN: Operator.NOT_IN,
    SelectorOperator.EXISTS: Operator.EXISTS,
    SelectorOperator.DOES_NOT_EXIST: Operator.DOES_NOT_EXIST,
}


def _checked_key(key: str) -> str:
    if not is_label_key(key):
        raise ValueError(f"invalid label key {key!r} in label selector")
    return key


def _checked_value(key: str, value: str) -> str:
    if not is_label_value(value):
        raise ValueError(
            f"invalid label value {value!r} for key {key!r} in label selector (at most 63 characters: letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit)"
        )
    return value


def selector_from_model(model: LabelSelector | None) -> Selector:
    """The :class:`Selector` of a ``matchLabels``/``matchExpressions`` label selector.

    ``matchLabels`` come first, sorted by key (each an equality), then each requirement in order: ``In``,
    ``NotIn``, ``Exists``, ``DoesNotExist``. ``None`` and an empty selector select everything.

    Raises:
        ValueError: a requirement is malformed (``In``/``NotIn`` without values, ``Exists``/``DoesNotExist``
            with values), or a key or value is not valid label syntax, as the API server would refuse it.
    """
    if model is None:
        return Selector()
    requirements = [
        Requirement(_checked_key(key), Operator.EQUALS, (_checked_value(key, value),))
        for key, value in sorted(model.matchLabels.items())
    ]
    for expression in model.matchExpressions:
        key, operator = expression.key, SelectorOperator(expression.operator)
        if operator in (SelectorOperator.IN, SelectorOperator.NOT_IN):
            if not expression.values:
                raise ValueError(f"label selector requirement on {key!r}: {operator} needs values")
        elif expression.values:
            raise ValueError(
                f"label selector requirement on {key!r}: {operator} takes no values, got {expression.values!r}"
            )
        checked = _checked_key(key)
        values = _set([_checked_value(key, value) for value in expression.values])
        requirements.append(Requirement(checked, _FROM_MODEL[operator], values))
    return Selector(tuple(requirements))
