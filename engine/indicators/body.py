"""Candle body size."""

from __future__ import annotations

from engine.market.candle import Candle


def body_pct(candle: Candle) -> float:
    """``(close - open) / open * 100``: positive for a bullish body, negative for a bearish one."""
    return (candle.close - candle.open) / candle.open * 100.0
