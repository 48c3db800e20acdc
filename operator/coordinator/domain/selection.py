"""Which objects a scenario may hit, and which of them it does hit.

The flow is: the caller lists objects of the target kind from the API server (narrowed server-side with
:func:`label_selector_to_string` and the target's ``fieldSelector``), turns them into :class:`Candidate` values,
keeps those :func:`eligible` for the :class:`~coordinator.api.models.Target`, and picks the victims with
:func:`select_targets`. :func:`namespace_allowed` decides whether a namespace may be touched at all.

Everything here is pure and deterministic: given a seed, the same candidates give the same selection whatever
order the API server returned them in.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from coordinator.api.models import (
    GROUP,
    LabelSelector,
    SelectionMode,
    Target,
    TargetKind,
    TargetRef,
)
from coordinator.domain.labelselectors import Selector, selector_from_model

OPT_IN_LABEL = f"{GROUP}/allow"
"""The namespace label that opts a namespace in to chaos, with the value ``"true"``."""


class SelectionError(ValueError):
    """A selection request that cannot be honoured: an unknown mode, a missing or out-of-range value, or an
    invalid label selector. It is a configuration mistake, never "nothing matched" (that is an empty list).
    ``field`` names the scenario field at fault (``spec.value``), when it is known."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field

    def __str__(self) -> str:
        text = super().__str__()
        return f"{self.field}: {text}" if self.field else text


# --- candidates ----------------------------------------------------------------------------------------------


def _frozen(mapping: Mapping[str, str] | None) -> Mapping[str, str]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Candidate:
    """One object that may be a target, reduced to what selection looks at.

    Candidates are identified by ``(kind, namespace, name, uid)``; labels and annotations take part in equality
    but not in the hash, so candidates can live in sets. ``uid`` is ``""`` when unknown.
    """

    kind: str
    namespace: str | None
    name: str
    uid: str
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    phase: str | None = None
    """``status.phase`` (Pods: Pending, Running, Succeeded, Failed, Unknown); None when absent."""
    terminating: bool = False
    """``metadata.deletionTimestamp`` is set: the object is on its way out."""
    ready: bool | None = None
    """The ``Ready`` condition: True/False, None when the object has no such condition or it is Unknown."""

    def __post_init__(self) -> None:
        # Read-only copies: a frozen candidate should not change under the caller's feet.
        object.__setattr__(self, "labels", _frozen(self.labels))
        object.__setattr__(self, "annotations", _frozen(self.annotations))

    @classmethod
    def from_object(cls, kind: str, obj: Mapping[str, Any]) -> Candidate:
        """Build a candidate from a Kubernetes object in its JSON shape (a plain dict with camelCase keys).

        Reads ``metadata.{namespace,name,uid,labels,annotations,deletionTimestamp}``, ``status.phase`` and the
        ``Ready`` entry of ``status.conditions``. Missing or null fields are tolerated; a missing name is not.

        Raises:
            ValueError: the object has no ``metadata.name``.
        """
        metadata: Mapping[str, Any] = obj.get("metadata") or {}
        status: Mapping[str, Any] = obj.get("status") or {}
        name = metadata.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} object has no metadata.name")
        phase = status.get("phase")
        return cls(
            kind=kind,
            namespace=metadata.get("namespace") or None,
            name=name,
            uid=str(metadata.get("uid") or ""),
            labels=_string_map(metadata.get("labels")),
            annotations=_string_map(metadata.get("annotations")),
            phase=phase if isinstance(phase, str) else None,
            terminating=bool(metadata.get("deletionTimestamp")),
            ready=_ready_condition(status.get("conditions")),
        )

    @property
    def sort_key(self) -> tuple[str, str, str, str]:
        """The deterministic order of candidates: namespace (cluster-scoped first), name, then kind and uid."""
        return (self.namespace or "", self.name, self.kind, self.uid)

    def to_ref(self) -> TargetRef:
        """The candidate as the ``TargetRef`` recorded in a TestRun's status."""
        return TargetRef(kind=self.kind, namespace=self.namespace, name=self.name, uid=self.uid or None)


def _string_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(key): "" if item is None else str(item) for key, item in value.items()}


def _ready_condition(conditions: object) -> bool | None:
    if not isinstance(conditions, list):
        return None
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return {"True": True, "False": False}.get(str(condition.get("status")))
    return None


def _content_key(candidate: Candidate) -> tuple[Any, ...]:
    """A total order over everything else a candidate holds, to break ties between snapshots of one object."""
    return (
        candidate.terminating,
        candidate.phase or "",
        (candidate.ready is None, bool(candidate.ready)),
        sorted(candidate.labels.items()),
        sorted(candidate.annotations.items()),
    )


def _ordered(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Candidates sorted by :attr:`Candidate.sort_key`, each identity (kind, namespace, name, uid) kept once.

    When several snapshots of one object are given, the one kept does not depend on their order (a
    non-terminating one is preferred), so neither does anything computed from the result.
    """
    unique: dict[tuple[str, str, str, str], Candidate] = {}
    for candidate in candidates:
        kept = unique.get(candidate.sort_key)
        if kept is None or _content_key(candidate) < _content_key(kept):
            unique[candidate.sort_key] = candidate
    return [unique[key] for key in sorted(unique)]


# --- label selectors -----------------------------------------------------------------------------------------


def label_selector(selector: LabelSelector | None) -> Selector:
    """The parsed form of a target's ``labelSelector`` (see :mod:`coordinator.domain.labelselectors`).

    Raises:
        SelectionError: the selector is malformed (``In``/``NotIn`` without values, ``Exists``/``DoesNotExist``
            with values), or a key or value is not valid label syntax, as the API server would refuse it.
    """
    try:
        return selector_from_model(selector)
    except ValueError as exc:
        raise SelectionError(str(exc), "spec.target.labelSelector") from None


def matches_label_selector(labels: Mapping[str, str], selector: LabelSelector | None) -> bool:
    """Whether ``labels`` satisfy ``selector``, with Kubernetes semantics.

    Every ``matchLabels`` pair must be present with that value and every ``matchExpressions`` requirement must
    hold: ``In`` (key present, value listed), ``NotIn`` (key absent, or value not listed), ``Exists``,
    ``DoesNotExist``. ``None`` and an empty selector match everything.

    Raises:
        SelectionError: the selector is malformed, as for :func:`label_selector`.
    """
    return label_selector(selector).matches(labels)


def label_selector_to_string(selector: LabelSelector | None) -> str:
    """Render ``selector`` as the ``labelSelector`` query string the API server accepts.

    ``matchLabels`` come first, sorted by key (``app=web``), then each requirement in order: ``tier in (a,b)``,
    ``tier notin (a,b)``, ``env`` (Exists), ``!legacy`` (DoesNotExist); values are sorted and de-duplicated.
    ``None`` and an empty selector give ``""`` (everything). The string selects exactly what
    :func:`matches_label_selector` matches.

    Raises:
        SelectionError: the selector is malformed, as for :func:`label_selector`.
    """
    return str(label_selector(selector))


# --- eligibility ---------------------------------------------------------------------------------------------


def eligible(candidates: Iterable[Candidate], target: Target) -> list[Candidate]:
    """The candidates ``target`` may hit, sorted by (namespace, name).

    A candidate is eligible when it is of the target's kind, is not terminating, is named in ``target.names``
    (when names are given), carries every ``annotationSelector`` annotation with that exact value, and matches
    the ``labelSelector``. Pods must also be in phase ``Running``. Each candidate is judged on its own; then
    duplicates (same kind, namespace, name and uid) are kept once.

    Not applied here: ``target.namespaces`` (the caller lists from the right namespaces, after
    :func:`namespace_allowed`) and ``target.fieldSelector`` (only the API server can evaluate it).

    Raises:
        SelectionError: the label selector is malformed.
    """
    kind = str(target.kind)
    names = frozenset(target.names)
    selector = label_selector(target.labelSelector)
    result: list[Candidate] = []
    for candidate in candidates:
        if candidate.kind != kind or candidate.terminating:
            continue
        if kind == TargetKind.POD and candidate.phase != "Running":
            continue
        if names and candidate.name not in names:
            continue
        if any(candidate.annotations.get(key) != value for key, value in target.annotationSelector.items()):
            continue
        if not selector.matches(candidate.labels):
            continue
        result.append(candidate)
    return _ordered(result)


# --- selection -----------------------------------------------------------------------------------------------


def _ceil_percent(count: int, percent: int) -> int:
    return -(-count * percent // 100)


def _checked_value(mode: SelectionMode, value: int | None, maximum: int | None) -> int:
    if value is None:
        raise SelectionError(f"selection mode {mode.value!r} needs a value", "spec.value")
    if isinstance(value, bool) or not isinstance(value, int):
        raise SelectionError(f"selection mode {mode.value!r} needs an integer value, got {value!r}", "spec.value")
    if value < 1 or (maximum is not None and value > maximum):
        bounds = f"between 1 and {maximum}" if maximum is not None else "at least 1"
        raise SelectionError(f"selection mode {mode.value!r} needs a value {bounds}, got {value}", "spec.value")
    return value


def select_targets(
    candidates: Iterable[Candidate],
    mode: SelectionMode | str,
    value: int | None = None,
    seed: int | None = None,
) -> list[Candidate]:
    """Pick the targets to hit among ``candidates`` (already :func:`eligible`), sorted by (namespace, name).

    With ``n`` distinct candidates:

    - ``one``: one at random (``value`` ignored);
    - ``all``: every one (``value`` ignored);
    - ``fixed``: ``min(value, n)`` at random, ``value >= 1``;
    - ``fixed-percent``: ``ceil(n * value / 100)`` at random, ``1 <= value <= 100`` (so at least one when n > 0);
    - ``random-max-percent``: a count drawn uniformly from ``[1, ceil(n * value / 100)]``, then that many at
      random, ``1 <= value <= 100``. The lower bound is 1, not 0: a step that runs should hit something.

    The choice depends only on the set of candidates and ``seed``: candidates are sorted (and de-duplicated)
    before ``random.Random(seed)`` draws, so the API server's list order does not matter. ``seed=None`` draws
    from a fresh, OS-seeded source. Nothing to choose from gives ``[]``; the value is still checked first, so a
    bad scenario is reported whatever the cluster holds.

    Raises:
        SelectionError: an unknown mode, or a missing or out-of-range value for a mode that needs one.
    """
    try:
        chosen_mode = SelectionMode(mode)
    except ValueError:
        known = ", ".join(m.value for m in SelectionMode)
        raise SelectionError(f"unknown selection mode {mode!r}; expected one of {known}") from None

    checked = 0  # the checked value, for the modes that take one
    if chosen_mode == SelectionMode.FIXED:
        checked = _checked_value(chosen_mode, value, None)
    elif chosen_mode in (SelectionMode.FIXED_PERCENT, SelectionMode.RANDOM_MAX_PERCENT):
        checked = _checked_value(chosen_mode, value, 100)

    ordered = _ordered(candidates)
    n = len(ordered)
    if n == 0 or chosen_mode == SelectionMode.ALL:
        return ordered

    # Not for security: a reproducible draw is the point (S311).
    rng = random.Random(seed)  # noqa: S311
    if chosen_mode == SelectionMode.ONE:
        count = 1
    elif chosen_mode == SelectionMode.FIXED:
        count = min(checked, n)
    elif chosen_mode == SelectionMode.FIXED_PERCENT:
        count = _ceil_percent(n, checked)
    else:  # random-max-percent
        count = rng.randint(1, _ceil_percent(n, checked))
    picked = rng.sample(range(n), count)
    return [ordered[index] for index in sorted(picked)]


# --- namespaces ----------------------------------------------------------------------------------------------


def namespace_allowed(
    namespace: str,
    *,
    protected: frozenset[str],
    namespace_labels: Mapping[str, str],
    require_opt_in: bool,
    opt_in_label: str = OPT_IN_LABEL,
) -> tuple[bool, str]:
    """Whether faults may touch ``namespace``, and why (a sentence for events and status messages).

    A protected namespace is always refused, opted in or not. Otherwise, when ``require_opt_in`` is set, the
    namespace must carry ``opt_in_label`` with the exact value ``"true"``; when it is not, any namespace goes.
    """
    if namespace in protected:
        return False, f"namespace {namespace!r} is protected and never targeted"
    if not require_opt_in:
        return True, f"namespace {namespace!r} is allowed: cluster-wide targeting is enabled"
    found = namespace_labels.get(opt_in_label)
    if found == "true":
        return True, f"namespace {namespace!r} opted in with {opt_in_label}=true"
    if found is None:
        return False, f"namespace {namespace!r} has not opted in: it lacks the label {opt_in_label}=true"
    return False, f"namespace {namespace!r} has not opted in: label {opt_in_label} is {found!r}, not 'true'"
