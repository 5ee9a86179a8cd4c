"""``trend_distance_short``: a strong 1m downtrend, far below SMA50, with an explosive bearish candle (SHORT).

Rules (shared/strategies.md, strategy 2), on the 1m series:
1. ``close < SMA50`` and ``close < SMA200``.
2. ``(SMA50 - close) / SMA50 * 100 >= min_distance_pct``.
3. ``rsi_min <= RSI14 <= rsi_max``.
4. ``close < open``, ``(open - close) / open * 100 > body_pct``, ``volume ratio > volume_mult``.
5. ``ATR(14)`` ready. Stop = entry + stop_atr * ATR; target = entry - target_atr * ATR.
"""

from __future__ import annotations

from engine.indicators.bank import IndicatorBank
from engine.market.candle import Candle
from strategies.base import Side, Signal, Strategy
from strategies.params import TrendDistanceShortParams


class TrendDistanceShort(Strategy):
    """The SHORT strategy."""

    name = "trend_distance_short"
    side = Side.SHORT

    def __init__(self, params: TrendDistanceShortParams, bank: IndicatorBank) -> None:
        super().__init__(bank)
        self.params = params
        m1 = bank.m1
        self._fast = m1.sma(params.sma_fast_period)
        self._slow = m1.sma(params.sma_slow_period)
        self._rsi = m1.rsi(params.rsi_period)
        self._atr = m1.atr(params.atr_period)
        self._volume = m1.volume_ratio(params.volume_window)
        self._keys = (
            f"sma{params.sma_fast_period}",
            f"sma{params.sma_slow_period}",
            f"rsi{params.rsi_period}",
            f"atr{params.atr_period}",
        )

    @property
    def warmup_candles(self) -> int:
        p = self.params
        return max(p.sma_fast_period, p.sma_slow_period, p.rsi_period, p.atr_period, p.volume_window + 1)

    def evaluate(self, symbol: str, candle: Candle) -> Signal | None:
        p = self.params
        o = candle.open
        close = candle.close
        if not close < o:
            return None
        body = (o - close) / o * 100.0
        if not body > p.body_pct:
            return None
        volume_ratio = self._volume.value
        if volume_ratio is None or not volume_ratio > p.volume_mult:
            return None
        fast = self._fast.value
        slow = self._slow.value
        rsi = self._rsi.value
        atr = self._atr.value
        if fast is None or slow is None or rsi is None or atr is None:
            return None
        if not (close < fast and close < slow):
            return None
        distance = (fast - close) / fast * 100.0
        if not distance >= p.min_distance_pct:
            return None
        if not p.rsi_min <= rsi <= p.rsi_max:
            return None
        fast_key, slow_key, rsi_key, atr_key = self._keys
        return Signal(
            symbol=symbol,
            strategy=self.name,
            side=Side.SHORT,
            time_ms=candle.open_time_ms,
            entry=close,
            stop=close + p.stop_atr * atr,
            target=close - p.target_atr * atr,
            atr=atr,
            risk_pct=p.base_risk_pct,
            max_risk_pct=p.max_risk_pct,
            stop_atr=p.stop_atr,
            target_atr=p.target_atr,
            indicators={
                "body_pct": -body,
                "volume_ratio": volume_ratio,
                fast_key: fast,
                slow_key: slow,
                "distance_pct": distance,
                rsi_key: rsi,
                atr_key: atr,
            },
        )
