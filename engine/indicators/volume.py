"""Volume ratio: this candle's volume over the mean of the ``window`` candles before it."""

from __future__ import annotations

from engine.indicators.sma import RollingMean
from engine.market.candle import Candle


class VolumeRatio:
    """``volume_t / mean(volume_{t-w} .. volume_{t-1})`` (the current candle is excluded).

    Ready once ``window`` earlier candles exist. When the earlier mean is exactly zero (flat,
    trade-less minutes), the ratio is ``inf`` for a positive volume (any volume is infinitely many
    times nothing, which is what ``volume > 3 * mean`` says) and not ready for a zero volume.
    """

    __slots__ = ("window", "value", "_mean")

    def __init__(self, window: int) -> None:
        self.window = window
        self._mean = RollingMean(window)
        self.value: float | None = None

    def update(self, candle: Candle) -> None:
        """Consume the next closed candle."""
        mean_window = self._mean
        volume = candle.volume
        if mean_window.full:
            mean = mean_window._sum / self.window
            if mean > 0.0:
                self.value = volume / mean
            else:
                self.value = float("inf") if volume > 0.0 else None
        mean_window.push(volume)

    @property
    def ready(self) -> bool:
        """True when the ratio for the last candle is defined."""
        return self.value is not None
