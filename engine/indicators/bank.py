"""One shared set of indicator instances per symbol, so strategies that need the same
indicator (ATR(14) on 1m, the volume ratio) do not compute it twice."""

from __future__ import annotations

from typing import Callable

from engine.indicators.atr import Atr
from engine.indicators.rsi import Rsi
from engine.indicators.sma import Sma
from engine.indicators.volume import VolumeRatio
from engine.market.aggregate import FIVE_MINUTES_MS, CandleAggregator
from engine.market.candle import Candle


class TimeframeIndicators:
    """Deduplicated indicators over one candle series; ``update`` feeds every registered one."""

    __slots__ = ("name", "last", "_by_key", "_updaters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: Candle | None = None
        self._by_key: dict[tuple[str, int], object] = {}
        self._updaters: tuple[Callable[[Candle], None], ...] = ()

    def _get(self, kind: str, period: int, factory: Callable[[int], object]) -> object:
        key = (kind, period)
        found = self._by_key.get(key)
        if found is None:
            found = factory(period)
            self._by_key[key] = found
            self._updaters = self._updaters + (found.update,)  # type: ignore[attr-defined]
        return found

    def sma(self, period: int) -> Sma:
        """The shared ``SMA(period)`` of closes."""
        return self._get("sma", period, Sma)  # type: ignore[return-value]

    def rsi(self, period: int) -> Rsi:
        """The shared ``RSI(period)``."""
        return self._get("rsi", period, Rsi)  # type: ignore[return-value]

    def atr(self, period: int) -> Atr:
        """The shared ``ATR(period)``."""
        return self._get("atr", period, Atr)  # type: ignore[return-value]

    def volume_ratio(self, window: int) -> VolumeRatio:
        """The shared volume ratio over the ``window`` earlier candles."""
        return self._get("volume_ratio", window, VolumeRatio)  # type: ignore[return-value]

    def update(self, candle: Candle) -> None:
        """Feed one closed candle of this timeframe to every registered indicator."""
        for update in self._updaters:
            update(candle)
        self.last = candle


class IndicatorBank:
    """The 1m series and its 5m aggregate for one symbol.

    ``m5.last`` is the 5m context: the latest complete 5m candle, whose indicators in ``m5`` were
    last updated with it. Because a 5m candle completes exactly when its last minute (or a later
    minute) closes, the latest complete one always satisfies the context rule
    ``end <= t + 60000`` for the 1m candle at ``t`` just fed.
    """

    __slots__ = ("m1", "m5", "_aggregator", "candles_seen")

    def __init__(self, context_period_ms: int = FIVE_MINUTES_MS) -> None:
        self.m1 = TimeframeIndicators("1m")
        self.m5 = TimeframeIndicators(f"{context_period_ms // 60_000}m")
        self._aggregator = CandleAggregator(context_period_ms)
        self.candles_seen = 0

    def update(self, candle: Candle) -> None:
        """Feed one closed 1m candle (time-ordered, validated)."""
        self.m1.update(candle)
        for completed in self._aggregator.update(candle):
            self.m5.update(completed)
        self.candles_seen += 1
