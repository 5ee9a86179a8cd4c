"""The levels of one trade, in prices and in R multiples of the initial risk."""

from __future__ import annotations

from dataclasses import dataclass

from strategies.base import Side
from strategies.params import TradeManagementParams

# Two R levels closer than this are the same level (12 ATR / 3 ATR is 4R up to float rounding).
R_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class PartialLevel:
    """Close ``fraction`` of the initial quantity at ``price`` (= entry + at_r * R in the trade's favour)."""

    at_r: float
    fraction: float
    price: float


@dataclass(frozen=True, slots=True)
class TrailLevel:
    """Once ``trigger_price`` (``at_r``) trades, move the stop to ``stop_price`` (``stop_r``)."""

    at_r: float
    stop_r: float
    trigger_price: float
    stop_price: float


@dataclass(frozen=True, slots=True)
class TradePlan:
    """Entry, stop, target and the management levels of one position.

    ``risk_per_unit`` (1R) is ``|entry - stop|``. Partial and trailing levels at or beyond the
    target are dropped: the target closes the remainder there (for the default LONG, the 4R
    partial coincides with the 12-ATR target).
    """

    side: Side
    entry: float
    stop: float
    target: float
    atr: float
    risk_per_unit: float
    target_r: float
    partials: tuple[PartialLevel, ...]
    trailing: tuple[TrailLevel, ...]

    @classmethod
    def from_entry(
        cls,
        side: Side,
        entry: float,
        atr: float,
        stop_atr: float,
        target_atr: float,
        management: TradeManagementParams,
    ) -> "TradePlan":
        """Levels from an entry price (live: the actual fill) and the signal's ATR."""
        if not (entry > 0 and atr > 0 and stop_atr > 0 and target_atr > 0):
            raise ValueError(f"cannot plan a trade with entry={entry} atr={atr} stop_atr={stop_atr} target_atr={target_atr}")
        sign = side.sign
        stop = entry - sign * stop_atr * atr
        target = entry + sign * target_atr * atr
        r = abs(entry - stop)
        target_r = target_atr / stop_atr
        partials = tuple(
            PartialLevel(p.at_r, p.fraction, entry + sign * p.at_r * r)
            for p in management.partial_exits
            if p.at_r < target_r - R_EPSILON
        )
        trailing = tuple(
            TrailLevel(t.at_r, t.stop_r, entry + sign * t.at_r * r, entry + sign * t.stop_r * r)
            for t in management.trailing
            if t.at_r < target_r - R_EPSILON
        )
        return cls(side, entry, stop, target, atr, r, target_r, partials, trailing)

    def price_at_r(self, r_multiple: float) -> float:
        """The price ``r_multiple`` R from the entry in the trade's favour."""
        return self.entry + self.side.sign * r_multiple * self.risk_per_unit
