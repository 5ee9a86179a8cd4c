"""Sanity checks on closed 1m candles before anything computes with them.

A rejected candle is logged with its reason and never reaches the indicators: one absurd
print (a price off by a factor of 100, an inverted high/low) would otherwise poison every
moving average for hours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.market.candle import ONE_MINUTE_MS, Candle


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
        limit = rules.max_jump_pct / 100.0
        ref = prev.close
        if h > ref * (1.0 + limit) or lo < ref * (1.0 - limit):
            return f"absurd_jump: range {lo}..{h} is more than {rules.max_jump_pct}% from the previous close {ref}"
    return None
