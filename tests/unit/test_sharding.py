"""--selector: kubectl label-selector syntax, parsed once, matched against each object's labels."""

from __future__ import annotations

import re

import pytest

from coordinator.domain.sharding import Operator, Requirement, parse_shard_selector


def test_empty_selector_matches_everything() -> None:
    selector = parse_shard_selector("  ")
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
    assert parse_shard_selector(text).matches(labels) is expected


def test_parsed_form_is_canonical_and_round_trips() -> None:
    selector = parse_shard_selector(" team in (shop, payments , shop) , !legacy,tier!=critical ")
    assert selector.requirements == (
        Requirement("team", Operator.IN, ("payments", "shop")),
        Requirement("legacy", Operator.DOES_NOT_EXIST),
        Requirement("tier", Operator.NOT_EQUALS, ("critical",)),
    )
    assert str(selector) == "team in (payments,shop),!legacy,tier!=critical"
    assert parse_shard_selector(str(selector)) == selector


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
        parse_shard_selector(text)
