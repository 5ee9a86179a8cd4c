"""The nearest-rank percentile behind the README's p50 / p99 figures (``bench/bench_latency.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_latency import percentile  # noqa: E402


@pytest.mark.parametrize(("n", "p50", "p99"), [(1, 1, 1), (2, 1, 2), (78, 39, 78), (100, 50, 99), (101, 51, 100),
                                                (200, 100, 198), (1000, 500, 990)])
def test_percentile_is_the_value_at_rank_ceil_q_n(n: int, p50: int, p99: int) -> None:
    values = list(range(1, n + 1))  # value == rank
    assert (percentile(values, 0.50), percentile(values, 0.99)) == (p50, p99)


def test_percentile_of_nothing_is_nan() -> None:
    assert percentile([], 0.99) != percentile([], 0.99)
