"""Go-style durations: parsing, formatting, and that the two agree."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.api.durations import format_duration, parse_duration
from coordinator.api.models import DURATION_PATTERN

FAST = settings(max_examples=60, deadline=None)

UNIT_SECONDS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60), "h": Fraction(3600)}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        ("0.1h", 360.0),
        ("1h0m0.5s", 3600.5),
        ("1m30s500ms", 90.5),
        ("2s2s", 4.0),  # Go adds repeated components up, and so does the CRD pattern allow them
        ("1.25ms", 0.00125),
    ],
)
def test_parse_examples(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "10 minutes",
        "",
        " ",
        "5",
        "0",
        "1.5",
        "-1s",
        "+1s",
        "1d",
        "5S",
        "1.s",
        ".5s",
        "1h 30m",
        " 5s",
        "5s\n",
        "s",
        "ms",
        "1e3s",
        "\u0661s",  # a non-ASCII digit (ARABIC-INDIC DIGIT ONE)
        "1us",
    ],
)
def test_parse_rejects_bad_input_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "hint"),
    [("", "empty"), ("5", "missing unit"), ("-1s", "negative"), ("10 minutes", "spaces")],
)
def test_parse_error_explains(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match=hint):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0, "0s"),
        (0.25, "250ms"),
        (0.001, "1ms"),
        (0.0004, "0s"),  # below the resolution: rounded to the nearest millisecond
        (1, "1s"),
        (1.5, "1.5s"),
        (59.999, "59.999s"),
        (60, "1m"),
        (90, "1m30s"),
        (60.25, "1m0.25s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (5400.5, "1h30m0.5s"),
        (3601, "1h1s"),
        (90000, "25h"),
    ],
)
def test_format_examples(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, -0.001, math.nan, math.inf, -math.inf])
def test_format_rejects_impossible_values(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration(seconds)


@FAST
@given(st.integers(min_value=0, max_value=10**10))
def test_whole_milliseconds_round_trip(millis: int) -> None:
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == seconds


@FAST
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_is_valid_compact_and_canonical(seconds: float) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(DURATION_PATTERN, text)  # the CRD schema accepts it
    assert text == "0s" or not re.search(r"(?<![0-9.])0+(h|m(?!s)|ms|s)", text)  # no zero components
    assert format_duration(parse_duration(text)) == text  # a fixed point
    assert abs(parse_duration(text) - seconds) <= 0.0005 + 1e-9 * seconds  # within rounding to the millisecond


components = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=10**6),
        st.one_of(st.none(), st.integers(min_value=0, max_value=10**4)),
        st.sampled_from(list(UNIT_SECONDS)),
    ),
    min_size=1,
    max_size=5,
)


@FAST
@given(components)
def test_parse_adds_components_up_exactly(parts: list[tuple[int, int | None, str]]) -> None:
    text = "".join(f"{whole}{'' if frac is None else f'.{frac}'}{unit}" for whole, frac, unit in parts)
    expected = sum(
        (Fraction(f"{whole}{'' if frac is None else f'.{frac}'}") * UNIT_SECONDS[unit] for whole, frac, unit in parts),
        start=Fraction(0),
    )
    assert re.fullmatch(DURATION_PATTERN, text)
    assert parse_duration(text) == float(expected)


@FAST
@given(st.text(max_size=12))
def test_parse_accepts_exactly_the_crd_pattern(text: str) -> None:
    if re.fullmatch(DURATION_PATTERN, text):
        assert parse_duration(text) >= 0
    else:
        with pytest.raises(ValueError, match="invalid duration"):
            parse_duration(text)
