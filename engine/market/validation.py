"""Sanity checks on closed 1m candles before anything computes with them.

A rejected candle is logged with its reason and never reaches the indicators: one absurd
print (a price off by a factor of 100, an inverted high/low) would otherwise poison every
moving average for hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from engine.market.candle import ONE_MINUTE_MS, Candle

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ValidationRules:
    """Limits for :func:`check_candle`.

    ``max_jump_pct``: largest allowed distance of any of the candle's prices from the previous
    accepted close (real 1m data in ``shared/data/market`` peaks at ~40% on wicks, so 75% only
    catches broken prints). ``reanchor_after``: after this many consecutive jump rejections that
    agree with each other, the new level is accepted (a real repricing, not a bad tick).
    """

    max_jump_pct: float = 75.0
    reanchor_after: int = 3


def check_candle(candle: Candle, prev: Candle | None, rules: ValidationRules) -> str | None:
    """Return why ``candle`` must be rejected given the previous accepted candle, or ``None`` if it is fine.

    Checks, in order: finite numbers; positive prices; non-negative volume; ``low <= open, close <= high``;
    minute-aligned open time; strictly after the previous candle (duplicate / out of order); and
    no absurd jump from the previous close.
    """
    o = candle.open
    h = candle.high
    lo = candle.low
    c = candle.close
    v = candle.volume
    if not (math.isfinite(o) and math.isfinite(h) and math.isfinite(lo) and math.isfinite(c) and math.isfinite(v)):
        return "non_finite: a price or the volume is NaN or infinite"
    if o <= 0.0 or h <= 0.0 or lo <= 0.0 or c <= 0.0:
        return f"non_positive_price: o={o} h={h} l={lo} c={c}"
    if v < 0.0:
        return f"negative_volume: {v}"
    if not (lo <= o <= h and lo <= c <= h):
        return f"inverted_prices: o={o} h={h} l={lo} c={c}"
    t = candle.open_time_ms
    if t % ONE_MINUTE_MS:
        return f"off_grid_time: open_time_ms={t} is not minute-aligned"
    if prev is not None:
        pt = prev.open_time_ms
        if t == pt:
            return f"duplicate_time: {t}"
        if t < pt:
            return f"out_of_order: {t} is before the previous candle {pt}"
        return jump_reason(lo, h, prev.close, rules)
    return None


def jump_reason(low: float, high: float, ref: float, rules: ValidationRules, what: str = "the previous close") -> str | None:
    """Why prices ranging ``low..high`` are an absurd jump from the reference price ``ref`` (``what`` names it), or ``None``.

    The one jump rule of the market data: a closed candle against the previous close (:func:`check_candle`) and a
    trade price against the last accepted one (``engine.market.stream.TickGuard``).
    """
    limit = rules.max_jump_pct / 100.0
    if high > ref * (1.0 + limit) or low < ref * (1.0 - limit):
        return f"absurd_jump: range {low}..{high} is more than {rules.max_jump_pct}% from {what} {ref}"
    return None


class Reanchor(Generic[T]):
    """The re-anchoring rule: ``after`` consecutive jump rejections that agree with each other are a real repricing.

    ``agree(previous, item)`` tells whether a rejected item is consistent with the rejected one before it; a
    disagreeing item starts a new streak. Shared by :class:`~engine.market.stream.CandleStream` (candles) and
    :class:`~engine.market.stream.TickGuard` (trade prices).
    """

    __slots__ = ("after", "agree", "streak")

    def __init__(self, after: int, agree: Callable[[T, T], bool]) -> None:
        self.after = after
        self.agree = agree
        self.streak: list[T] = []

    def jumped(self, item: T) -> bool:
        """``item`` was rejected as a jump: True when it completes a streak, i.e. it must be accepted as the new level."""
        streak = self.streak
        if streak and not self.agree(streak[-1], item):
            streak.clear()
        streak.append(item)
        if len(streak) < self.after:
            return False
        streak.clear()
        return True

    def reset(self) -> None:
        """An item was accepted without a jump: any streak of rejections is over."""
        if self.streak:
            self.streak.clear()
