"""Closed 1m candles from the live streams: kline pushes or raw trades.

Both builders are synchronous, deterministic state machines: they return the candles that an
event finalises, and never look at the wall clock themselves (``on_time`` is told the time,
normally the exchange timestamp of the latest trade), so tests replay them exactly.
"""

from __future__ import annotations

import logging
import math

from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.market.events import KlineUpdate, TradeTick

logger = logging.getLogger(__name__)

DEFAULT_GRACE_MS = 3_000


class KlineCandleBuilder:
    """Finalises the forming kline of one symbol.

    BingX pushes the forming candle about once a second with its open time ``T`` and no closed
    flag. The bar for ``T`` is final when an update with a later ``T`` arrives, or when
    ``on_time`` reports a time at or past ``T + 60s + grace``. Updates for an already final (or
    older) minute are dropped with a log line: the bar has been handed on and cannot change.
    """

    __slots__ = ("symbol", "grace_ms", "_forming", "_last_final_ms", "late_updates", "rejected")

    def __init__(self, symbol: str, *, grace_ms: int = DEFAULT_GRACE_MS) -> None:
        self.symbol = symbol
        self.grace_ms = grace_ms
        self._forming: Candle | None = None
        self._last_final_ms: int | None = None
        self.late_updates = 0
        self.rejected = 0

    @property
    def forming(self) -> Candle | None:
        """The latest push of the current minute (not final; never use it for decisions)."""
        return self._forming

    def on_update(self, update: KlineUpdate) -> list[Candle]:
        """Apply one kline push; return the candle it finalises (at most one)."""
        if update.symbol != self.symbol:
            self._reject(f"kline for {update.symbol!r} sent to the {self.symbol!r} builder")
            return []
        t = update.open_time_ms
        if t % ONE_MINUTE_MS:
            self._reject(f"kline open time {t} is not minute-aligned")
            return []
        if self._last_final_ms is not None and t <= self._last_final_ms:
            self.late_updates += 1
            logger.info("late kline update for final minute %d dropped", t, extra={"symbol": self.symbol})
            return []
        candle = Candle(t, update.open, update.high, update.low, update.close, update.volume)
        forming = self._forming
        if forming is None or t == forming.open_time_ms:
            self._forming = candle
            return []
        if t < forming.open_time_ms:
            self.late_updates += 1
            logger.info("stale kline update %d (forming %d) dropped", t, forming.open_time_ms, extra={"symbol": self.symbol})
            return []
        self._forming = candle
        self._last_final_ms = forming.open_time_ms
        return [forming]

    def clock_cannot_close(self, now_ms: int) -> bool:
        """True when ``on_time(now_ms)`` finalises nothing now *and* after any later updates.

        Holds while a candle is forming and ``now_ms`` is before its end plus grace: the forming
        open time never decreases (older updates are dropped), so the deadline only moves later.
        With nothing forming, a later update could start a candle this time does close, so False.
        """
        forming = self._forming
        return forming is not None and now_ms < forming.open_time_ms + ONE_MINUTE_MS + self.grace_ms

    def on_time(self, now_ms: int) -> list[Candle]:
        """Finalise the forming candle once ``now_ms`` is past its minute plus the grace period."""
        forming = self._forming
        if forming is None or now_ms < forming.open_time_ms + ONE_MINUTE_MS + self.grace_ms:
            return []
        self._forming = None
        self._last_final_ms = forming.open_time_ms
        return [forming]

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        logger.warning("kline update rejected: %s", reason, extra={"symbol": self.symbol})


class TradeCandleBuilder:
    """Builds 1m candles from individual trades of one symbol.

    open = price of the earliest trade of the minute, close = price of the latest (by exchange
    time; ties keep arrival order), high/low = extremes, volume = sum of quantities. A minute is
    final when a trade of a later minute arrives or ``on_time`` passes its end plus the grace
    period; later trades for it are dropped with a log line. Minutes without trades produce no
    candle (the feed's gap backfill asks REST for them).
    """

    __slots__ = (
        "symbol", "grace_ms", "_minute", "_o", "_h", "_l", "_c", "_v", "_first_ms", "_last_ms",
        "_last_final_ms", "late_trades", "rejected",
    )

    def __init__(self, symbol: str, *, grace_ms: int = DEFAULT_GRACE_MS) -> None:
        self.symbol = symbol
        self.grace_ms = grace_ms
        self._minute: int | None = None
        self._o = self._h = self._l = self._c = self._v = 0.0
        self._first_ms = self._last_ms = 0
        self._last_final_ms: int | None = None
        self.late_trades = 0
        self.rejected = 0

    def on_trade(self, tick: TradeTick) -> list[Candle]:
        """Add one trade; return the candle it finalises (at most one)."""
        price = tick.price
        qty = tick.qty
        if tick.symbol != self.symbol:
            self._reject(f"trade for {tick.symbol!r} sent to the {self.symbol!r} builder")
            return []
        if not (math.isfinite(price) and price > 0.0 and math.isfinite(qty) and qty >= 0.0):
            self._reject(f"bad trade price={price} qty={qty} at {tick.time_ms}")
            return []
        t = tick.time_ms
        minute = t - t % ONE_MINUTE_MS
        if self._last_final_ms is not None and minute <= self._last_final_ms:
            self.late_trades += 1
            logger.info("late trade at %d for final minute %d dropped", t, minute, extra={"symbol": self.symbol})
            return []
        current = self._minute
        if current == minute:
            if price > self._h:
                self._h = price
            if price < self._l:
                self._l = price
            if t < self._first_ms:
                self._o = price
                self._first_ms = t
            if t >= self._last_ms:
                self._c = price
                self._last_ms = t
            self._v += qty
            return []
        finished = [] if current is None else [self._finish()]
        self._minute = minute
        self._o = self._h = self._l = self._c = price
        self._v = qty
        self._first_ms = self._last_ms = t
        return finished

    def on_time(self, now_ms: int) -> list[Candle]:
        """Finalise the forming minute once ``now_ms`` is past its end plus the grace period."""
        minute = self._minute
        if minute is None or now_ms < minute + ONE_MINUTE_MS + self.grace_ms:
            return []
        return [self._finish()]

    def _finish(self) -> Candle:
        minute = self._minute
        assert minute is not None
        candle = Candle(minute, self._o, self._h, self._l, self._c, self._v)
        self._minute = None
        self._last_final_ms = minute
        return candle

    def _reject(self, reason: str) -> None:
        self.rejected += 1
        logger.warning("trade rejected: %s", reason, extra={"symbol": self.symbol})
