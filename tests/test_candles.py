"""1m candles from streams, validation, gaps and backfill, warm-up, 5m aggregation."""

from __future__ import annotations

import csv
import gzip
import json
import logging
from pathlib import Path

import pytest

from engine.market.aggregate import FIVE_MINUTES_MS, CandleAggregator, context_is_usable
from engine.market.builders import KlineCandleBuilder, TradeCandleBuilder
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv
from engine.market.events import KlineUpdate, TradeTick
from engine.market.feed import MarketFeed
from engine.market.stream import CandleStream
from engine.market.validation import ValidationRules, check_candle

MARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market"
T0 = 1_700_000_000_000 - 1_700_000_000_000 % FIVE_MINUTES_MS  # a 5m-aligned time
M = ONE_MINUTE_MS


def candle(i: int, close: float = 100.0, *, base: int = T0, volume: float = 1.0) -> Candle:
    return Candle(base + i * M, close, close * 1.001, close * 0.999, close, volume)


class Sink:
    """A CandleSink that records what reaches it."""

    def __init__(self) -> None:
        self.live: list[Candle] = []
        self.warmup: list[Candle] = []

    def on_candle(self, c: Candle) -> None:
        self.live.append(c)

    def on_warmup_candle(self, c: Candle) -> None:
        self.warmup.append(c)


class ListSource:
    """A CandleSource serving candles from memory (the REST client's interface), recording requests."""

    def __init__(self, candles: list[Candle], *, fail: bool = False) -> None:
        self.candles = candles
        self.fail = fail
        self.requests: list[tuple[str, int, int]] = []

    async def fetch_candles(self, symbol: str, start_ms: int, end_ms: int) -> list[Candle]:
        self.requests.append((symbol, start_ms, end_ms))
        if self.fail:
            raise ConnectionError("exchange unreachable")
        # newest first, like BingX REST klines: the feed must sort
        return [c for c in reversed(self.candles) if start_ms <= c.open_time_ms < end_ms]


# -- validation -------------------------------------------------------------------------------

RULES = ValidationRules()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (Candle(T0, 0.0, 1.0, 0.0, 1.0, 1.0), "non_positive_price"),
        (Candle(T0, -1.0, 1.0, -1.0, 1.0, 1.0), "non_positive_price"),
        (Candle(T0, 1.0, 0.9, 1.1, 1.0, 1.0), "inverted_prices"),  # high < low
        (Candle(T0, 1.2, 1.1, 0.9, 1.0, 1.0), "inverted_prices"),  # open above high
        (Candle(T0, 1.0, 1.1, 0.9, 0.8, 1.0), "inverted_prices"),  # close below low
        (Candle(T0, 1.0, 1.1, 0.9, 1.0, -5.0), "negative_volume"),
        (Candle(T0, float("nan"), 1.1, 0.9, 1.0, 1.0), "non_finite"),
        (Candle(T0 + 1, 1.0, 1.1, 0.9, 1.0, 1.0), "off_grid_time"),
    ],
)
def test_check_candle_rejects_broken_values(bad: Candle, reason: str) -> None:
    result = check_candle(bad, None, RULES)
    assert result is not None and result.startswith(reason)


def test_check_candle_order_and_jumps() -> None:
    prev = candle(10, 100.0)
    assert check_candle(candle(11, 100.0), prev, RULES) is None
    assert check_candle(candle(10, 100.0), prev, RULES).startswith("duplicate_time")  # type: ignore[union-attr]
    assert check_candle(candle(9, 100.0), prev, RULES).startswith("out_of_order")  # type: ignore[union-attr]
    # 75% away from the previous close is the limit: 174.9 is a (wild but) real move, 176 is not
    assert check_candle(Candle(T0 + 11 * M, 100.0, 174.8, 100.0, 170.0, 1.0), prev, RULES) is None
    assert check_candle(Candle(T0 + 11 * M, 100.0, 176.0, 100.0, 170.0, 1.0), prev, RULES).startswith("absurd_jump")  # type: ignore[union-attr]
    assert check_candle(Candle(T0 + 11 * M, 1.0, 1.0, 1.0, 1.0, 1.0), prev, RULES).startswith("absurd_jump")  # type: ignore[union-attr]


def test_real_files_pass_validation_without_rejections() -> None:
    for name in ("ETC_USDT", "MATIC_USDT", "XZC_BTC"):  # the wildest wicks, and the gappiest file
        stream = CandleStream(name, log_gaps=False)
        candles = read_candles_csv(MARKET / f"{name}-1m.csv.gz")
        assert all(stream.accept(c) for c in candles), stream.stats.rejections_by_reason
        assert stream.stats.accepted == len(candles)
    assert stream.stats.gaps == 2208 and stream.stats.missing_minutes == 3913  # PROVENANCE.md for XZC_BTC


def test_stream_logs_rejections_counts_gaps_and_bounds_its_buffer(caplog: pytest.LogCaptureFixture) -> None:
    stream = CandleStream("BTC-USDT", maxlen=5)
    for i in range(10):
        assert stream.accept(candle(i))
    with caplog.at_level(logging.INFO, logger="engine.market.stream"):
        assert not stream.accept(Candle(T0 + 10 * M, 100.0, 99.0, 101.0, 100.0, 1.0))
        assert not stream.accept(candle(5))
        assert stream.accept(candle(13))  # 10 (rejected), 11 and 12 missing
    assert len(stream.buffer) == 5 and stream.buffer[-1].open_time_ms == T0 + 13 * M
    assert stream.stats.rejected == 2
    assert stream.stats.rejections_by_reason == {"inverted_prices": 1, "out_of_order": 1}
    assert stream.stats.gaps == 1 and stream.stats.missing_minutes == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("inverted_prices" in m for m in messages)
    assert any("out_of_order" in m for m in messages)
    assert any("3 minute(s) missing" in m for m in messages)
    assert all(getattr(r, "symbol", None) == "BTC-USDT" for r in caplog.records)


def test_identical_duplicate_is_rejected_quietly(caplog: pytest.LogCaptureFixture) -> None:
    stream = CandleStream("X")
    stream.accept(candle(0))
    with caplog.at_level(logging.INFO, logger="engine.market.stream"):
        assert not stream.accept(candle(0))
    assert stream.stats.rejected == 1
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


def test_stream_reanchors_after_consistent_jumps_but_not_after_a_single_bad_tick() -> None:
    stream = CandleStream("X")
    stream.accept(candle(0, 100.0))
    assert not stream.accept(candle(1, 1000.0))  # one bad print
    assert stream.accept(candle(2, 100.5))  # back to normal: the streak resets
    assert not stream.accept(candle(3, 300.0))
    assert not stream.accept(candle(4, 301.0))
    assert stream.accept(candle(5, 302.0))  # third consistent candle: a real repricing
    assert stream.last is not None and stream.last.close == 302.0
    assert stream.accept(candle(6, 303.0))


# -- 5m aggregation ---------------------------------------------------------------------------


def test_five_minute_bucket_values_and_completion_at_its_last_minute() -> None:
    agg = CandleAggregator()
    minutes = [
        Candle(T0 + 0 * M, 10, 12, 9, 11, 1),
        Candle(T0 + 1 * M, 11, 15, 10, 14, 2),
        Candle(T0 + 2 * M, 14, 14, 8, 9, 3),
        Candle(T0 + 3 * M, 9, 10, 9, 10, 4),
    ]
    for m in minutes:
        assert agg.update(m) == ()  # 10:00..10:03 closed: the 10:00 bucket is not complete
    done = agg.update(Candle(T0 + 4 * M, 10, 11, 10, 10.5, 5))  # 10:04 closes: complete
    assert done == (Candle(T0, 10, 15, 8, 10.5, 15),)


def test_five_minute_bucket_with_gaps_completes_when_a_later_bucket_arrives() -> None:
    agg = CandleAggregator()
    assert agg.update(candle(0, 10.0)) == ()
    assert agg.update(candle(2, 12.0)) == ()
    # 10:03, 10:04 missing; 10:09 (last minute of the next bucket) closes both buckets at once
    done = agg.update(candle(9, 13.0))
    assert [c.open_time_ms for c in done] == [T0, T0 + FIVE_MINUTES_MS]
    assert done[0].close == 12.0 and done[0].open == 10.0
    assert done[1].open == 13.0 and done[1].volume == 1.0


def test_five_minute_context_rule_10_03_and_10_04() -> None:
    """When 10:04 closes the 10:00 candle is usable; when 10:03 closes the latest usable is 09:55."""
    ten = T0 + 12 * FIVE_MINUTES_MS  # any 5m-aligned "10:00"
    c0955 = Candle(ten - FIVE_MINUTES_MS, 1, 1, 1, 1, 1)
    c1000 = Candle(ten, 1, 1, 1, 1, 1)
    assert context_is_usable(c0955, FIVE_MINUTES_MS, ten + 3 * M)
    assert not context_is_usable(c1000, FIVE_MINUTES_MS, ten + 3 * M)
    assert context_is_usable(c1000, FIVE_MINUTES_MS, ten + 4 * M)
    agg = CandleAggregator()
    completed: list[int] = []
    for i in range(-5, 5):  # 09:55 .. 10:04
        for c in agg.update(Candle(ten + i * M, 1, 1, 1, 1, 1)):
            completed.append(c.open_time_ms)
        if i == 3:
            assert completed == [ten - FIVE_MINUTES_MS]  # after 10:03: only 09:55
    assert completed == [ten - FIVE_MINUTES_MS, ten]  # after 10:04: 10:00 too


# -- builders -----------------------------------------------------------------------------------


def _bingx_klines(symbol: str) -> list[KlineUpdate]:
    updates = []
    with gzip.open(MARKET / "bingx" / "bingx-swap-ws-2025-10-24-BTC-USDT_ETH-USDT.jsonl.gz", "rt") as fh:
        for line in fh:
            message = json.loads(line)
            if message["category"] != "kline":
                continue  # other channels' raw text is sometimes truncated in the recording
            raw = json.loads(message["raw"])
            if raw.get("dataType") == f"{symbol}@kline_1m":
                for k in raw["data"]:
                    updates.append(
                        KlineUpdate(symbol, int(k["T"]), float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]))
                    )
    return updates


@pytest.mark.parametrize("symbol", ["BTC-USDT", "ETH-USDT"])
def test_kline_builder_on_real_bingx_pushes(symbol: str) -> None:
    updates = _bingx_klines(symbol)
    minutes = sorted({u.open_time_ms for u in updates})
    assert len(minutes) == 2  # the recording covers 17:37 and 17:38
    builder = KlineCandleBuilder(symbol)
    finals: list[Candle] = []
    for u in updates:
        finals.extend(builder.on_update(u))
    last_of_first = [u for u in updates if u.open_time_ms == minutes[0]][-1]
    assert finals == [Candle(minutes[0], last_of_first.open, last_of_first.high, last_of_first.low, last_of_first.close, last_of_first.volume)]
    # the 17:38 bar is still forming: final only once the minute plus grace is over
    assert builder.on_time(minutes[1] + M + builder.grace_ms - 1) == []
    closed = builder.on_time(minutes[1] + M + builder.grace_ms)
    assert [c.open_time_ms for c in closed] == [minutes[1]]


def test_kline_builder_drops_late_and_stale_updates() -> None:
    b = KlineCandleBuilder("X", grace_ms=2000)
    assert b.on_update(KlineUpdate("X", T0, 1, 2, 1, 2, 5)) == []
    b.on_time(T0 + M + 2000)  # finalised by the clock
    assert b.on_update(KlineUpdate("X", T0, 1, 3, 1, 3, 6)) == []  # too late: the bar was handed on
    assert b.late_updates == 1
    assert b.on_update(KlineUpdate("X", T0 + M, 2, 2, 2, 2, 1)) == []
    assert b.on_update(KlineUpdate("X", T0 + 1, 2, 2, 2, 2, 1)) == []  # off-grid: rejected
    assert b.on_update(KlineUpdate("Y", T0 + 2 * M, 2, 2, 2, 2, 1)) == []  # wrong symbol
    assert b.rejected == 2


def test_trade_builder_reproduces_real_binance_candles() -> None:
    """PROVENANCE.md: aggregating XRP_ETH trades by minute reproduces every non-empty candle exactly."""
    builder = TradeCandleBuilder("XRP-ETH")
    built: list[Candle] = []
    with gzip.open(MARKET / "XRP_ETH-trades.csv.gz", "rt") as fh:
        for row in csv.DictReader(fh):
            built.extend(builder.on_trade(TradeTick("XRP-ETH", float(row["price"]), float(row["amount"]), int(row["timestamp_ms"]))))
    built.extend(builder.on_time(10**15))
    expected = [c for c in read_candles_csv(MARKET / "XRP_ETH-1m.csv.gz") if c.volume > 0]
    assert len(built) == len(expected) == 2469
    for ours, theirs in zip(built, expected):
        assert ours.open_time_ms == theirs.open_time_ms
        assert (ours.open, ours.high, ours.low, ours.close) == (theirs.open, theirs.high, theirs.low, theirs.close)
        assert ours.volume == pytest.approx(theirs.volume, rel=1e-12)


def test_trade_builder_orders_by_exchange_time_and_drops_late_or_bad_trades() -> None:
    b = TradeCandleBuilder("X", grace_ms=1000)
    assert b.on_trade(TradeTick("X", 10.0, 1, T0 + 500)) == []
    assert b.on_trade(TradeTick("X", 9.0, 1, T0 + 100)) == []  # earlier exchange time: it is the open
    assert b.on_trade(TradeTick("X", 12.0, 2, T0 + 59_000)) == []
    assert b.on_trade(TradeTick("X", -1.0, 2, T0 + 59_100)) == []  # bad price: rejected
    assert b.rejected == 1
    done = b.on_trade(TradeTick("X", 11.0, 1, T0 + M + 10))
    assert done == [Candle(T0, 9.0, 12.0, 9.0, 12.0, 4.0)]
    assert b.on_trade(TradeTick("X", 50.0, 1, T0 + 30_000)) == []  # late for a final minute
    assert b.late_trades == 1
    assert b.on_time(T0 + 2 * M + 999) == []
    assert b.on_time(T0 + 2 * M + 1000) == [Candle(T0 + M, 11.0, 11.0, 11.0, 11.0, 1.0)]


# -- the async feed -----------------------------------------------------------------------------


def kline_of(c: Candle, symbol: str = "X") -> KlineUpdate:
    return KlineUpdate(symbol, c.open_time_ms, c.open, c.high, c.low, c.close, c.volume)


async def test_feed_backfills_a_gap_through_the_candle_source_before_the_new_candle() -> None:
    history = [candle(i, 100.0 + i) for i in range(20)]
    source = ListSource(history)
    sink = Sink()
    feed = MarketFeed("X", sink, source=source, warmup_candles=0)
    for i in (0, 1, 2, 7, 8):  # minutes 3..6 never arrive on the stream
        await feed.on_kline(kline_of(history[i]))
    await feed.on_clock(history[8].open_time_ms + M + 5_000)
    assert [c.open_time_ms for c in sink.live] == [c.open_time_ms for c in history[:9]]
    assert source.requests == [("X", T0 + 3 * M, T0 + 7 * M)]
    assert feed.backfilled == 4 and feed.stream.stats.gaps == 0


async def test_feed_backfill_is_chunked_and_survives_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    history = [candle(i) for i in range(2600)]
    source = ListSource(history)
    sink = Sink()
    feed = MarketFeed("X", sink, source=source, warmup_candles=0, backfill_chunk=1000)
    await feed.push_closed(history[0])
    await feed.push_closed(history[2599])
    assert len(source.requests) == 3  # 2598 missing minutes in chunks of 1000
    assert [c.open_time_ms for c in sink.live] == [c.open_time_ms for c in history]

    broken = ListSource([], fail=True)
    sink2 = Sink()
    feed2 = MarketFeed("X", sink2, source=broken, warmup_candles=0)
    await feed2.push_closed(history[0])
    with caplog.at_level(logging.WARNING, logger="engine.market.feed"):
        await feed2.push_closed(history[10])
    assert [c.open_time_ms for c in sink2.live] == [history[0].open_time_ms, history[10].open_time_ms]
    assert feed2.backfill_failures == 1 and feed2.stream.stats.missing_minutes == 9
    assert any("backfill" in r.getMessage() and "ConnectionError" in r.getMessage() for r in caplog.records)


async def test_warm_up_loads_closed_history_without_trading_then_streams_on() -> None:
    history = [candle(i, 50.0 + i * 0.01) for i in range(400)]
    source = ListSource(history)
    sink = Sink()
    feed = MarketFeed("X", sink, source=source, warmup_candles=300)
    now = history[350].open_time_ms + 20_000  # minute 350 is forming
    assert await feed.warm_up(now) == 300
    assert [c.open_time_ms for c in sink.warmup] == [c.open_time_ms for c in history[50:350]]
    assert sink.live == []
    await feed.on_kline(kline_of(history[350]))
    await feed.on_kline(kline_of(history[351]))
    assert [c.open_time_ms for c in sink.live] == [history[350].open_time_ms]


async def test_feed_in_trade_mode_builds_candles_and_uses_trades_as_the_kline_clock() -> None:
    sink = Sink()
    feed = MarketFeed("X", sink, candles_from="trades", warmup_candles=0, grace_ms=1000)
    await feed.on_trade(TradeTick("X", 10.0, 1.0, T0 + 1))
    await feed.on_trade(TradeTick("X", 11.0, 1.0, T0 + M + 1))
    assert sink.live == [Candle(T0, 10.0, 10.0, 10.0, 10.0, 1.0)]

    sink_k = Sink()
    kfeed = MarketFeed("X", sink_k, warmup_candles=0, grace_ms=1000)
    await kfeed.on_kline(kline_of(candle(0)))
    await kfeed.on_trade(TradeTick("X", 10.0, 1.0, T0 + M + 999))
    assert sink_k.live == []
    await kfeed.on_trade(TradeTick("X", 10.0, 1.0, T0 + M + 1000))  # minute + grace passed
    assert sink_k.live == [candle(0)]


async def test_feed_rejects_an_absurd_candle_and_keeps_going(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    feed = MarketFeed("X", sink, warmup_candles=0)
    with caplog.at_level(logging.WARNING):
        await feed.push_closed(candle(0, 100.0))
        await feed.push_closed(candle(1, 100_000.0))
        await feed.push_closed(candle(2, 101.0))
    assert [c.close for c in sink.live] == [100.0, 101.0]
    assert any("absurd_jump" in r.getMessage() for r in caplog.records)
