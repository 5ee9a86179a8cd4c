"""Typed market events the candle builders consume (the exchange adapter converts its frames to these)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.fast_init import fast_frozen_init


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class TradeTick:
    """One public trade: price and quantity at an exchange timestamp (UTC ms)."""

    symbol: str
    price: float
    qty: float
    time_ms: int


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class KlineUpdate:
    """A push of the forming 1m candle (BingX ``@kline_1m``): cumulative values for ``open_time_ms``.

    The stream has no "closed" flag: the candle is final when an update with a later open time
    arrives, or when the clock passes the minute's end plus a grace period.
    """

    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
