"""Label selectors: kubectl string syntax (--selector) and the structured form (labelSelector), parsed into one form."""

from __future__ import annotations

import re

import pytest

from coordinator.api.models import LabelSelector, LabelSelectorRequirement, SelectorOperator
from coordinator.domain.labelselectors import Operator, Requirement, parse_selector, selector_from_model


def test_empty_selector_matches_everything() -> None:
    selector = parse_selector("  ")
    assert selector.everything
    assert selector.matches({})
    assert selector.matches(None)
    assert selector.matches({"any": "thing"})


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("shard=a", {"shard": "a"}, True),
        ("shard=a", {"shard": "b"}, False),
        ("shard=a", {}, False),
        ("shard==a", {"shard": "a"}, True),
        ("shard!=a", {"shard": "b"}, True),
        ("shard!=a", {}, True),
        ("shard!=a", {"shard": "a"}, False),
        ("shard", {"shard": ""}, True),
        ("shard", {}, False),
        ("!shard", {}, True),
        ("!shard", {"shard": "a"}, False),
        ("team in (shop, payments)", {"team": "payments"}, True),
        ("team in (shop,payments)", {"team": "search"}, False),
        ("team in (shop,payments)", {}, False),
        ("team notin (shop,payments)", {"team": "search"}, True),
        ("team notin (shop,payments)", {}, True),
        ("team notin (shop,payments)", {"team": "shop"}, False),
        ("team in (shop,payments),tier!=critical", {"team": "shop", "tier": "low"}, True),
        ("team in (shop,payments),tier!=critical", {"team": "shop", "tier": "critical"}, False),
        ("chaos.coordinator.dev/shard=east", {"chaos.coordinator.dev/shard": "east"}, True),
        ("shard=", {"shard": ""}, True),
    ],
)
def test_matching(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


def test_parsed_form_is_canonical_and_round_trips() -> None:
    selector = parse_selector(" team in (shop, payments , shop) , !legacy,tier!=critical ")
    assert selector.requirements == (
        Requirement("team", Operator.IN, ("payments", "shop")),
        Requirement("legacy", Operator.DOES_NOT_EXIST),
        Requirement("tier", Operator.NOT_EQUALS, ("critical",)),
    )
    assert str(selector) == "team in (payments,shop),!legacy,tier!=critical"
    assert parse_selector(str(selector)) == selector


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("shard=a,", "empty requirement"),
        ("team in (a,b", "unbalanced '('"),
        ("team in a,b)", "unbalanced ')'"),
        ("team in ()", "at least one value"),
        ("shard=a b", "not a label requirement"),
        ("-bad=a", "not a valid label key"),
        ("shard=-bad", "not a valid label value"),
        ("Upper.Case/key=a", "not a valid label key"),
        (f"shard={'x' * 64}", "not a valid label value"),
    ],
)
def test_bad_selectors_name_the_part(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        parse_selector(text)


# The structured form (a scenario's spec.target.labelSelector) reads into the same Selector.


def _expression(key: str, operator: SelectorOperator, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=list(values))


def test_the_structured_form_reads_into_the_same_selector_as_its_string() -> None:
    model = LabelSelector(
        matchLabels={"team": "shop", "app": "web"},
        matchExpressions=[
            _expression("tier", SelectorOperator.NOT_IN, "critical", "b", "critical"),
            _expression("legacy", SelectorOperator.DOES_NOT_EXIST),
            _expression("zone", SelectorOperator.IN, "", "a"),
            _expression("env", SelectorOperator.EXISTS),
        ],
    )
    selector = selector_from_model(model)
    assert selector.requirements == (
        Requirement("app", Operator.EQUALS, ("web",)),
        Requirement("team", Operator.EQUALS, ("shop",)),
        Requirement("tier", Operator.NOT_IN, ("b", "critical")),
        Requirement("legacy", Operator.DOES_NOT_EXIST),
        Requirement("zone", Operator.IN, ("", "a")),
        Requirement("env", Operator.EXISTS),
    )
    assert str(selector) == "app=web,team=shop,tier notin (b,critical),!legacy,zone in (,a),env"
    assert parse_selector(str(selector)) == selector
    assert selector.matches({"app": "web", "team": "shop", "zone": "", "env": "x"})
    assert not selector.matches({"app": "web", "team": "shop", "zone": "", "env": "x", "tier": "b"})


def test_no_structured_selector_selects_everything() -> None:
    assert selector_from_model(None).everything
    assert selector_from_model(LabelSelector()).everything


@pytest.mark.parametrize(
    ("model", "complaint"),
    [
        (LabelSelector(matchExpressions=[_expression("tier", SelectorOperator.IN)]), "In needs values"),
        (LabelSelector(matchExpressions=[_expression("tier", SelectorOperator.EXISTS, "a")]), "takes no values"),
        (LabelSelector(matchLabels={"bad key": "x"}), "invalid label key 'bad key'"),
        (LabelSelector(matchLabels={"app": "x" * 64}), "invalid label value"),
        (LabelSelector(matchExpressions=[_expression("tier", SelectorOperator.IN, "a)")]), "invalid label value 'a)'"),
    ],
)
def test_bad_structured_selectors_name_the_key(model: LabelSelector, complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        selector_from_model(model)
