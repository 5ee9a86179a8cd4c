"""Aggregation of closed 1m candles into higher-timeframe candles (5m by default).

Bucket of a 1m candle: ``floor(open_time / period) * period``; open = first open, high = max,
low = min, close = last close, volume = sum. A bucket is complete once a 1m candle of a later
bucket has closed, or once its own last minute (``:04``, ``:09``, ... for 5m) has closed. So
when the 10:04 candle closes, the 10:00 5m candle is complete and usable; when 10:03 closes, the
latest complete one is 09:55 (no look-ahead). Missing minutes are not filled in: a bucket with
gaps is still emitted once complete, built from the minutes that exist.
"""

from __future__ import annotations

from engine.market.candle import ONE_MINUTE_MS, Candle

FIVE_MINUTES_MS = 5 * ONE_MINUTE_MS

_NOTHING: tuple[Candle, ...] = ()


class CandleAggregator:
    """Builds ``period_ms`` candles from a stream of closed, time-ordered 1m candles."""

    __slots__ = ("period_ms", "_last_minute_offset", "_bucket", "_open", "_high", "_low", "_close", "_volume")

    def __init__(self, period_ms: int = FIVE_MINUTES_MS) -> None:
        if period_ms <= 0 or period_ms % ONE_MINUTE_MS:
            raise ValueError(f"period_ms must be a positive multiple of one minute, got {period_ms}")
        self.period_ms = period_ms
        self._last_minute_offset = period_ms - ONE_MINUTE_MS
        self._bucket: int | None = None
        self._open = self._high = self._low = self._close = self._volume = 0.0

    def update(self, candle: Candle) -> tuple[Candle, ...]:
        """Add a closed 1m candle; return the higher-timeframe candles this completes (oldest first)."""
        t = candle.open_time_ms
        offset = t % self.period_ms
        bucket = t - offset
        done: tuple[Candle, ...] = _NOTHING
        if bucket != self._bucket:
            if self._bucket is not None:
                done = (self._emit(),)
            self._bucket = bucket
            self._open = candle.open
            self._high = candle.high
            self._low = candle.low
            self._close = candle.close
            self._volume = candle.volume
        else:
            if candle.high > self._high:
                self._high = candle.high
            if candle.low < self._low:
                self._low = candle.low
            self._close = candle.close
            self._volume += candle.volume
        if offset == self._last_minute_offset:
            done = done + (self._emit(),)
        return done

    @property
    def forming(self) -> Candle | None:
        """The incomplete bucket so far (never used for decisions; for display only)."""
        if self._bucket is None:
            return None
        return Candle(self._bucket, self._open, self._high, self._low, self._close, self._volume)

    def _emit(self) -> Candle:
        bucket = self._bucket
        assert bucket is not None
        self._bucket = None
        return Candle(bucket, self._open, self._high, self._low, self._close, self._volume)


def context_is_usable(context: Candle, period_ms: int, one_minute_open_ms: int) -> bool:
    """The 5m-context rule: a complete candle is usable for the 1m candle at ``t`` iff its end <= t + 1 minute."""
    return context.open_time_ms + period_ms <= one_minute_open_ms + ONE_MINUTE_MS
