"""Cross-exchange alignment of candle series on common timestamps within a tolerance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.align import align_candles
from engine.market.candle import Candle

M = 60_000


def c(t: int, close: float = 1.0) -> Candle:
    return Candle(t, close, close, close, close, 1.0)


def test_exact_timestamps_keep_only_the_common_minutes() -> None:
    a = [c(t * M, t) for t in range(10)]
    b = [c(t * M, 100 + t) for t in range(10) if t not in (3, 4)]
    out = align_candles({"bingx": a, "binance": b})
    assert out.timestamps == [t * M for t in range(10) if t not in (3, 4)]
    assert out.closes("binance") == [100 + t for t in range(10) if t not in (3, 4)]
    assert out.closes("bingx") == [t for t in range(10) if t not in (3, 4)]
    assert out.unmatched == {"bingx": 2, "binance": 0}


def test_offsets_within_the_tolerance_are_matched_and_beyond_it_dropped() -> None:
    ref = [c(t * M) for t in range(5)]
    shifted = [c(0 + 400), c(M - 900), c(2 * M + 1500), c(3 * M), c(4 * M - 2000)]
    out = align_candles({"ref": ref, "other": shifted}, tolerance_ms=1000)
    assert out.timestamps == [0, M, 3 * M]
    assert [x.open_time_ms for x in out.series["other"]] == [400, M - 900, 3 * M]
    assert out.unmatched["other"] == 2


def test_each_candle_is_used_once_and_the_nearer_minute_gets_it() -> None:
    ref = [c(0), c(M)]
    other = [c(40_000)]  # within 40 s of both reference minutes, nearer to the second
    out = align_candles({"ref": ref, "other": other}, tolerance_ms=40_000)
    assert out.timestamps == [M]
    out = align_candles({"ref": [c(0), c(M)], "other": [c(10_000), c(50_000)]}, tolerance_ms=30_000)
    assert out.timestamps == [0, M] and [x.open_time_ms for x in out.series["other"]] == [10_000, 50_000]


def test_three_series_unsorted_input_and_reference_choice() -> None:
    a = [c(t * M) for t in (4, 2, 0, 1, 3)]
    b = [c(t * M + 5) for t in range(5) if t != 1]
    cc = [c(t * M - 5) for t in range(5) if t != 3]
    out = align_candles({"a": a, "b": b, "c": cc}, tolerance_ms=10, reference="b")
    assert out.reference == "b" and out.timestamps == [0 + 5, 2 * M + 5, 4 * M + 5]
    assert [x.open_time_ms for x in out.series["a"]] == [0, 2 * M, 4 * M]
    frame = out.to_frame()
    assert list(frame.index) == out.timestamps and frame[("c", "close")].tolist() == [1.0, 1.0, 1.0]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tolerance"):
        align_candles({"a": []}, tolerance_ms=-1)
    with pytest.raises(ValueError, match="reference"):
        align_candles({"a": []}, reference="z")
    with pytest.raises(ValueError):
        align_candles({})
    assert len(align_candles({"a": [c(0)], "b": []})) == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 500), unique=True), st.lists(st.integers(0, 500), unique=True),
       st.integers(-25_000, 25_000), st.integers(0, 29_000))
def test_alignment_properties(ref_minutes: list[int], other_minutes: list[int], shift: int, tol: int) -> None:
    ref = [c(m * M) for m in ref_minutes]
    other = [c(m * M + shift) for m in other_minutes]
    out = align_candles({"r": ref, "o": other}, tolerance_ms=tol)
    pairs = list(zip(out.series["r"], out.series["o"]))
    assert all(abs(r.open_time_ms - o.open_time_ms) <= tol for r, o in pairs)
    assert len({o.open_time_ms for _, o in pairs}) == len(pairs)  # one-to-one
    assert [r.open_time_ms for r, _ in pairs] == sorted(r.open_time_ms for r, _ in pairs)
    # With tolerance below half a minute, exactly the common minutes survive when the shift fits.
    expected = sorted(set(ref_minutes) & set(other_minutes)) if abs(shift) <= tol else []
    assert out.timestamps == [m * M for m in expected]
