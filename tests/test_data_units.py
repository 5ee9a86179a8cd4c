"""Pure parts of engine.data: symbol mapping, gap finding, paging rules, exact CSV text, date parsing."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.data.cli import parse_time_ms
from engine.data.csvfiles import (
    PartialFileError,
    PartialMeta,
    format_value,
    read_partial,
    write_candles_atomic,
)
from engine.data.gaps import Gap, find_gaps
from engine.data.paging import fetch_range, missing_ranges, split_windows
from engine.data.symbols import (
    SymbolError,
    from_ccxt_symbol,
    to_bingx_symbol,
    to_ccxt_symbol,
)
from engine.market.candle import Candle, read_candles_csv

M = 60_000


def c(t: int, price: float = 1.0) -> Candle:
    return Candle(t, price, price, price, price, 1.0)


def test_symbol_mapping_both_ways() -> None:
    assert to_ccxt_symbol("BTC-USDT") == "BTC/USDT:USDT"
    assert to_ccxt_symbol("1000pepe-usdt") == "1000PEPE/USDT:USDT"
    assert to_ccxt_symbol("ETH/USDT:USDT") == "ETH/USDT:USDT"
    assert from_ccxt_symbol("BTC/USDT:USDT") == "BTC-USDT"
    assert to_bingx_symbol("sol/usdt:usdt") == "SOL-USDT" and to_bingx_symbol("SOL-USDT") == "SOL-USDT"
    with pytest.raises(SymbolError, match="spot"):
        to_ccxt_symbol("BTC/USDT")
    with pytest.raises(SymbolError, match="settled in BTC"):
        from_ccxt_symbol("BTC/USD:BTC")
    with pytest.raises(SymbolError):
        to_ccxt_symbol("BTCUSDT")


def test_find_gaps_counts_leading_inner_and_trailing_holes() -> None:
    times = [2 * M, 3 * M, 7 * M]
    assert find_gaps(times, 0, 10 * M, M) == [Gap(0, 2 * M, 2), Gap(4 * M, 7 * M, 3), Gap(8 * M, 10 * M, 2)]
    assert find_gaps(range(0, 10 * M, M), 0, 10 * M, M) == []
    assert find_gaps([5 * M + 1, 20 * M], 0, 2 * M, M) == [Gap(0, 2 * M, 2)]  # off-grid / outside ignored
    assert "2021-04-25 04:01 -> 08:44 UTC (284 candles missing)" == Gap(
        1619323260000, 1619323260000 + 284 * M, 284).describe()


def test_missing_ranges_merge_small_holes_into_pages() -> None:
    known = [t for t in range(0, 100 * M, M) if t not in (10 * M, 12 * M, 80 * M)]
    assert missing_ranges(known, 0, 100 * M, M, page_limit=50) == [(10 * M, 13 * M), (80 * M, 81 * M)]
    assert missing_ranges([], 0, 5 * M, M, 1000) == [(0, 5 * M)]
    assert missing_ranges(range(0, 5 * M, M), 0, 5 * M, M, 1000) == []
    assert split_windows([(0, 25 * M)], M, 10) == [(0, 10 * M), (10 * M, 20 * M), (20 * M, 25 * M)]


async def test_paging_survives_newest_first_capped_pages_and_real_gaps() -> None:
    """An exchange that answers newest-first and silently caps pages at 7 rows, with a hole in its data."""
    data = {t: c(t) for t in range(0, 100 * M, M) if not 40 * M <= t < 55 * M}
    calls: list[tuple[int, int]] = []

    async def fetch(lo: int, hi: int, limit: int) -> list[Candle]:
        calls.append((lo, hi))
        rows = [data[t] for t in sorted(data) if lo <= t < hi]
        return list(reversed(rows[-min(limit, 7):]))  # the newest 7, newest first

    got = await fetch_range(fetch, 0, 100 * M, M, page_limit=20)
    assert [x.open_time_ms for x in got] == sorted(data)
    assert len(calls) < 40


def test_format_value_is_the_shortest_exact_text() -> None:
    assert format_value(56777.0) == "56777"
    assert format_value(0.00000108) == "0.00000108"
    assert format_value(42.089461) == "42.089461"
    assert format_value(1e22) == "10000000000000000000000"
    assert format_value(-0.0) == "0" and format_value(0.0) == "0"


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False))
def test_format_value_round_trips(value: float) -> None:
    text = format_value(value)
    assert float(text) == value and "e" not in text.lower()


def test_atomic_write_is_deterministic_and_readable(tmp_path: Path) -> None:
    rows = [Candle(1618951320000, 56738.76, 56840.3, 56733.23, 56813.98, 50.9752)]
    a, b = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    write_candles_atomic(a, rows)
    write_candles_atomic(b, rows)
    assert a.read_bytes() == b.read_bytes()  # mtime 0: equal content, equal file
    assert read_candles_csv(a) == rows
    with gzip.open(a, "rt") as fh:
        assert fh.read() == ("open_time_ms,open,high,low,close,volume\n"
                             "1618951320000,56738.76,56840.3,56733.23,56813.98,50.9752\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_partial_with_a_bad_inner_row_is_refused(tmp_path: Path) -> None:
    meta = PartialMeta("bingx", "BTC-USDT", "1m")
    path = tmp_path / "x.partial"
    path.write_text(meta.line() + "60000,1,1,1,1,1\nGARBAGE\n120000,1,1,1,1,1\n")
    with pytest.raises(PartialFileError, match=":3: unreadable row"):
        read_partial(path, meta)
    path.write_text(meta.line() + "60000,1,1,1,1,1\n120000,1,1")
    assert [x.open_time_ms for x in read_partial(path, meta)] == [60000]


def test_parse_time_ms() -> None:
    assert parse_time_ms("2021-04-20") == 1618876800000
    assert parse_time_ms("2021-04-20T20:42") == 1618951320000
    assert parse_time_ms("2021-04-20T20:42:00Z") == 1618951320000
    assert parse_time_ms("2021-04-20T22:42+02:00") == 1618951320000
    assert parse_time_ms("1618951320000") == 1618951320000
    with pytest.raises(ValueError, match="not a date"):
        parse_time_ms("yesterday")
