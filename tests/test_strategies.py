"""The two strategies on hand-built candle sequences: every threshold just above and just below,
the 5m context timing (no look-ahead), the limits, and an independent pandas/ta re-implementation
of the rules on real data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator
from ta.trend import SMAIndicator
from ta.volatility import AverageTrueRange

from engine.indicators.bank import IndicatorBank
from engine.market.candle import Candle, read_candles_csv
from strategies import (
    Fate,
    MultiTimeframeLongParams,
    Side,
    Signal,
    SignalGenerator,
    StrategiesConfig,
    Strategy,
    TrendDistanceShortParams,
)
from strategies.params import TradeManagementParams
from tests.strategy_scenarios import FIVE, M, c, long_candles, short_candles

MARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market"
TINY = 1e-7  # relative step "just above / just below" a threshold reached by moving candles

def run(candles: list[Candle], config: StrategiesConfig) -> tuple[list[Signal], SignalGenerator]:
    """Feed candles; return the signals of the LAST candle (all earlier candles must give none)."""
    gen = SignalGenerator("TEST-USDT", config)
    records = []
    for candle in candles:
        records = gen.on_candle(candle, lambda name: 0)
        if candle is not candles[-1]:
            assert records == [], f"unexpected signal before the trigger at {candle.open_time_ms}"
    return [r.signal for r in records], gen


def cfg(long: dict | None = None, short: dict | None = None) -> StrategiesConfig:
    return StrategiesConfig(
        multi_timeframe_long=MultiTimeframeLongParams(**(long or {})),
        trend_distance_short=TrendDistanceShortParams(**(short or {})),
    )


# -- SHORT scenario (strategy_scenarios.short_candles) ------------------------------------------

def shorts(candles: list[Candle], **short_params: object) -> list[Signal]:
    signals, _ = run(candles, cfg(long={"enabled": False}, short=short_params))
    return signals


def test_short_base_scenario_signal_and_levels() -> None:
    candles = short_candles()
    signals, gen = run(candles, cfg(long={"enabled": False}))
    assert len(signals) == 1
    s = signals[0]
    m1 = gen.bank.m1
    atr = m1.atr(14).value
    assert s.strategy == "trend_distance_short" and s.side is Side.SHORT
    assert s.time_ms == candles[-1].open_time_ms and s.entry == candles[-1].close
    assert s.atr == atr and s.stop == s.entry + 3 * atr and s.target == s.entry - 15 * atr  # 5R
    assert s.risk_pct == 1.5 and s.max_risk_pct == 4.0
    assert s.indicators["sma50"] == m1.sma(50).value and s.indicators["sma200"] == m1.sma(200).value
    assert 25 <= s.indicators["rsi14"] <= 55 and s.indicators["distance_pct"] >= 2.0


@pytest.mark.parametrize(("factor", "fires"), [(1 + TINY, True), (1 - TINY, False)])
def test_short_body_threshold(factor: float, fires: bool) -> None:
    # body 1.2% exactly is not "> 1.2"; candle bodies are built as open * (1 - b/100)
    candles = short_candles(body=1.2 * factor)
    body = (candles[-1].open - candles[-1].close) / candles[-1].open * 100
    assert (body > 1.2) is fires
    assert bool(shorts(candles)) is fires


@pytest.mark.parametrize(("volume", "fires"), [(300.0 * (1 + TINY), True), (300.0, False), (300.0 * (1 - TINY), False)])
def test_short_volume_threshold(volume: float, fires: bool) -> None:
    # the 20 candles before the trigger all have volume 100: ratio = volume / 100
    assert bool(shorts(short_candles(volume=volume))) is fires


def _prev_closes(candles: list[Candle], n: int) -> list[float]:
    return [x.close for x in candles[-1 - n : -1]]


@pytest.mark.parametrize(("factor", "fires"), [(1 + TINY, True), (1 - TINY, False)])
def test_short_close_below_sma200(factor: float, fires: bool) -> None:
    # close < SMA200 <=> close < mean of the 199 previous closes; solve the old level L for equality
    base = short_candles(level=100.0)
    close = base[-1].close
    others = sum(x.close for x in base[150:199])
    multipliers = sum(x.close for x in base[:150]) / 100.0
    level = (199 * close - others) / multipliers
    candles = short_candles(level=level * factor)
    _, gen = run(candles, cfg(long={"enabled": False}))
    sma200 = gen.bank.m1.sma(200).value
    assert (candles[-1].close < sma200) is fires  # type: ignore[operator]
    assert bool(shorts(candles)) is fires


@pytest.mark.parametrize(("factor", "fires"), [(1 - TINY, True), (1 + TINY, False)])
def test_short_close_below_sma50(factor: float, fires: bool) -> None:
    # isolate the rule (min distance 0, RSI window opened: the trigger gaps up to the SMA);
    # close < SMA50 <=> close < mean of the 49 previous closes
    base = short_candles()
    mean49 = sum(_prev_closes(base, 49)) / 49
    candles = short_candles(trigger_open=mean49 / (1 - 1.5 / 100) * factor)
    relaxed = {"min_distance_pct": 0.0, "rsi_max": 100.0}
    _, gen = run(candles, cfg(long={"enabled": False}, short=relaxed))
    assert (candles[-1].close < gen.bank.m1.sma(50).value) is fires  # type: ignore[operator]
    assert bool(shorts(candles, **relaxed)) is fires


@pytest.mark.parametrize(("target", "fires"), [(2.0 * (1 + 1e-6), True), (2.0 * (1 - 1e-6), False)])
def test_short_distance_threshold(target: float, fires: bool) -> None:
    # distance = (SMA50 - close) / SMA50 * 100 with SMA50 = (S49 + close) / 50  =>  close = S49 (1-k) / (49+k)
    base = short_candles()
    s49 = sum(_prev_closes(base, 49))
    k = target / 100
    close = s49 * (1 - k) / (49 + k)
    candles = short_candles(trigger_open=close / (1 - 1.5 / 100))
    found = shorts(candles)
    assert bool(found) is fires
    _, gen = run(candles, cfg(long={"enabled": False}))
    sma = gen.bank.m1.sma(50).value
    assert ((sma - candles[-1].close) / sma * 100 >= 2.0) is fires  # type: ignore[operator]


def test_short_distance_is_inclusive() -> None:
    distance = shorts(short_candles())[0].indicators["distance_pct"]
    assert shorts(short_candles(), min_distance_pct=distance)  # >= : equal passes
    assert not shorts(short_candles(), min_distance_pct=math.nextafter(distance, math.inf))


def test_body_and_volume_are_strict_for_both_strategies() -> None:
    short = shorts(short_candles())[0]
    body = -short.indicators["body_pct"]
    assert not shorts(short_candles(), body_pct=body)  # "> 1.2": equal fails
    assert shorts(short_candles(), body_pct=math.nextafter(body, -math.inf))
    long = longs(long_candles())[0]
    body = long.indicators["body_pct"]
    assert not longs(long_candles(), body_pct=body)
    assert longs(long_candles(), body_pct=math.nextafter(body, -math.inf))
    assert not longs(long_candles(), volume_mult=long.indicators["volume_ratio"])
    assert not shorts(short_candles(), volume_mult=short.indicators["volume_ratio"])


def test_short_rsi_window_is_inclusive_at_both_ends() -> None:
    rsi = shorts(short_candles())[0].indicators["rsi14"]
    assert 25 < rsi < 55
    assert shorts(short_candles(), rsi_max=rsi)
    assert not shorts(short_candles(), rsi_max=math.nextafter(rsi, -math.inf))
    assert shorts(short_candles(), rsi_min=rsi, rsi_max=100.0)
    assert not shorts(short_candles(), rsi_min=math.nextafter(rsi, math.inf), rsi_max=100.0)


def test_short_rsi_outside_the_default_window() -> None:
    # a trigger right after a crash: RSI far below 25 with defaults
    crash = short_candles()[:-1]
    prev = crash[-1].close
    for j in range(12):
        crash.append(c(199 + j, prev, prev * 0.99))
        prev *= 0.99
    crash.append(c(211, prev, prev * 0.985, 400.0))
    _, gen = run(crash[:-1], cfg(long={"enabled": False}))
    signals, gen = run(crash, cfg(long={"enabled": False}, short={"volume_mult": 0.5}))
    assert gen.bank.m1.rsi(14).value < 25  # type: ignore[operator]
    assert signals == []


def test_short_needs_atr_and_volume_history() -> None:
    assert not shorts(short_candles(), atr_period=250)  # ATR(250) not ready after 200 candles
    assert not shorts(short_candles(), volume_window=200)  # needs 200 EARLIER candles
    assert shorts(short_candles(), volume_window=199, volume_mult=0.5)  # exactly 199 earlier: ready


def test_short_bullish_candle_never_fires() -> None:
    candles = short_candles()
    last = candles[-1]
    candles[-1] = c(199, last.close, last.open, 400.0)  # same body, upwards
    assert not shorts(candles, body_pct=0.0)


# -- LONG scenario (strategy_scenarios.long_candles) -------------------------------------------

def longs(candles: list[Candle], **long_params: object) -> list[Signal]:
    signals, _ = run(candles, cfg(long=long_params, short={"enabled": False}))
    return signals


def _five_minute_closes(candles: list[Candle], buckets: int) -> list[float]:
    return [candles[b * 5 + 4].close for b in range(buckets)]


def test_long_base_scenario_signal_and_levels() -> None:
    candles = long_candles()
    signals, gen = run(candles, cfg(short={"enabled": False}))
    assert len(signals) == 1
    s = signals[0]
    atr = gen.bank.m1.atr(14).value
    assert s.strategy == "multi_timeframe_long" and s.side is Side.LONG
    assert s.entry == candles[-1].close and s.time_ms == candles[-1].open_time_ms
    assert s.stop == s.entry - 3 * atr and s.target == s.entry + 12 * atr  # type: ignore[operator]
    assert s.risk_pct == 1.0 and s.max_risk_pct == 3.0
    assert s.indicators["rsi14_5m"] > 57 and s.indicators["distance_pct_5m"] > 0.6


@pytest.mark.parametrize(("factor", "fires"), [(1 + TINY, True), (1 - TINY, False)])
def test_long_body_threshold(factor: float, fires: bool) -> None:
    candles = long_candles(body=1.2 * factor)
    body = (candles[-1].close - candles[-1].open) / candles[-1].open * 100
    assert (body > 1.2) is fires
    assert bool(longs(candles)) is fires


@pytest.mark.parametrize(("volume", "fires"), [(300.0 * (1 + TINY), True), (300.0, False), (300.0 * (1 - TINY), False)])
def test_long_volume_threshold(volume: float, fires: bool) -> None:
    assert bool(longs(long_candles(volume=volume))) is fires


@pytest.mark.parametrize(("factor", "fires"), [(1 + TINY, True), (1 - TINY, False)])
def test_long_context_close_above_5m_sma(factor: float, fires: bool) -> None:
    # isolate: RSI and distance relaxed; C5.close > SMA50_5m <=> C5.close > mean of the 49 earlier 5m closes
    mean49 = sum(_five_minute_closes(long_candles(), 64)[-50:-1]) / 49
    candles = long_candles(context_close=mean49 * factor)
    signals, gen = run(candles, cfg(long={"rsi_min": 0.0, "min_distance_pct": 0.0}, short={"enabled": False}))
    assert (gen.bank.m5.last.close > gen.bank.m5.sma(50).value) is fires  # type: ignore[union-attr,operator]
    assert bool(signals) is fires


@pytest.mark.parametrize(("target", "fires"), [(0.6 * (1 + 1e-6), True), (0.6 * (1 - 1e-6), False)])
def test_long_context_distance_threshold(target: float, fires: bool) -> None:
    # distance = (c - S)/S*100 with S = (S49 + c)/50  =>  c = S49 (1+k) / (49-k)
    s49 = sum(_five_minute_closes(long_candles(), 64)[-50:-1])
    k = target / 100
    candles = long_candles(context_close=s49 * (1 + k) / (49 - k))
    signals, gen = run(candles, cfg(long={"rsi_min": 0.0}, short={"enabled": False}))
    sma = gen.bank.m5.sma(50).value
    assert ((gen.bank.m5.last.close - sma) / sma * 100 > 0.6) is fires  # type: ignore[union-attr,operator]
    assert bool(signals) is fires


def test_long_rsi_and_distance_are_strict() -> None:
    s = longs(long_candles())[0]
    rsi = s.indicators["rsi14_5m"]
    distance = s.indicators["distance_pct_5m"]
    assert not longs(long_candles(), rsi_min=rsi)  # "> 57": equal fails
    assert longs(long_candles(), rsi_min=math.nextafter(rsi, -math.inf))
    assert not longs(long_candles(), min_distance_pct=distance)
    assert longs(long_candles(), min_distance_pct=math.nextafter(distance, -math.inf))


def test_long_rsi_below_minimum_with_a_choppy_context() -> None:
    # a context of alternating buckets has RSI near 50: below 57
    out: list[Candle] = []
    prev = 100.0
    for i in range(320):
        bucket = i // 5
        close = prev * (1 + (0.0008 if bucket % 2 == 0 else -0.0007))
        out.append(c(i, prev, close))
        prev = close
    for j in range(3):
        out.append(c(320 + j, prev, prev))
    out.append(c(323, prev, prev * 1.015, 400.0))
    signals, gen = run(out, cfg(long={"min_distance_pct": 0.0}, short={"enabled": False}))
    assert gen.bank.m5.rsi(14).value < 57  # type: ignore[operator]
    assert signals == []


def test_long_context_timing_no_look_ahead_10_03_vs_10_04() -> None:
    at_03 = longs(long_candles(offset=3), min_distance_pct=0.0)[0]
    at_04 = longs(long_candles(offset=4), min_distance_pct=0.0)[0]
    bucket_03 = at_03.time_ms - at_03.time_ms % FIVE
    bucket_04 = at_04.time_ms - at_04.time_ms % FIVE
    assert at_03.time_ms - bucket_03 == 3 * M and at_04.time_ms - bucket_04 == 4 * M
    # 10:03 closes: the latest usable 5m candle is 09:55; 10:04 closes: the 10:00 candle (with the trigger in it)
    assert at_03.indicators["context_5m_open_time_ms"] == bucket_03 - FIVE
    assert at_04.indicators["context_5m_open_time_ms"] == bucket_04
    assert at_04.indicators["close_5m"] == at_04.entry
    # A threshold only the 10:00 bucket clears: 10:03 must not see it, 10:04 must
    low, high = at_03.indicators["distance_pct_5m"], at_04.indicators["distance_pct_5m"]
    assert low < high
    middle = (low + high) / 2
    assert not longs(long_candles(offset=3), min_distance_pct=middle)
    assert longs(long_candles(offset=4), min_distance_pct=middle)


def test_long_needs_ready_inputs() -> None:
    assert not longs(long_candles(), sma_period=70)  # only 64 complete 5m candles
    assert longs(long_candles(), sma_period=64)  # exactly ready
    assert not longs(long_candles(), atr_period=400)
    signals = longs(long_candles(), atr_timeframe="5m")
    assert signals and "atr14_5m" in signals[0].indicators


def test_long_bearish_candle_never_fires() -> None:
    candles = long_candles()
    last = candles[-1]
    candles[-1] = c(len(candles) - 1, last.close, last.open, 400.0)
    assert not longs(candles, body_pct=0.0)


# -- limits ---------------------------------------------------------------------------------------


def test_max_positions_skips_with_reason() -> None:
    config = cfg(long={"enabled": False})
    gen = SignalGenerator("TEST-USDT", config)
    candles = short_candles()
    for candle in candles[:-1]:
        gen.on_candle(candle, lambda name: 0)
    records = gen.on_candle(candles[-1], lambda name: 1)
    assert [(r.fate, r.reason) for r in records] == [
        (Fate.SKIPPED, "max_positions: trend_distance_short already holds 1 position(s) on TEST-USDT")
    ]
    config2 = cfg(long={"enabled": False})
    config2.max_positions = 2
    gen2 = SignalGenerator("TEST-USDT", config2)
    for candle in candles[:-1]:
        gen2.on_candle(candle, lambda name: 0)
    assert gen2.on_candle(candles[-1], lambda name: 1)[0].fate is Fate.PENDING


class _AlwaysLong(Strategy):
    """A third rule, only to exercise the conflict policy (the two real rules cannot fire on one candle:
    one needs close > open, the other close < open)."""

    name = "always_long"
    side = Side.LONG

    @property
    def warmup_candles(self) -> int:
        return 0

    def evaluate(self, symbol: str, candle: Candle) -> Signal | None:
        return Signal(symbol, self.name, Side.LONG, candle.open_time_ms, candle.close, candle.close * 0.9, candle.close * 1.5, 1.0, 1.0, 3.0, 3.0, 12.0)


def test_opposite_signals_on_one_candle_are_both_skipped() -> None:
    config = cfg(long={"enabled": False})
    bank = IndicatorBank()
    from strategies.trend_distance_short import TrendDistanceShort

    gen = SignalGenerator("TEST-USDT", config, bank, [_AlwaysLong(bank), TrendDistanceShort(config.trend_distance_short, bank)])
    candles = short_candles()
    for candle in candles[:-1]:
        assert all(r.fate is Fate.PENDING for r in gen.on_candle(candle, lambda name: 0))
    records = gen.on_candle(candles[-1], lambda name: 0)
    assert {r.signal.strategy: r.fate for r in records} == {"always_long": Fate.SKIPPED, "trend_distance_short": Fate.SKIPPED}
    assert all(r.reason.startswith("conflict: opposite signal from") for r in records)


def test_params_reject_bad_values() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        TrendDistanceShortParams(rsi_min=60, rsi_max=55)
    with pytest.raises(ValidationError):
        MultiTimeframeLongParams(base_risk_pct=4, max_risk_pct=3)
    with pytest.raises(ValidationError):
        MultiTimeframeLongParams(stop_atr=0)
    with pytest.raises(ValidationError):
        StrategiesConfig(max_positons=2)  # type: ignore[call-arg]  (typo: unknown key)
    with pytest.raises(ValidationError):
        TradeManagementParams(partial_exits=[{"at_r": 2, "fraction": 0.7}, {"at_r": 4, "fraction": 0.4}])
    with pytest.raises(ValidationError):
        TradeManagementParams(trailing=[{"at_r": 3, "stop_r": 3}])
    defaults = StrategiesConfig()
    assert (defaults.slippage_bps, defaults.taker_fee, defaults.maker_fee, defaults.leverage) == (2, 0.0005, 0.0002, 1)
    assert [(p.at_r, p.fraction) for p in defaults.trade_management.partial_exits] == [(2, 0.3), (4, 0.4)]
    assert [(t.at_r, t.stop_r) for t in defaults.trade_management.trailing] == [(3, 1), (5, 3)]


# -- independent re-implementation on real data ---------------------------------------------------


def reference_signals(candles: list[Candle]) -> list[tuple[int, str, float, float]]:
    """The rules of strategies.md written again with pandas and ta, vectorised, as a cross-check."""
    df = pd.DataFrame([(x.open_time_ms, x.open, x.high, x.low, x.close, x.volume) for x in candles], columns=["t", "o", "h", "l", "c", "v"])
    body = (df.c - df.o) / df.o * 100
    vr = df.v / df.v.shift(1).rolling(20).mean()
    atr = AverageTrueRange(df.h, df.l, df.c, 14).average_true_range()
    atr[df.index < 13] = np.nan
    sma50 = SMAIndicator(df.c, 50).sma_indicator()
    sma200 = SMAIndicator(df.c, 200).sma_indicator()
    rsi = RSIIndicator(df.c, 14).rsi()
    # 5m series; the context of the 1m candle at t is the latest bucket b with b + 5m <= t + 1m
    df["bucket"] = df.t // FIVE * FIVE
    five = df.groupby("bucket").agg(c5=("c", "last")).reset_index()
    five["sma5"] = SMAIndicator(five.c5, 50).sma_indicator()
    five["rsi5"] = RSIIndicator(five.c5, 14).rsi()
    df["ctx_key"] = df.t + M - FIVE
    merged = pd.merge_asof(df[["t", "ctx_key"]], five.rename(columns={"bucket": "ctx_key"}), on="ctx_key", direction="backward")
    c5, sma5, rsi5 = merged.c5, merged.sma5, merged.rsi5
    long = (df.c > df.o) & (body > 1.2) & (vr > 3) & atr.notna() & (c5 > sma5) & (rsi5 > 57) & ((c5 - sma5) / sma5 * 100 > 0.6)
    short = (
        (df.c < df.o) & (-body > 1.2) & (vr > 3) & atr.notna() & (df.c < sma50) & (df.c < sma200)
        & ((sma50 - df.c) / sma50 * 100 >= 2.0) & (rsi >= 25) & (rsi <= 55)
    )
    out = []
    for i in np.flatnonzero(long.to_numpy()):
        out.append((int(df.t[i]), "multi_timeframe_long", df.c[i] - 3 * atr[i], df.c[i] + 12 * atr[i]))
    for i in np.flatnonzero(short.to_numpy()):
        out.append((int(df.t[i]), "trend_distance_short", df.c[i] + 3 * atr[i], df.c[i] - 15 * atr[i]))
    return sorted(out)


@pytest.mark.parametrize("pair", ["NANO_USDT", "ICP_USDT", "XZC_BTC", "DOGE_BTC"])
def test_engine_signals_equal_an_independent_reimplementation(pair: str) -> None:
    candles = read_candles_csv(MARKET / f"{pair}-1m.csv.gz")
    gen = SignalGenerator(pair, StrategiesConfig())
    ours = []
    for candle in candles:
        for record in gen.on_candle(candle, lambda name: 0):
            s = record.signal
            ours.append((s.time_ms, s.strategy, s.stop, s.target))
    expected = reference_signals(candles)
    assert [(t, n) for t, n, _, _ in sorted(ours)] == [(t, n) for t, n, _, _ in expected]
    assert len(expected) > 0
    for (_, _, stop, target), (_, _, ref_stop, ref_target) in zip(sorted(ours), expected):
        assert stop == pytest.approx(ref_stop, rel=1e-12) and target == pytest.approx(ref_target, rel=1e-12)
