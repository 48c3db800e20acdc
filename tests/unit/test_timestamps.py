"""The one timestamp format: RFC 3339 in UTC with a ``Z``, written to the microsecond or to the second."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain.timestamps import format_iso, format_iso_seconds, now_iso, now_iso_seconds, parse_iso

MOMENT = datetime(2026, 12, 6, 10, 44, 26, 123456, tzinfo=UTC)


def test_formats_in_utc_with_a_z() -> None:
    assert format_iso(MOMENT) == "2026-12-06T10:44:26.123456Z"
    assert format_iso_seconds(MOMENT) == "2026-12-06T10:44:26Z"
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    assert format_iso(plus_two) == "2026-12-06T10:44:26.123456Z"


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        format_iso(datetime(2026, 12, 6))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="naive datetime"):
        format_iso_seconds(datetime(2026, 12, 6))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T10:44:26.123456Z", MOMENT),
        ("2026-12-06T10:44:26Z", MOMENT.replace(microsecond=0)),
        ("2026-12-06T12:44:26+02:00", MOMENT.replace(microsecond=0)),
        ("2026-12-06T10:44:26", MOMENT.replace(microsecond=0)),  # no zone: UTC
    ],
)
def test_parse_gives_an_aware_time(text: str, expected: datetime) -> None:
    parsed = parse_iso(text)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_refuses_what_is_not_a_time() -> None:
    with pytest.raises(ValueError, match="isoformat"):
        parse_iso("yesterday")


def test_now_is_in_both_precisions() -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now_iso())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", now_iso_seconds())
    assert parse_iso(now_iso()) >= before
    assert parse_iso(now_iso_seconds()) >= before


@given(st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)))  # noqa: DTZ001 - hypothesis bounds are naive
def test_format_and_parse_round_trip(moment: datetime) -> None:
    assert parse_iso(format_iso(moment)) == moment
    assert parse_iso(format_iso_seconds(moment)) == moment.replace(microsecond=0)
