"""Closed 1m candles from the live streams: kline pushes or raw trades.

Both builders are synchronous, deterministic state machines: they return the candles that an
event finalises, and never look at the wall clock themselves (``on_time`` is told the time,
normally the exchange timestamp of the latest trade; the kline builder is also told when each
push was received, to judge staleness), so tests replay them exactly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.market.events import KlineUpdate, TradeTick

logger = logging.getLogger(__name__)

DEFAULT_GRACE_MS = 3_000
# BingX pushes the forming kline about every second. In the recording (shared/data/market/bingx/bingx-swap-ws-*.jsonl.gz)
# the widest gap between two pushes is 2.25 s, at the minute's end (the last push of minute T 0.31 s after its end, the
# first of T+1 at 2.56 s): a kline stream silent for over 5 s has stalled or died.
DEFAULT_STALE_AFTER_S = 5.0


class KlineCandleBuilder:
    """Finalises the forming kline of one symbol.

    BingX pushes the forming candle about once a second with its open time ``T`` and no closed
    flag. The bar for ``T`` is final when an update with a later ``T`` arrives, or when
    ``on_time`` reports a time at or past ``T + 60s + grace``. Updates for an already final (or
    older) minute are dropped with a log line: the bar has been handed on and cannot change.

    A push is a snapshot: the minute's latest push is its complete bar only if the stream kept
    pushing until the minute was over. When the latest push of the minute being finalised is more
    than ``stale_after_s`` older than the event that finalises it (the next minute's first push,
    or the clock), or the caller says the stream is down, the snapshot may miss the end of the
    minute: it is not returned but *withheld* (``take_withheld``), for the caller to fetch the
    minute from the exchange instead. Without receive times (``received_s``/``now_s`` omitted),
    nothing is judged stale.
    """

    __slots__ = ("symbol", "grace_ms", "stale_after_s", "_forming", "_forming_seen_s", "_last_final_ms", "_withheld",
                 "late_updates", "rejected", "stale_closes")

    def __init__(self, symbol: str, *, grace_ms: int = DEFAULT_GRACE_MS, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> None:
        self.symbol = symbol
        self.grace_ms = grace_ms
        self.stale_after_s = stale_after_s
        self._forming: Candle | None = None
        self._forming_seen_s: float | None = None  # local monotonic receive time of the forming bar's latest push
        self._last_final_ms: int | None = None
        self._withheld: list[Candle] = []
        self.late_updates = 0
        self.rejected = 0
        self.stale_closes = 0

    @property
    def forming(self) -> Candle | None:
        """The latest push of the current minute (not final; never use it for decisions)."""
        return self._forming

    def on_update(self, update: KlineUpdate, received_s: float | None = None) -> list[Candle]:
        """Apply one kline push received at local monotonic time ``received_s``; return the candle it finalises (at most one).

        A push of a later minute finalises the forming one: it is returned when its latest push came at most
        ``stale_after_s`` before this one, else withheld (a silence around the minute's end).
        """
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
            self._forming_seen_s = received_s
            return []
        if t < forming.open_time_ms:
            self.late_updates += 1
            logger.info("stale kline update %d (forming %d) dropped", t, forming.open_time_ms, extra={"symbol": self.symbol})
            return []
        seen_s = self._forming_seen_s
        self._forming = candle
        self._forming_seen_s = received_s
        self._last_final_ms = forming.open_time_ms
        # this push proves the forming minute is over (at or before received_s), so a short silence before it means
        # the forming minute's latest push came no more than stale_after_s before the minute's end
        return self._finalised(forming, self._silent(seen_s, received_s))

    def clock_cannot_close(self, now_ms: int) -> bool:
        """True when ``on_time(now_ms)`` finalises nothing now *and* after any later updates.

        Holds while a candle is forming and ``now_ms`` is before its end plus grace: the forming
        open time never decreases (older updates are dropped), so the deadline only moves later.
        With nothing forming, a later update could start a candle this time does close, so False.
        """
        forming = self._forming
        return forming is not None and now_ms < forming.open_time_ms + ONE_MINUTE_MS + self.grace_ms

    def on_time(self, now_ms: int, now_s: float | None = None, *, stream_down: bool = False) -> list[Candle]:
        """Finalise the forming candle once ``now_ms`` is past its minute plus the grace period.

        ``now_s`` is the local monotonic time at which ``now_ms`` was read. The candle is returned when its
        latest push is at most ``stale_after_s`` old then and the stream is not known to be down
        (``stream_down``); otherwise it is withheld (``take_withheld``).
        """
        forming = self._forming
        if forming is None or now_ms < forming.open_time_ms + ONE_MINUTE_MS + self.grace_ms:
            return []
        self._forming = None
        self._last_final_ms = forming.open_time_ms
        return self._finalised(forming, stream_down or self._silent(self._forming_seen_s, now_s))

    def take_withheld(self) -> Sequence[Candle]:
        """The final minutes withheld as stale since the last call (their last snapshots), oldest first."""
        withheld = self._withheld
        if not withheld:
            return ()  # the usual answer, after every push: no list built
        self._withheld = []
        return withheld

    def _silent(self, seen_s: float | None, now_s: float | None) -> bool:
        # Local monotonic receive times, not exchange time: a kline push carries no event time (only its minute),
        # the exchange-time clocks at hand (trade timestamps, the runtime's synced clock) can run apart from the
        # arrival of frames (a replay, a paused simulator, a clock resync), and what makes a snapshot stale is
        # this connection's silence, which only a local clock that never jumps measures.
        return seen_s is not None and now_s is not None and now_s - seen_s > self.stale_after_s

    def _finalised(self, candle: Candle, stale: bool) -> list[Candle]:
        if not stale:
            return [candle]
        self.stale_closes += 1
        self._withheld.append(candle)
        return []

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
