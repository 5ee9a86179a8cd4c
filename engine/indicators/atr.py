"""Average true range exactly as ``ta.volatility.AverageTrueRange``."""

from __future__ import annotations

from engine.market.candle import Candle


class Atr:
    """``ATR(n)``: ``TR_0 = high - low``; ``TR_t = max(high-low, |high-prev_close|, |low-prev_close|)``;
    ``ATR_{n-1} = mean(TR_0..TR_{n-1})``, then ``ATR_t = (ATR_{t-1} * (n-1) + TR_t) / n``. Ready from index n-1.
    """

    __slots__ = ("period", "value", "_prev_close", "_seed", "_count")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self._prev_close: float | None = None
        self._seed: list[float] = []
        self._count = 0
        self.value: float | None = None

    def update(self, candle: Candle) -> None:
        """Consume the next closed candle."""
        high = candle.high
        low = candle.low
        prev = self._prev_close
        self._prev_close = candle.close
        tr = high - low
        if prev is not None:
            up = abs(high - prev)
            dn = abs(low - prev)
            if up > tr:
                tr = up
            if dn > tr:
                tr = dn
        value = self.value
        if value is not None:
            n = self.period
            self.value = (value * (n - 1) + tr) / float(n)
            return
        self._seed.append(tr)
        if len(self._seed) == self.period:
            self.value = sum(self._seed) / self.period
            self._seed = []

    @property
    def ready(self) -> bool:
        """True from index n-1."""
        return self.value is not None
