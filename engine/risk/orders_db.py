"""Small, forward-only writes to the ``orders`` table made by reconciliation and the emergency stop.

The execution layer owns the normal order lifecycle (``engine/execution/order_store.py``);
these helpers follow the same rules so rows written here look the same: a row exists with
status CREATED before its request is sent, statuses only move forward, and every change is
an ``OrderEvent`` with source ``reconcile`` or ``emergency``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tortoise.transactions import in_transaction

from db.models import Order, OrderEvent, OrderIntent, OrderStatus
from engine.exchange.bingx import Order as ExchangeOrder
from engine.exchange.bingx import OrderStatus as ExchangeStatus

FINAL = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})
WORKING = [s for s in OrderStatus if s not in FINAL]
_RANK = {OrderStatus.CREATED: 0, OrderStatus.SENT: 1, OrderStatus.UNKNOWN: 1, OrderStatus.NEW: 2,
         OrderStatus.PARTIALLY_FILLED: 3}


def db_status(status: ExchangeStatus) -> OrderStatus:
    """The exchange's status in our vocabulary."""
    return {
        ExchangeStatus.NEW: OrderStatus.NEW,
        ExchangeStatus.PENDING: OrderStatus.NEW,
        ExchangeStatus.RUNNING: OrderStatus.NEW,
        ExchangeStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
        ExchangeStatus.FILLED: OrderStatus.FILLED,
        ExchangeStatus.CANCELED: OrderStatus.CANCELLED,
        ExchangeStatus.EXPIRED: OrderStatus.EXPIRED,
        ExchangeStatus.FAILED: OrderStatus.REJECTED,
    }.get(status, OrderStatus.UNKNOWN)


async def create_order(*, client_order_id: str, mode: str, symbol: str, intent: OrderIntent, side: str,
                       position_side: str, order_type: str, quantity: Decimal, stop_price: Decimal | None,
                       reduce_only: bool, trade_id: int | None, source: str, detail: dict[str, Any] | None = None) -> Order:
    """Store an order as CREATED, before it is sent."""
    async with in_transaction():
        order = await Order.create(client_order_id=client_order_id, trade_id=trade_id, mode=mode, symbol=symbol,
                                   intent=intent, side=side, position_side=position_side, order_type=order_type,
                                   quantity=quantity, stop_price=stop_price, reduce_only=reduce_only,
                                   status=OrderStatus.CREATED)
        await OrderEvent.create(order=order, status=OrderStatus.CREATED, source=source, detail=detail or {})
    return order


async def set_status(order: Order, status: OrderStatus, source: str, *, error: str = "",
                     detail: dict[str, Any] | None = None) -> None:
    """Force a status our side decided (SENT, UNKNOWN, REJECTED, CANCELLED when absent)."""
    order.status = status
    if error:
        order.error = error[:255]
    async with in_transaction():
        await order.save(update_fields=["status", "error", "updated_at"])
        await OrderEvent.create(order=order, status=status, source=source, detail=detail or {"error": error[:200]})


async def apply_exchange(order: Order, ex: ExchangeOrder, source: str) -> bool:
    """Bring ``order`` forward to what the exchange reports; returns True when something changed."""
    changed: list[str] = []
    if ex.order_id and order.exchange_order_id != ex.order_id:
        order.exchange_order_id = ex.order_id
        changed.append("exchange_order_id")
    if ex.executed_qty > (order.filled_qty or 0):
        order.filled_qty = ex.executed_qty
        changed.append("filled_qty")
        if ex.avg_price > 0:
            order.avg_price = ex.avg_price
            changed.append("avg_price")
    new_status = db_status(ex.status)
    moved = (order.status not in FINAL and new_status is not OrderStatus.UNKNOWN and new_status != order.status
             and _RANK.get(new_status, 4) >= _RANK.get(order.status, 4))
    if moved:
        order.status = new_status
        changed.append("status")
    if not changed:
        return False
    async with in_transaction():
        await order.save(update_fields=sorted(set(changed)) + ["updated_at"])
        if moved:
            await OrderEvent.create(order=order, status=new_status, source=source,
                                    detail={"executed_qty": str(ex.executed_qty), "avg_price": str(ex.avg_price),
                                            "exchange_status": ex.status.value})
    return True
