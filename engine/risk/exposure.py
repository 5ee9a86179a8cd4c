"""Open exposure as the database knows it (the bot's own trades, not hand-opened positions)."""

from __future__ import annotations

from decimal import Decimal

from db.models import Trade, TradeState

from .gate import Exposure

OPEN_TRADE_STATES = (TradeState.PENDING, TradeState.OPEN, TradeState.CLOSING)


def trade_exposure(trade: Trade) -> Exposure:
    """A trade as an :class:`Exposure`; a pending entry is valued at its planned entry."""
    qty = Decimal(trade.qty) if trade.state is not TradeState.PENDING or trade.qty > 0 else Decimal(trade.initial_qty)
    if trade.entry_price is not None:
        entry = Decimal(trade.entry_price)
    else:  # not filled yet: planned entry = initial stop +/- 1R
        per_unit = Decimal(trade.risk_per_unit)
        entry = Decimal(trade.initial_stop) + (per_unit if trade.side.upper() == "LONG" else -per_unit)
    return Exposure(trade.symbol, trade.strategy, trade.side.upper(), qty, entry, Decimal(trade.stop))


async def open_exposures(mode: str) -> list[Exposure]:
    """Every open or pending trade of ``mode``."""
    trades = await Trade.filter(mode=mode, state__in=list(OPEN_TRADE_STATES)).order_by("id")
    return [trade_exposure(t) for t in trades]
