"""``multi_timeframe_long``: a 5m uptrend context plus an explosive bullish 1m candle (LONG).

Rules (shared/strategies.md, strategy 1), all with ``>`` as written there:
1. 5m context ``C5`` (latest complete 5m candle with end <= t + 1 min): ``C5.close > SMA50_5m``,
   ``RSI14_5m > rsi_min`` and ``(C5.close - SMA50_5m) / SMA50_5m * 100 > min_distance_pct``.
2. 1m candle: ``close > open``, ``body % > body_pct``, ``volume ratio > volume_mult``.
3. ``ATR(14)`` ready. Stop = entry - stop_atr * ATR; target = entry + target_atr * ATR.
"""

from __future__ import annotations

from engine.indicators.bank import IndicatorBank
from engine.market.aggregate import FIVE_MINUTES_MS
from engine.market.candle import ONE_MINUTE_MS, Candle
from strategies.base import Side, Signal, Strategy
from strategies.params import MultiTimeframeLongParams


class MultiTimeframeLong(Strategy):
    """The LONG strategy."""

    name = "multi_timeframe_long"
    side = Side.LONG

    def __init__(self, params: MultiTimeframeLongParams, bank: IndicatorBank) -> None:
        super().__init__(bank)
        self.params = params
        self._m5 = bank.m5
        self._sma5 = bank.m5.sma(params.sma_period)
        self._rsi5 = bank.m5.rsi(params.rsi_period)
        self._volume = bank.m1.volume_ratio(params.volume_window)
        atr_series = bank.m1 if params.atr_timeframe == "1m" else bank.m5
        self._atr = atr_series.atr(params.atr_period)
        self._atr_key = f"atr{params.atr_period}_{params.atr_timeframe}"
        self._sma_key = f"sma{params.sma_period}_5m"
        self._rsi_key = f"rsi{params.rsi_period}_5m"

    @property
    def warmup_candles(self) -> int:
        p = self.params
        five_min_needed = max(p.sma_period, p.rsi_period, p.atr_period if p.atr_timeframe == "5m" else 0)
        # +1 bucket: the first 5m bucket of a warm-up window may be partial
        return max((five_min_needed + 1) * 5, p.volume_window + 1, p.atr_period if p.atr_timeframe == "1m" else 0)

    def evaluate(self, symbol: str, candle: Candle) -> Signal | None:
        p = self.params
        o = candle.open
        close = candle.close
        # Cheapest and rarest test first: most candles stop here.
        if not close > o:
            return None
        body = (close - o) / o * 100.0
        if not body > p.body_pct:
            return None
        volume_ratio = self._volume.value
        if volume_ratio is None or not volume_ratio > p.volume_mult:
            return None
        atr = self._atr.value
        if atr is None:
            return None
        context = self._m5.last
        if context is None or context.open_time_ms + FIVE_MINUTES_MS > candle.open_time_ms + ONE_MINUTE_MS:
            return None
        sma = self._sma5.value
        rsi = self._rsi5.value
        if sma is None or rsi is None:
            return None
        c5 = context.close
        if not c5 > sma:
            return None
        if not rsi > p.rsi_min:
            return None
        distance = (c5 - sma) / sma * 100.0
        if not distance > p.min_distance_pct:
            return None
        return Signal(
            symbol=symbol,
            strategy=self.name,
            side=Side.LONG,
            time_ms=candle.open_time_ms,
            entry=close,
            stop=close - p.stop_atr * atr,
            target=close + p.target_atr * atr,
            atr=atr,
            risk_pct=p.base_risk_pct,
            max_risk_pct=p.max_risk_pct,
            stop_atr=p.stop_atr,
            target_atr=p.target_atr,
            indicators={
                "body_pct": body,
                "volume_ratio": volume_ratio,
                self._atr_key: atr,
                "context_5m_open_time_ms": float(context.open_time_ms),
                "close_5m": c5,
                self._sma_key: sma,
                self._rsi_key: rsi,
                "distance_pct_5m": distance,
            },
        )
