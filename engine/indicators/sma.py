"""Simple moving average of closes, with a running sum that cannot drift."""

from __future__ import annotations

import math
from collections import deque

from engine.market.candle import Candle


class RollingMean:
    """Mean of the last ``window`` pushed values in O(1) per push.

    A plain running sum (add the new value, subtract the leaving one) accumulates rounding
    error without bound over a long series; re-summing the window exactly (``math.fsum``) every
    ``window`` pushes keeps the error at a few ulps of the window's magnitude while the
    amortised cost stays O(1).
    """

    __slots__ = ("window", "_values", "_sum", "_until_resum")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._values: deque[float] = deque(maxlen=window)
        self._sum = 0.0
        self._until_resum = window

    def push(self, value: float) -> None:
        """Add a value, dropping the oldest once the window is full."""
        values = self._values
        if len(values) == self.window:
            self._sum -= values[0]
        values.append(value)
        self._until_resum -= 1
        if self._until_resum:
            self._sum += value
        else:
            self._sum = math.fsum(values)
            self._until_resum = self.window

    @property
    def full(self) -> bool:
        """True once ``window`` values have been pushed."""
        return len(self._values) == self.window

    @property
    def mean(self) -> float | None:
        """Mean of the window, or ``None`` before it is full."""
        if len(self._values) < self.window:
            return None
        return self._sum / self.window

    def __len__(self) -> int:
        return len(self._values)


class Sma:
    """``SMA(n)``: mean of the last n closes (``ta.trend.SMAIndicator``); ready from index n-1."""

    __slots__ = ("period", "value", "_mean")

    def __init__(self, period: int) -> None:
        self.period = period
        self._mean = RollingMean(period)
        self.value: float | None = None

    def update(self, candle: Candle) -> None:
        """Consume the next closed candle."""
        mean = self._mean
        mean.push(candle.close)
        if mean.full:
            self.value = mean._sum / self.period

    @property
    def ready(self) -> bool:
        """True once n candles have been seen."""
        return self.value is not None
