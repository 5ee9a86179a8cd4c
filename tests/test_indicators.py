"""Incremental indicators against the ``ta`` library on real candles (1e-9 relative), plus edge cases."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ta.momentum import RSIIndicator
from ta.trend import SMAIndicator
from ta.volatility import AverageTrueRange

from engine.indicators import Atr, Rsi, Sma, TimeframeIndicators, VolumeRatio, body_pct
from engine.market.aggregate import FIVE_MINUTES_MS, CandleAggregator
from engine.indicators.sma import RollingMean
from engine.market.candle import Candle, read_candles_csv

MARKET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market"
REL = 1e-9

# Liquid and gapless, gappy Bittrex, tiny BTC-quoted prices, FTX perp with USD volume.
PAIRS = ["NANO_USDT", "XZC_BTC", "DOGE_BTC", "BTC_PERP"]


def _frame(candles: list[Candle]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "t": [c.open_time_ms for c in candles],
            "open": [c.open for c in candles],
            "high": [c.high for c in candles],
            "low": [c.low for c in candles],
            "close": [c.close for c in candles],
            "volume": [c.volume for c in candles],
        }
    )


def _run(indicator: object, candles: list[Candle]) -> np.ndarray:
    out = np.empty(len(candles))
    update = indicator.update  # type: ignore[attr-defined]
    for i, candle in enumerate(candles):
        update(candle)
        value = indicator.value  # type: ignore[attr-defined]
        out[i] = np.nan if value is None else value
    return out


def _assert_matches(ours: np.ndarray, reference: np.ndarray, label: str) -> None:
    """Same readiness (NaN positions) and every ready value within 1e-9 relative (exact where 0)."""
    ref_missing = ~np.isfinite(reference)
    assert np.array_equal(np.isnan(ours), ref_missing), f"{label}: readiness differs from ta"
    ok = ~ref_missing
    a, b = ours[ok], reference[ok]
    zero = b == 0
    assert np.all(a[zero] == 0), f"{label}: value should be exactly 0 where ta gives 0"
    rel = np.abs(a[~zero] - b[~zero]) / np.abs(b[~zero])
    worst = int(np.argmax(rel)) if rel.size else 0
    assert rel.size == 0 or rel.max() <= REL, f"{label}: max relative error {rel.max():.3g} at ready index {worst}"


@pytest.fixture(scope="module", params=PAIRS)
def market(request: pytest.FixtureRequest) -> tuple[str, list[Candle], pd.DataFrame]:
    candles = read_candles_csv(MARKET / f"{request.param}-1m.csv.gz")
    return request.param, candles, _frame(candles)


@pytest.mark.parametrize("period", [50, 200])
def test_sma_matches_ta(market: tuple[str, list[Candle], pd.DataFrame], period: int) -> None:
    name, candles, df = market
    reference = SMAIndicator(df["close"], period, fillna=False).sma_indicator().to_numpy(copy=True)
    _assert_matches(_run(Sma(period), candles), reference, f"{name} SMA({period})")


def test_rsi_matches_ta(market: tuple[str, list[Candle], pd.DataFrame]) -> None:
    name, candles, df = market
    reference = RSIIndicator(df["close"], 14, fillna=False).rsi().to_numpy(copy=True)
    _assert_matches(_run(Rsi(14), candles), reference, f"{name} RSI(14)")


def test_atr_matches_ta(market: tuple[str, list[Candle], pd.DataFrame]) -> None:
    name, candles, df = market
    reference = AverageTrueRange(df["high"], df["low"], df["close"], 14, fillna=False).average_true_range().to_numpy(copy=True)
    reference[:13] = np.nan  # ta writes 0.0 before index n-1; the spec says "not ready"
    _assert_matches(_run(Atr(14), candles), reference, f"{name} ATR(14)")


def test_volume_ratio_matches_definition(market: tuple[str, list[Candle], pd.DataFrame]) -> None:
    name, candles, df = market
    mean_before = df["volume"].shift(1).rolling(20).mean()
    reference = (df["volume"] / mean_before).to_numpy(copy=True)
    reference[(mean_before == 0).to_numpy(copy=True)] = np.nan  # checked separately below
    ours = _run(VolumeRatio(20), candles)
    ours[(mean_before == 0).to_numpy(copy=True)] = np.nan
    _assert_matches(ours, reference, f"{name} volume ratio(20)")


@pytest.mark.parametrize("pair", ["ICP_USDT", "XZC_BTC"])
def test_five_minute_indicators_match_ta_on_aggregated_series(pair: str) -> None:
    candles = read_candles_csv(MARKET / f"{pair}-1m.csv.gz")
    # The bank's own pieces, driven step by step so every completed 5m candle is observed
    # (a gap can complete two buckets with one 1m candle).
    aggregator = CandleAggregator(FIVE_MINUTES_MS)
    m5 = TimeframeIndicators("5m")
    sma, rsi, atr = m5.sma(50), m5.rsi(14), m5.atr(14)
    seen: list[tuple[int, float, float, float, float]] = []
    nan = math.nan
    for candle in candles:
        for completed in aggregator.update(candle):
            m5.update(completed)
            seen.append(
                (
                    completed.open_time_ms,
                    completed.close,
                    nan if sma.value is None else sma.value,
                    nan if rsi.value is None else rsi.value,
                    nan if atr.value is None else atr.value,
                )
            )
    df = _frame(candles)
    df["bucket"] = df["t"] // 300_000 * 300_000
    five = df.groupby("bucket").agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"), volume=("volume", "sum")
    )
    # The last bucket of the file may be incomplete (no later candle, last minute absent): not emitted.
    ours = pd.DataFrame(seen, columns=["bucket", "close", "sma", "rsi", "atr"]).set_index("bucket")
    assert list(ours.index) == list(five.index[: len(ours)])
    assert len(five) - len(ours) in (0, 1)
    five = five.iloc[: len(ours)]
    assert np.array_equal(ours["close"].to_numpy(copy=True), five["close"].to_numpy(copy=True))
    _assert_matches(ours["sma"].to_numpy(copy=True), SMAIndicator(five["close"], 50).sma_indicator().to_numpy(copy=True), f"{pair} 5m SMA50")
    _assert_matches(ours["rsi"].to_numpy(copy=True), RSIIndicator(five["close"], 14).rsi().to_numpy(copy=True), f"{pair} 5m RSI14")
    atr_ref = AverageTrueRange(five["high"], five["low"], five["close"], 14).average_true_range().to_numpy(copy=True)
    atr_ref[:13] = np.nan
    _assert_matches(ours["atr"].to_numpy(copy=True), atr_ref, f"{pair} 5m ATR14")


def _c(t: int, close: float, *, open_: float | None = None, volume: float = 1.0) -> Candle:
    o = close if open_ is None else open_
    return Candle(t * 60_000, o, max(o, close), min(o, close), close, volume)


def test_readiness_indices() -> None:
    sma, rsi, atr, vr = Sma(3), Rsi(3), Atr(3), VolumeRatio(3)
    ready = {"sma": [], "rsi": [], "atr": [], "vr": []}
    for i in range(6):
        candle = _c(i, 10.0 + i)
        for key, ind in (("sma", sma), ("rsi", rsi), ("atr", atr), ("vr", vr)):
            ind.update(candle)
            ready[key].append(ind.value is not None)
    assert ready["sma"] == [False, False, True, True, True, True]  # from index n-1
    assert ready["rsi"] == [False, False, True, True, True, True]  # from index n-1
    assert ready["atr"] == [False, False, True, True, True, True]  # from index n-1
    assert ready["vr"] == [False, False, False, True, True, True]  # needs n EARLIER candles


def test_rsi_is_100_without_losses_and_0_without_gains() -> None:
    up, down = Rsi(14), Rsi(14)
    for i in range(30):
        up.update(_c(i, 100.0 + i))
        down.update(_c(i, 100.0 - i))
    assert up.value == 100.0
    assert down.value == 0.0


def test_atr_first_true_range_is_high_minus_low_then_uses_previous_close() -> None:
    atr = Atr(2)
    atr.update(Candle(0, 10, 12, 9, 11, 1))  # TR0 = 3 (no previous close)
    atr.update(Candle(60_000, 15, 16, 15, 15.5, 1))  # TR1 = max(1, |16-11|, |15-11|) = 5
    assert atr.value == pytest.approx((3 + 5) / 2)
    atr.update(Candle(120_000, 15, 15.5, 14, 15, 1))  # TR2 = max(1.5, 0, 1.5) = 1.5
    assert atr.value == pytest.approx((4 * 1 + 1.5) / 2)


def test_volume_ratio_excludes_current_candle_and_handles_zero_history() -> None:
    vr = VolumeRatio(2)
    for volume in (1.0, 3.0):
        vr.update(_c(0, 1.0, volume=volume))
    vr.update(_c(0, 1.0, volume=6.0))
    assert vr.value == pytest.approx(6.0 / 2.0)  # mean of the two BEFORE it
    flat = VolumeRatio(2)
    for volume in (0.0, 0.0, 0.0):
        flat.update(_c(0, 1.0, volume=volume))
    assert flat.value is None  # 0 / 0: undefined, so not ready
    flat.update(_c(0, 1.0, volume=5.0))
    assert flat.value == math.inf  # any volume is more than 3x nothing


def test_body_pct_sign_and_size() -> None:
    assert body_pct(Candle(0, 100.0, 102.0, 99.0, 101.2, 1)) == pytest.approx(1.2)
    assert body_pct(Candle(0, 100.0, 101.0, 98.0, 98.8, 1)) == pytest.approx(-1.2)


def test_rolling_mean_does_not_drift_over_a_long_series() -> None:
    rng = random.Random(7)
    window = RollingMean(50)
    values = [1e6 + rng.uniform(-1, 1) * 10 ** rng.randint(-6, 5) for _ in range(200_000)]
    worst = 0.0
    for i, value in enumerate(values):
        window.push(value)
        if i >= 49 and i % 997 == 0:
            exact = math.fsum(values[i - 49 : i + 1]) / 50
            worst = max(worst, abs(window.mean - exact) / abs(exact))  # type: ignore[operator]
    assert worst < 1e-12
