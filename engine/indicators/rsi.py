"""Wilder-style RSI exactly as ``ta.momentum.RSIIndicator`` computes it (pandas ``ewm(adjust=False)``)."""

from __future__ import annotations

from engine.market.candle import Candle


class Rsi:
    """``RSI(n)`` with ``alpha = 1/n`` EMAs of gains and losses, seeded with the first value.

    ``d_0 = 0`` (the first candle has no previous close), so both EMAs start at 0. The update
    reproduces pandas' adjust=False recursion operation by operation (including its division by
    ``(1 - alpha) + alpha`` and its skip when the value equals the current average), so the result
    matches ``ta`` to the last bit, not only within tolerance. Ready from index n-1; 100 when the
    loss average is exactly zero.
    """

    __slots__ = ("period", "value", "_alpha", "_decay", "_norm", "_up", "_down", "_prev_close", "_count")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period must be >= 1, got {period}")
        self.period = period
        self._alpha = 1.0 / period
        self._decay = 1.0 - self._alpha
        self._norm = self._decay + self._alpha  # pandas divides by (old_wt + new_wt); not always exactly 1.0
        self._up = 0.0
        self._down = 0.0
        self._prev_close: float | None = None
        self._count = 0
        self.value: float | None = None

    def update(self, candle: Candle) -> None:
        """Consume the next closed candle."""
        close = candle.close
        prev = self._prev_close
        self._prev_close = close
        self._count += 1
        if prev is None:
            return  # ema_0 = d_0 = 0 for both averages
        diff = close - prev
        up = diff if diff > 0.0 else 0.0
        down = -diff if diff < 0.0 else 0.0
        ema = self._up
        if ema != up:
            self._up = (self._decay * ema + self._alpha * up) / self._norm
        ema = self._down
        if ema != down:
            self._down = (self._decay * ema + self._alpha * down) / self._norm
        if self._count >= self.period:
            down_avg = self._down
            self.value = 100.0 if down_avg == 0.0 else 100.0 - 100.0 / (1.0 + self._up / down_avg)

    @property
    def ready(self) -> bool:
        """True from index n-1."""
        return self.value is not None
