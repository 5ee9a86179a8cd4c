"""Small, forward-only writes to the ``orders`` table made by reconciliation and the emergency stop.

The execution layer owns the normal order lifecycle (``engine/execution/order_store.py``);
these helpers follow the same rules so rows written here look the same: a row exists with
status CREATED before its request is sent, statuses only move forward, and every change is
an ``OrderEvent`` with source ``reconcile`` or ``emergency``. Executed quantity learned here
is booked as a ``Fill`` (same key scheme as the execution layer's REST-derived fills, so
it is recorded once), carrying the exchange's realised PnL and commission: the balance
check of reconciliation explains wallet changes from these rows.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tortoise.transactions import in_transaction

from db.models import Fill, Order, OrderEvent, OrderIntent, OrderStatus
from engine.exchange.bingx import Order as ExchangeOrder
from engine.exchange.bingx import OrderStatus as ExchangeStatus

ZERO = Decimal(0)
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
    async with in_transaction():
        # Re-read first: the execution layer may have booked fills of this order meanwhile,
        # and a stale filled_qty would book them a second time.
        if order.pk is not None:
            await order.refresh_from_db()
        changed: list[str] = []
        if ex.order_id and order.exchange_order_id != ex.order_id:
            order.exchange_order_id = ex.order_id
            changed.append("exchange_order_id")
        if ex.executed_qty > (order.filled_qty or 0):
            await _book_fill(order, ex)
            changed += ["filled_qty", "avg_price"]
        new_status = db_status(ex.status)
        moved = (order.status not in FINAL and new_status is not OrderStatus.UNKNOWN and new_status != order.status
                 and _RANK.get(new_status, 4) >= _RANK.get(order.status, 4))
        if moved:
            order.status = new_status
            changed.append("status")
        if not changed:
            return False
        await order.save(update_fields=sorted(set(changed)) + ["updated_at"])
        if moved:
            await OrderEvent.create(order=order, status=new_status, source=source,
                                    detail={"executed_qty": str(ex.executed_qty), "avg_price": str(ex.avg_price),
                                            "exchange_status": ex.status.value})
    return True


async def _book_fill(order: Order, ex: ExchangeOrder) -> None:
    """Record the quantity executed beyond what is booked as one aggregated fill, and move the order's totals.

    Fee and realised PnL are the exchange's order totals minus what earlier fills of the order
    carry (BingX ``commission`` is negative when paid; ``Fill.fee`` is positive when paid).
    """
    delta = ex.executed_qty - (order.filled_qty or ZERO)
    booked_qty = order.filled_qty or ZERO
    booked_quote = (order.avg_price or ZERO) * booked_qty
    price = ((ex.executed_qty * ex.avg_price - booked_quote) / delta) if ex.avg_price > 0 else ZERO
    if price <= 0:
        price = ex.avg_price if ex.avg_price > 0 else (order.avg_price or ZERO)
    key = f"{ex.order_id or order.exchange_order_id or order.client_order_id}:{ex.executed_qty}"
    if not await Fill.exists(fill_key=key):
        earlier = await Fill.filter(order_id=order.pk)
        fee = -ex.commission - sum((f.fee for f in earlier), ZERO)
        pnl = ex.profit - sum((f.realized_pnl for f in earlier), ZERO)
        await Fill.create(order_id=order.pk, fill_key=key[:96], price=price, qty=delta, fee=fee, realized_pnl=pnl,
                          time_ms=ex.update_time_ms or ex.time_ms or 0)
    order.filled_qty = ex.executed_qty
    if ex.avg_price > 0:
        order.avg_price = ex.avg_price
    elif price > 0:
        order.avg_price = (booked_quote + price * delta) / ex.executed_qty
