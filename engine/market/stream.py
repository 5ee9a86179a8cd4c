"""The validated, ordered sequence of closed 1m candles of one symbol (shared by live and backtest).

``CandleStream.accept`` is the single gate every closed candle passes, whether it comes from
the kline stream, the trade stream, a REST backfill or a backtest file: validation with a
logged rejection, gap accounting, and a bounded buffer of recent candles.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field

from engine.market.candle import ONE_MINUTE_MS, Candle
from engine.market.validation import Reanchor, ValidationRules, check_candle, jump_reason

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StreamStats:
    """Counters a health check or a backtest report can show."""

    accepted: int = 0
    rejected: int = 0
    gaps: int = 0
    missing_minutes: int = 0
    rejections_by_reason: dict[str, int] = field(default_factory=dict)


class CandleStream:
    """Validates closed candles, tracks gaps and keeps the last ``maxlen`` accepted candles."""

    __slots__ = ("symbol", "rules", "buffer", "last", "stats", "log_gaps", "_jumps")

    def __init__(
        self,
        symbol: str,
        *,
        rules: ValidationRules | None = None,
        maxlen: int = 1500,
        log_gaps: bool = True,
    ) -> None:
        self.symbol = symbol
        self.rules = rules or ValidationRules()
        self.buffer: deque[Candle] = deque(maxlen=maxlen)
        self.last: Candle | None = None
        self.stats = StreamStats()
        self.log_gaps = log_gaps
        rules = self.rules
        self._jumps: Reanchor[Candle] = Reanchor(rules.reanchor_after, lambda prev, c: check_candle(c, prev, rules) is None)

    def missing_before(self, candle: Candle) -> int:
        """Number of whole minutes missing between the last accepted candle and ``candle`` (0 if none)."""
        last = self.last
        if last is None:
            return 0
        missing = (candle.open_time_ms - last.open_time_ms) // ONE_MINUTE_MS - 1
        return missing if missing > 0 else 0

    def accept(self, candle: Candle) -> bool:
        """Validate ``candle``; append it and return True, or log the rejection and return False."""
        last = self.last
        reason = check_candle(candle, last, self.rules)
        if reason is not None:
            if reason.startswith("absurd_jump") and self._reanchor(candle):
                reason = None
            else:
                self._reject(candle, reason)
                return False
        elif self._jumps.streak:  # checked inline: this runs for every candle of a backtest
            self._jumps.reset()
        if last is not None:
            missing = (candle.open_time_ms - last.open_time_ms) // ONE_MINUTE_MS - 1
            if missing > 0:
                stats = self.stats
                stats.gaps += 1
                stats.missing_minutes += missing
                if self.log_gaps:
                    logger.info(
                        "candle gap: %d minute(s) missing before %d",
                        missing,
                        candle.open_time_ms,
                        extra={"symbol": self.symbol},
                    )
        self.buffer.append(candle)
        self.last = candle
        self.stats.accepted += 1
        return True

    def _reanchor(self, candle: Candle) -> bool:
        """Accept a new price level after ``reanchor_after`` consecutive, mutually consistent jump rejections."""
        if not self._jumps.jumped(candle):
            return False
        logger.warning(
            "price level re-anchored after %d consecutive jump rejections (previous close %s, now %s)",
            self.rules.reanchor_after,
            self.last.close if self.last else None,
            candle.close,
            extra={"symbol": self.symbol},
        )
        return True

    def _reject(self, candle: Candle, reason: str) -> None:
        stats = self.stats
        stats.rejected += 1
        kind = reason.split(":", 1)[0]
        stats.rejections_by_reason[kind] = stats.rejections_by_reason.get(kind, 0) + 1
        last = self.last
        if kind == "duplicate_time" and last is not None and candle == last:
            # The same final bar delivered twice (REST overlap, reconnect): expected, not alarming.
            logger.debug("duplicate candle %d ignored", candle.open_time_ms, extra={"symbol": self.symbol})
            return
        logger.warning("candle rejected (%s): %r", reason, candle, extra={"symbol": self.symbol})


class TickGuard:
    """Sanity gate for the live trade prices of one symbol, before they move ``last_price`` or fill paper orders.

    The candle rule applied to ticks: a price more than ``rules.max_jump_pct`` away from the last accepted trade
    price (before the first one: the ``reference`` the caller passes, the last closed candle's close) is refused
    with a log line and counted in ``rejected``; after ``rules.reanchor_after`` consecutive refused prices that
    agree with each other, the new level is accepted (a real repricing, not a bad print). Non-positive or
    non-finite prices are always refused (the decoder already drops them; this is the last line).
    """

    __slots__ = ("symbol", "rules", "last", "rejected", "_jumps")

    def __init__(self, symbol: str, rules: ValidationRules | None = None) -> None:
        self.symbol = symbol
        self.rules = rules = rules or ValidationRules()
        self.last: float | None = None
        self.rejected = 0
        self._jumps: Reanchor[float] = Reanchor(rules.reanchor_after,
                                                lambda prev, price: jump_reason(price, price, prev, rules) is None)

    def accept(self, price: float, reference: float | None = None) -> bool:
        """Whether ``price`` may be used; an accepted price becomes the reference of the next one."""
        if not (price > 0.0 and math.isfinite(price)):
            return self._refuse(f"non_positive_price: {price}")
        ref = self.last if self.last is not None else reference
        if ref is not None:
            reason = jump_reason(price, price, ref, self.rules, "the last accepted price")
            if reason is None:
                self._jumps.reset()
            elif self._jumps.jumped(price):
                logger.warning("trade price level re-anchored after %d consecutive jump rejections (was %s, now %s)",
                               self.rules.reanchor_after, ref, price, extra={"symbol": self.symbol})
            else:
                return self._refuse(reason)
        self.last = price
        return True

    def _refuse(self, reason: str) -> bool:
        self.rejected += 1
        logger.warning("trade price rejected (%s); not used for prices or paper fills", reason, extra={"symbol": self.symbol})
        return False
