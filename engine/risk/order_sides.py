"""Which position an exchange order belongs to, and whether it can only reduce it.

The exchange-side twin of :func:`engine.exchange.bingx.contracts.is_closing` (which reads an
``OrderRequest``): the emergency stop and reconciliation classify the orders BingX reports with it.
"""

from __future__ import annotations

from engine.exchange.bingx import Order as ExchangeOrder

STOP_TYPES = frozenset({"STOP_MARKET", "STOP", "TRAILING_STOP_MARKET"})


def is_closing_order(order: ExchangeOrder) -> bool:
    """True for an order that can only reduce a position.

    reduceOnly / closePosition orders close; otherwise (hedge mode, where BingX rejects reduceOnly)
    the side decides: SELL on the LONG side and BUY on the SHORT side close.
    """
    if order.reduce_only or order.close_position:
        return True
    return (order.side, order.position_side) in (("SELL", "LONG"), ("BUY", "SHORT"))


def position_side_of(order: ExchangeOrder) -> str:
    """The position side ("LONG"/"SHORT") a closing order reduces (one-way mode: a SELL closes a LONG)."""
    if order.position_side in ("LONG", "SHORT"):
        return order.position_side
    return "LONG" if order.side == "SELL" else "SHORT"


def position_key(order: ExchangeOrder) -> tuple[str, str]:
    """``(symbol, side)`` of the position a closing order protects."""
    return order.symbol, position_side_of(order)


def is_protective_stop(order: ExchangeOrder) -> bool:
    """A closing stop: what limits the loss of a position while it stays open."""
    return order.type in STOP_TYPES and is_closing_order(order)
