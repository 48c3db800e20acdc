"""Target eligibility and selection: label selectors, modes, seeds, protected namespaces."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api.models import (
    LabelSelector,
    LabelSelectorRequirement,
    SelectionMode,
    SelectorOperator,
    Target,
    TargetKind,
    TargetRef,
)
from coordinator.domain.selection import (
    OPT_IN_LABEL,
    Candidate,
    SelectionError,
    eligible,
    label_selector_to_string,
    matches_label_selector,
    namespace_allowed,
    select_targets,
)

FAST = settings(max_examples=60, deadline=None)

# --- helpers and strategies ----------------------------------------------------------------------------------


def pod(
    name: str,
    namespace: str | None = "ns",
    *,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    phase: str | None = "Running",
    terminating: bool = False,
    kind: str = "Pod",
) -> Candidate:
    return Candidate(
        kind=kind,
        namespace=namespace,
        name=name,
        uid=f"uid-{namespace}-{name}",
        labels=labels or {},
        annotations=annotations or {},
        phase=phase,
        terminating=terminating,
    )


def names(candidates: list[Candidate]) -> list[str]:
    return [c.name for c in candidates]


NAMESPACES = st.sampled_from([None, "a", "b", "default"])
NAME = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)


@st.composite
def candidate_lists(draw: st.DrawFn, min_size: int = 0, max_size: int = 25) -> list[Candidate]:
    """Distinct, eligible-looking pods (unique namespace/name)."""
    keys = draw(st.lists(st.tuples(NAMESPACES, NAME), min_size=min_size, max_size=max_size, unique=True))
    return [pod(name, namespace) for namespace, name in keys]


MODES = st.sampled_from(list(SelectionMode))
SEEDS = st.integers(min_value=0, max_value=2**32)


def ceil_percent(n: int, percent: int) -> int:
    """The reference rounding, computed independently of the code under test."""
    return math.ceil(Fraction(n * percent, 100))


def valid_value(mode: SelectionMode) -> st.SearchStrategy[int | None]:
    if mode in (SelectionMode.ONE, SelectionMode.ALL):
        return st.none() | st.integers(min_value=1, max_value=50)
    if mode == SelectionMode.FIXED:
        return st.integers(min_value=1, max_value=40)
    return st.integers(min_value=1, max_value=100)


# --- selection: properties -----------------------------------------------------------------------------------


@FAST
@given(st.data(), candidate_lists(), MODES, SEEDS)
def test_selection_size_subset_and_order(
    data: st.DataObject, candidates: list[Candidate], mode: SelectionMode, seed: int
) -> None:
    value = data.draw(valid_value(mode))
    chosen = select_targets(candidates, mode, value, seed)
    n = len(candidates)

    if n == 0:
        assert chosen == []
    elif mode == SelectionMode.ONE:
        assert len(chosen) == 1
    elif mode == SelectionMode.ALL:
        assert len(chosen) == n
    elif mode == SelectionMode.FIXED:
        assert value is not None
        assert len(chosen) == min(value, n)
    elif mode == SelectionMode.FIXED_PERCENT:
        assert value is not None
        assert len(chosen) == ceil_percent(n, value)
    else:
        assert value is not None
        assert 1 <= len(chosen) <= ceil_percent(n, value)

    assert set(chosen) <= set(candidates)
    assert len(set(chosen)) == len(chosen)
    assert chosen == sorted(chosen, key=lambda c: (c.namespace or "", c.name))


@FAST
@given(st.data(), candidate_lists(), MODES, SEEDS)
def test_same_seed_same_selection_whatever_the_input_order(
    data: st.DataObject, candidates: list[Candidate], mode: SelectionMode, seed: int
) -> None:
    value = data.draw(valid_value(mode))
    shuffled = data.draw(st.permutations(candidates))
    assert select_targets(shuffled, mode, value, seed) == select_targets(candidates, mode, value, seed)


@FAST
@given(candidate_lists(min_size=1), MODES)
def test_duplicated_input_is_selected_once(candidates: list[Candidate], mode: SelectionMode) -> None:
    value = None if mode in (SelectionMode.ONE, SelectionMode.ALL) else 100
    doubled = candidates + list(reversed(candidates))
    chosen = select_targets(doubled, mode, value, seed=1)
    assert len(set(chosen)) == len(chosen)
    assert chosen == select_targets(candidates, mode, value, seed=1)


@FAST
@given(candidate_lists(min_size=2), SEEDS)
def test_different_seeds_eventually_pick_differently_in_mode_one(candidates: list[Candidate], seed: int) -> None:
    first = select_targets(candidates, SelectionMode.ONE, None, seed)
    assert any(select_targets(candidates, SelectionMode.ONE, None, seed + k) != first for k in range(1, 100))


@FAST
@given(st.integers(min_value=0, max_value=300), st.integers(min_value=1, max_value=100))
def test_fixed_percent_rounds_up_and_hits_at_least_one(n: int, percent: int) -> None:
    candidates = [pod(f"p{i:03d}") for i in range(n)]
    count = len(select_targets(candidates, SelectionMode.FIXED_PERCENT, percent, seed=0))
    assert count == ceil_percent(n, percent)
    assert count <= n
    assert (count >= 1) == (n > 0)
    if n > 0:
        assert count * 100 >= n * percent > (count - 1) * 100  # the smallest count covering the percentage


@FAST
@given(candidate_lists(), SEEDS)
def test_percent_100_is_all(candidates: list[Candidate], seed: int) -> None:
    every = select_targets(candidates, SelectionMode.ALL)
    assert select_targets(candidates, SelectionMode.FIXED_PERCENT, 100, seed) == every
    assert select_targets(candidates, "fixed-percent", 100, seed) == every


# --- selection: examples -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "value"),
    [("one", None), ("all", None), ("fixed", 3), ("fixed-percent", 50), ("random-max-percent", 50)],
)
def test_empty_candidates_select_nothing(mode: str, value: int | None) -> None:
    assert select_targets([], mode, value, seed=1) == []
    assert select_targets([], mode, value, seed=None) == []


def test_fixed_value_above_n_selects_all() -> None:
    candidates = [pod("b"), pod("a"), pod("c")]
    assert names(select_targets(candidates, SelectionMode.FIXED, 10, seed=3)) == ["a", "b", "c"]


@pytest.mark.parametrize("mode", ["fixed", "fixed-percent", "random-max-percent"])
@pytest.mark.parametrize("value", [None, 0, -1])
def test_missing_or_non_positive_value_is_rejected(mode: str, value: int | None) -> None:
    with pytest.raises(SelectionError, match=re.escape(repr(mode))):
        select_targets([pod("a")], mode, value, seed=1)


@pytest.mark.parametrize("mode", ["fixed", "fixed-percent", "random-max-percent"])
def test_value_is_checked_even_without_candidates(mode: str) -> None:
    with pytest.raises(SelectionError, match="needs a value"):
        select_targets([], mode, None)


@pytest.mark.parametrize("mode", ["fixed-percent", "random-max-percent"])
def test_percent_above_100_is_rejected(mode: str) -> None:
    with pytest.raises(SelectionError, match="between 1 and 100"):
        select_targets([pod("a")], mode, 101)


def test_boolean_value_is_rejected() -> None:
    with pytest.raises(SelectionError, match="integer"):
        select_targets([pod("a")], SelectionMode.FIXED, True)


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(SelectionError, match="unknown selection mode 'some'"):
        select_targets([pod("a")], "some")


def test_selection_error_is_a_value_error() -> None:
    assert issubclass(SelectionError, ValueError)


def test_one_and_all_ignore_value() -> None:
    candidates = [pod("a"), pod("b")]
    assert len(select_targets(candidates, "one", 7, seed=1)) == 1
    assert len(select_targets(candidates, "all", 7)) == 2


def test_unseeded_selection_works() -> None:
    candidates = [pod(f"p{i}") for i in range(10)]
    chosen = select_targets(candidates, SelectionMode.FIXED, 4, seed=None)
    assert len(chosen) == 4
    assert set(chosen) <= set(candidates)


def test_random_max_percent_draws_counts_from_one_to_the_cap() -> None:
    candidates = [pod(f"p{i}") for i in range(10)]
    counts = {len(select_targets(candidates, SelectionMode.RANDOM_MAX_PERCENT, 50, seed)) for seed in range(300)}
    assert counts == {1, 2, 3, 4, 5}


def test_random_max_percent_on_one_candidate_hits_it() -> None:
    assert names(select_targets([pod("only")], SelectionMode.RANDOM_MAX_PERCENT, 1, seed=9)) == ["only"]


def test_a_seed_keeps_picking_the_same_targets() -> None:
    """Pinned output: changing the algorithm would silently change which targets a seeded TestRun hits."""
    candidates = [pod(f"p{i}") for i in range(10)]
    assert names(select_targets(candidates, SelectionMode.FIXED, 3, seed=42)) == PINNED_FIXED_3_SEED_42
    assert names(select_targets(candidates, SelectionMode.ONE, None, seed=42)) == PINNED_ONE_SEED_42


PINNED_FIXED_3_SEED_42 = ["p0", "p1", "p4"]
PINNED_ONE_SEED_42 = ["p1"]


# --- eligibility ---------------------------------------------------------------------------------------------

PHASES = st.sampled_from([None, "Pending", "Running", "Succeeded", "Failed", "Unknown"])


@FAST
@given(
    st.lists(
        st.builds(
            pod,
            NAME,
            NAMESPACES,
            phase=PHASES,
            terminating=st.booleans(),
            kind=st.sampled_from(["Pod", "Deployment"]),
        ),
        max_size=20,
    ),
    st.sampled_from([TargetKind.POD, TargetKind.DEPLOYMENT]),
    SEEDS,
)
def test_terminating_and_non_running_pods_are_never_selected(
    candidates: list[Candidate], kind: TargetKind, seed: int
) -> None:
    found = eligible(candidates, Target(kind=kind))
    chosen = select_targets(found, SelectionMode.ALL, None, seed)
    for candidate in chosen:
        assert candidate.kind == kind
        assert not candidate.terminating
        if kind == TargetKind.POD:
            assert candidate.phase == "Running"
    assert found == sorted(found, key=lambda c: (c.namespace or "", c.name))
    expected = {
        c for c in candidates if c.kind == kind and not c.terminating and (kind != "Pod" or c.phase == "Running")
    }
    assert set(found) <= expected
    # Several snapshots of one object (same identity) may be given: it is eligible once if any snapshot is.
    assert sorted(c.sort_key for c in found) == sorted({c.sort_key for c in expected})
    assert eligible(list(reversed(candidates)), Target(kind=kind)) == found


def test_eligible_filters_by_names_annotations_and_labels() -> None:
    candidates = [
        pod("web-1", labels={"app": "web", "tier": "front"}, annotations={"chaos": "yes"}),
        pod("web-2", labels={"app": "web", "tier": "front"}, annotations={"chaos": "no"}),
        pod("web-3", labels={"app": "web", "tier": "back"}, annotations={"chaos": "yes"}),
        pod("db-1", labels={"app": "db"}, annotations={"chaos": "yes"}),
        pod("web-1", namespace="other", labels={"app": "web", "tier": "front"}, annotations={"chaos": "yes"}),
    ]
    target = Target(
        names=["web-1", "web-2", "web-3"],
        annotationSelector={"chaos": "yes"},
        labelSelector=LabelSelector(
            matchLabels={"app": "web"},
            matchExpressions=[LabelSelectorRequirement(key="tier", operator=SelectorOperator.IN, values=["front"])],
        ),
    )
    assert [(c.namespace, c.name) for c in eligible(candidates, target)] == [("ns", "web-1"), ("other", "web-1")]


def test_eligible_sorts_by_namespace_then_name_and_drops_duplicates() -> None:
    candidates = [pod("b", "y"), pod("a", "z"), pod("c", "x"), pod("a", "y"), pod("b", "y")]
    assert [(c.namespace, c.name) for c in eligible(candidates, Target())] == [
        ("x", "c"),
        ("y", "a"),
        ("y", "b"),
        ("z", "a"),
    ]


def test_snapshots_of_one_object_collapse_whatever_their_order() -> None:
    live = pod("a", labels={"v": "2"})
    going = pod("a", labels={"v": "1"}, terminating=True)
    pending = pod("a", phase="Pending")
    orders = ([live, going, pending], [pending, going, live], [going, live, pending])
    for given_candidates in orders:
        assert eligible(given_candidates, Target()) == [live]
    selections = [select_targets(given_candidates, SelectionMode.ALL) for given_candidates in orders]
    assert len(selections[0]) == 1
    assert all(selection == selections[0] for selection in selections)


def test_non_pod_kinds_ignore_phase_but_not_termination() -> None:
    candidates = [
        pod("api", kind="Deployment", phase=None),
        pod("old", kind="Deployment", phase=None, terminating=True),
        pod("a-pod", phase="Running"),
    ]
    assert names(eligible(candidates, Target(kind=TargetKind.DEPLOYMENT))) == ["api"]


def test_nodes_are_cluster_scoped_candidates() -> None:
    nodes = [pod("node-2", None, kind="Node", phase=None), pod("node-1", None, kind="Node", phase=None)]
    assert names(eligible(nodes, Target(kind=TargetKind.NODE))) == ["node-1", "node-2"]


def test_pending_pods_are_not_eligible() -> None:
    candidates = [pod("starting", phase="Pending"), pod("done", phase="Succeeded"), pod("up")]
    assert names(eligible(candidates, Target())) == ["up"]


def test_nothing_eligible_is_an_empty_list() -> None:
    target = Target(labelSelector=LabelSelector(matchLabels={"app": "x"}))
    assert eligible([pod("a", labels={"app": "db"})], target) == []
    assert eligible([], Target()) == []


# --- candidates ----------------------------------------------------------------------------------------------


def pod_object(**overrides: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-1",
            "namespace": "shop",
            "uid": "1234",
            "labels": {"app": "web"},
            "annotations": {"note": "x"},
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        },
    }
    obj.update(overrides)
    return obj


def test_candidate_from_pod_object() -> None:
    candidate = Candidate.from_object("Pod", pod_object())
    assert candidate == Candidate(
        kind="Pod",
        namespace="shop",
        name="web-1",
        uid="1234",
        labels={"app": "web"},
        annotations={"note": "x"},
        phase="Running",
        terminating=False,
        ready=True,
    )
    assert candidate.to_ref() == TargetRef(kind="Pod", namespace="shop", name="web-1", uid="1234")


def test_candidate_from_terminating_unready_pod() -> None:
    obj = pod_object(status={"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})
    obj["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    candidate = Candidate.from_object("Pod", obj)
    assert candidate.terminating
    assert candidate.ready is False


@pytest.mark.parametrize("status", [None, {}, {"conditions": None}, {"conditions": [{"type": "Ready"}]}])
def test_candidate_without_ready_condition(status: dict[str, Any] | None) -> None:
    candidate = Candidate.from_object("Pod", pod_object(status=status))
    assert candidate.ready is None
    assert candidate.phase is None


def test_candidate_from_sparse_cluster_scoped_object() -> None:
    candidate = Candidate.from_object("Node", {"metadata": {"name": "node-1", "labels": None}})
    assert candidate == Candidate(kind="Node", namespace=None, name="node-1", uid="")
    assert candidate.to_ref() == TargetRef(kind="Node", namespace=None, name="node-1", uid=None)


def test_candidate_needs_a_name() -> None:
    with pytest.raises(ValueError, match=r"metadata\.name"):
        Candidate.from_object("Pod", {"metadata": {"namespace": "x"}})


def test_candidates_are_hashable_and_read_only() -> None:
    labels = {"app": "web"}
    candidate = pod("a", labels=labels)
    labels["app"] = "changed"
    assert candidate.labels == {"app": "web"}
    assert len({candidate, pod("a", labels={"app": "web"})}) == 1
    with pytest.raises(TypeError):
        candidate.labels["app"] = "x"  # type: ignore[index]


# --- label selectors -----------------------------------------------------------------------------------------


def req(key: str, operator: SelectorOperator, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=list(values))


def test_selector_string_example() -> None:
    selector = LabelSelector(
        matchLabels={"app": "web"},
        matchExpressions=[
            req("tier", SelectorOperator.IN, "b", "a", "a"),
            req("legacy", SelectorOperator.DOES_NOT_EXIST),
            req("env", SelectorOperator.EXISTS),
            req("zone", SelectorOperator.NOT_IN, "z1"),
        ],
    )
    assert label_selector_to_string(selector) == "app=web,tier in (a,b),!legacy,env,zone notin (z1)"


def test_empty_selectors_match_everything() -> None:
    assert label_selector_to_string(None) == ""
    assert label_selector_to_string(LabelSelector()) == ""
    assert matches_label_selector({}, None)
    assert matches_label_selector({"a": "b"}, LabelSelector())


@pytest.mark.parametrize(
    ("requirement", "labels", "expected"),
    [
        (req("tier", SelectorOperator.IN, "a", "b"), {"tier": "a"}, True),
        (req("tier", SelectorOperator.IN, "a", "b"), {"tier": "c"}, False),
        (req("tier", SelectorOperator.IN, "a", "b"), {}, False),
        (req("tier", SelectorOperator.NOT_IN, "a"), {}, True),  # absent key satisfies NotIn
        (req("tier", SelectorOperator.NOT_IN, "a"), {"tier": "a"}, False),
        (req("tier", SelectorOperator.NOT_IN, "a"), {"tier": "b"}, True),
        (req("tier", SelectorOperator.EXISTS), {"tier": ""}, True),
        (req("tier", SelectorOperator.EXISTS), {}, False),
        (req("tier", SelectorOperator.DOES_NOT_EXIST), {}, True),
        (req("tier", SelectorOperator.DOES_NOT_EXIST), {"tier": "a"}, False),
        (req("tier", SelectorOperator.IN, ""), {"tier": ""}, True),
    ],
)
def test_requirement_semantics(requirement: LabelSelectorRequirement, labels: dict[str, str], expected: bool) -> None:
    selector = LabelSelector(matchExpressions=[requirement])
    assert matches_label_selector(labels, selector) is expected
    assert reference_matches(label_selector_to_string(selector), labels) is expected


def test_match_labels_need_every_pair() -> None:
    selector = LabelSelector(matchLabels={"app": "web", "tier": "front"})
    assert matches_label_selector({"app": "web", "tier": "front", "x": "y"}, selector)
    assert not matches_label_selector({"app": "web"}, selector)
    assert not matches_label_selector({"app": "web", "tier": "back"}, selector)


@pytest.mark.parametrize(
    "requirement",
    [
        req("tier", SelectorOperator.IN),
        req("tier", SelectorOperator.NOT_IN),
        req("tier", SelectorOperator.EXISTS, "a"),
        req("tier", SelectorOperator.DOES_NOT_EXIST, "a"),
    ],
)
def test_malformed_requirements_are_rejected(requirement: LabelSelectorRequirement) -> None:
    selector = LabelSelector(matchExpressions=[requirement])
    with pytest.raises(SelectionError, match="'tier'"):
        matches_label_selector({}, selector)
    with pytest.raises(SelectionError, match="'tier'"):
        label_selector_to_string(selector)
    with pytest.raises(SelectionError):
        eligible([pod("a")], Target(labelSelector=selector))


@pytest.mark.parametrize(
    "selector",
    [
        LabelSelector(matchLabels={"bad key": "x"}),
        LabelSelector(matchLabels={"app": "a,b"}),
        LabelSelector(matchLabels={"app": "x" * 64}),
        LabelSelector(matchLabels={"-app": "x"}),
        LabelSelector(matchLabels={"Example.com/app": "x"}),
        LabelSelector(matchLabels={"/app": "x"}),
        LabelSelector(matchExpressions=[req("tier", SelectorOperator.IN, "a)")]),
        LabelSelector(matchExpressions=[req("!tier", SelectorOperator.EXISTS)]),
    ],
)
def test_selector_string_refuses_invalid_label_syntax(selector: LabelSelector) -> None:
    with pytest.raises(SelectionError, match="invalid label"):
        label_selector_to_string(selector)


# A reference reading of the API server's selector syntax (k8s.io/apimachinery/pkg/labels), to check that the
# string form selects exactly what matches_label_selector matches.


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        current += char
    parts.append(current)
    return parts


def _parse_requirement(text: str) -> Callable[[Mapping[str, str]], bool]:
    if match := re.fullmatch(r"\s*(\S+)\s+(in|notin)\s+\(([^()]*)\)\s*", text):
        key, op, values = match[1], match[2], {v.strip() for v in match[3].split(",")}
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if match := re.fullmatch(r"\s*([^\s=!(),]+)\s*(==|=|!=)\s*([^\s=!(),]*)\s*", text):
        key, op, value = match[1], match[2], match[3]
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if match := re.fullmatch(r"\s*!([^\s=!(),]+)\s*", text):
        key = match[1]
        return lambda labels: key not in labels
    if match := re.fullmatch(r"\s*([^\s=!(),]+)\s*", text):
        key = match[1]
        return lambda labels: key in labels
    raise AssertionError(f"the API server would not parse {text!r}")


def reference_matches(selector: str, labels: Mapping[str, str]) -> bool:
    if not selector:
        return True
    return all(_parse_requirement(part)(labels) for part in _split_top_level(selector))


LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,8}[A-Za-z0-9])?"
LABEL_KEYS = st.from_regex(
    rf"([a-z0-9]([-a-z0-9]{{0,4}}[a-z0-9])?(\.[a-z]{{1,4}}){{0,2}}/)?{LABEL_NAME}", fullmatch=True
)
LABEL_VALUES = st.just("") | st.from_regex(LABEL_NAME, fullmatch=True)


@st.composite
def selectors_and_labels(draw: st.DrawFn) -> tuple[LabelSelector, dict[str, str]]:
    """A selector and labels drawn from a small shared pool of keys and values, so they often interact."""
    keys = st.sampled_from(draw(st.lists(LABEL_KEYS, min_size=1, max_size=4, unique=True)))
    values = st.sampled_from(draw(st.lists(LABEL_VALUES, min_size=1, max_size=4, unique=True)))
    set_based = st.sampled_from([SelectorOperator.IN, SelectorOperator.NOT_IN])
    existence = st.sampled_from([SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST])
    requirement = st.builds(
        LabelSelectorRequirement, key=keys, operator=set_based, values=st.lists(values, min_size=1, max_size=3)
    ) | st.builds(LabelSelectorRequirement, key=keys, operator=existence)
    selector = draw(
        st.builds(
            LabelSelector,
            matchLabels=st.dictionaries(keys, values, max_size=3),
            matchExpressions=st.lists(requirement, max_size=4),
        )
    )
    labels = draw(st.dictionaries(keys, values, max_size=4))
    return selector, labels


@settings(max_examples=150, deadline=None)
@given(selectors_and_labels())
def test_selector_string_selects_what_the_matcher_matches(case: tuple[LabelSelector, dict[str, str]]) -> None:
    selector, labels = case
    assert reference_matches(label_selector_to_string(selector), labels) == matches_label_selector(labels, selector)


@FAST
@given(selectors_and_labels())
def test_eligible_agrees_with_the_matcher(case: tuple[LabelSelector, dict[str, str]]) -> None:
    selector, labels = case
    chosen = eligible([pod("a", labels=labels)], Target(labelSelector=selector))
    assert bool(chosen) == matches_label_selector(labels, selector)


# --- namespaces ----------------------------------------------------------------------------------------------

PROTECTED = frozenset({"kube-system", "kube-public", "coordinator-system"})


@pytest.mark.parametrize("require_opt_in", [True, False])
def test_protected_namespaces_are_always_refused(require_opt_in: bool) -> None:
    allowed, reason = namespace_allowed(
        "kube-system", protected=PROTECTED, namespace_labels={OPT_IN_LABEL: "true"}, require_opt_in=require_opt_in
    )
    assert not allowed
    assert "protected" in reason
    assert "kube-system" in reason


@pytest.mark.parametrize(
    ("labels", "require_opt_in", "expected"),
    [
        ({OPT_IN_LABEL: "true"}, True, True),
        ({}, True, False),
        ({OPT_IN_LABEL: "false"}, True, False),
        ({OPT_IN_LABEL: "True"}, True, False),  # label values are case-sensitive; only "true" opts in
        ({OPT_IN_LABEL: ""}, True, False),
        ({}, False, True),
        ({OPT_IN_LABEL: "false"}, False, True),
    ],
)
def test_opt_in_label(labels: dict[str, str], require_opt_in: bool, expected: bool) -> None:
    allowed, reason = namespace_allowed(
        "shop", protected=PROTECTED, namespace_labels=labels, require_opt_in=require_opt_in
    )
    assert allowed is expected
    assert "'shop'" in reason
    if require_opt_in:
        assert OPT_IN_LABEL in reason


def test_custom_opt_in_label() -> None:
    allowed, _ = namespace_allowed(
        "shop", protected=frozenset(), namespace_labels={"x/chaos": "true"}, require_opt_in=True, opt_in_label="x/chaos"
    )
    assert allowed
    assert OPT_IN_LABEL == "chaos.coordinator.dev/allow"


@FAST
@given(
    st.sampled_from(["kube-system", "shop", "default"]),
    st.dictionaries(st.just(OPT_IN_LABEL), st.text()),
    st.booleans(),
)
def test_namespace_decision_properties(namespace: str, labels: dict[str, str], require_opt_in: bool) -> None:
    allowed, reason = namespace_allowed(
        namespace, protected=PROTECTED, namespace_labels=labels, require_opt_in=require_opt_in
    )
    assert reason
    if namespace in PROTECTED:
        assert not allowed
    elif require_opt_in:
        assert allowed == (labels.get(OPT_IN_LABEL) == "true")
    else:
        assert allowed


def test_selection_errors_name_the_scenario_field() -> None:
    """A value or selector that only a parameter supplied reaches selection unchecked by admission: its error
    names the field, as every other run error does."""
    with pytest.raises(SelectionError, match=r"^spec\.value: selection mode 'fixed' needs a value at least 1, got 0"):
        select_targets([], "fixed", 0)
    selector = LabelSelector(matchLabels={"app": "not a label value!"})
    with pytest.raises(SelectionError, match=r"^spec\.target\.labelSelector: invalid label value 'not a label value!'"):
        label_selector_to_string(selector)
