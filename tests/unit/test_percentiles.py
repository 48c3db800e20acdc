"""The one nearest-rank percentile: the verdict, the report and the store's SQL offset all read it."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordinator.domain.percentiles import percentile, percentile_rank


@pytest.mark.parametrize(("count", "rank"), [(0, 1), (1, 1), (10, 10), (20, 19), (100, 95), (101, 96)])
def test_p95_is_the_nearest_rank(count: int, rank: int) -> None:
    assert percentile_rank(count) == rank


def test_percentile_of_values() -> None:
    assert percentile([], 95) is None
    assert percentile([5.0, 1.0, 3.0]) == 5.0
    assert percentile([float(i) for i in range(1, 21)]) == 19.0
    assert percentile([10, 20, 30, 40], 50) == 20
    assert percentile(range(1, 101), 95) == 95


def test_the_rank_is_exact_where_a_float_product_rounds_up() -> None:
    # 0.07 * 100 is 7.000000000000001 in floats: a float ceil would pick the 8th value.
    assert math.ceil(7 / 100 * 100) == 8
    assert percentile_rank(100, 7) == 7
    assert percentile(range(1, 101), 7) == 7


@given(st.integers(min_value=1, max_value=500), st.integers(min_value=1, max_value=100))
def test_the_rank_is_the_smallest_covering_percent_of_the_values(count: int, percent: int) -> None:
    rank = percentile_rank(count, percent)
    assert 1 <= rank <= count
    assert rank * 100 >= percent * count
    assert rank == 1 or (rank - 1) * 100 < percent * count
