"""Orders in the database: written before they are sent, then every status change and every fill.

Rules this module enforces:

* An order row (client order id, intent, quantities) is committed before the request leaves:
  CREATED then SENT just before the call, or both in the same commit (``create(sent=True)``,
  the order path); UNKNOWN when the call's outcome is unknown. Nothing is ever resent from here: an UNKNOWN order is resolved by lookup.
* Status only moves forward (CREATED/SENT/UNKNOWN -> NEW -> PARTIALLY_FILLED -> a final status);
  a late or duplicated report never takes an order back. Every change is an ``OrderEvent`` with
  its source (placement, stream, poll, lookup, paper).
* A final status reported before the executions it includes are booked (a stop that filled part and
  EXPIRED the rest, its execution report lost to a drop) keeps the order working until they are: the
  stream's fills, or the poll's aggregated fill, then end it as reported.
* Fills are recorded one by one with ``fill_key = <exchange order id>:<cumulative qty>``, so the
  same execution reported by the stream and by a REST poll is stored once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from tortoise.transactions import in_transaction

from db.fast_insert import Ref, Row, insert_rows

from db.models import Fill, Order, OrderEvent, OrderIntent, OrderStatus
from engine.execution.venue import OrderSpec, VenueUpdate

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED})
_RANK = {
    OrderStatus.CREATED: 0,
    OrderStatus.SENT: 1,
    OrderStatus.UNKNOWN: 1,
    OrderStatus.NEW: 2,
    OrderStatus.PARTIALLY_FILLED: 3,
}
# final venue statuses that may come with executions: reported before those executions are booked, the order is
# kept working until they are (the stream's fills follow, or a poll books them)
_ENDS_WITH_FILLS = frozenset({OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED})
ATTACHED_PREFIX = "attached:"  # client id of an order the exchange created from an entry's stopLoss/takeProfit


def attached_client_id(exchange_order_id: str) -> str:
    """The stored id of an attached SL/TP (the exchange gives it none; ':' never occurs in a real one)."""
    return f"{ATTACHED_PREFIX}{exchange_order_id}"


@dataclass(frozen=True, slots=True)
class RecordedFill:
    """A fill newly written by :meth:`OrderStore.apply` (duplicates are not returned)."""

    order_id: int
    price: Decimal
    qty: Decimal
    fee: Decimal
    realized_pnl: Decimal
    time_ms: int


class OrderStore:
    """Persistence of orders, their events and fills for one trading mode."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        # order id -> (final status, executed qty) the venue reported before those executions were booked; in memory
        # only: after a restart the poll of the still-working row reports the end again
        self._ending: dict[int, tuple[OrderStatus, Decimal]] = {}

    async def create(self, spec: OrderSpec, intent: OrderIntent, trade_id: int | None, detail: dict[str, Any] | None = None,
                     *, sent: bool = False) -> Order:
        """Store ``spec`` as CREATED (before anything is sent), in one transaction with its event.

        ``sent=True``: the caller sends it right after this returns, so the row is stored as SENT
        at once (events CREATED and SENT, one commit instead of two on the order path). SENT means
        "the request may be on the wire": it is resolved by lookup exactly like CREATED (tracker,
        reconciliation), so a crash before the request leaves ends in a confirmed absence.
        """
        order = (await insert_rows(self.order_rows(spec, intent, trade_id, detail, sent=sent)))[0]
        assert isinstance(order, Order)
        return order

    def order_rows(self, spec: OrderSpec, intent: OrderIntent, trade_id: int | Ref | None, detail: dict[str, Any] | None = None,
                   *, sent: bool = False, at: int = 0) -> list[Row]:
        """The rows :meth:`create` writes (the order, then its events), for a caller that commits them with others.

        ``at``: the index the order row will have in the caller's batch (its events refer to it).
        """
        order = Row(Order, {
            "client_order_id": spec.client_order_id, "trade_id": trade_id, "mode": self.mode, "symbol": spec.symbol,
            "intent": intent, "side": spec.side, "position_side": spec.position_side, "order_type": spec.order_type,
            "quantity": spec.quantity, "price": None, "stop_price": spec.stop_price, "reduce_only": spec.closing,
            "status": OrderStatus.SENT if sent else OrderStatus.CREATED,
        })
        statuses = [OrderStatus.CREATED, OrderStatus.SENT] if sent else [OrderStatus.CREATED]
        events = [Row(OrderEvent, {"order_id": Ref(at), "status": status, "source": "placement",
                                   "detail": (detail or {}) if status is OrderStatus.CREATED else {}})
                  for status in statuses]
        return [order, *events]

    async def adopt(self, update: VenueUpdate, intent: OrderIntent, trade_id: int | None) -> Order:
        """Store an order the venue created itself (an attached stop-loss / take-profit), then apply ``update``."""
        existing = await Order.get_or_none(exchange_order_id=update.exchange_order_id, mode=self.mode)
        if existing is not None:
            return existing
        async with in_transaction():
            order = await Order.create(
                client_order_id=attached_client_id(update.exchange_order_id),
                exchange_order_id=update.exchange_order_id,
                trade_id=trade_id,
                mode=self.mode,
                symbol=update.symbol,
                intent=intent,
                side=update.side,
                position_side=update.position_side,
                order_type=update.order_type,
                quantity=update.quantity,
                stop_price=update.stop_price or None,
                reduce_only=True,
                status=OrderStatus.NEW,
            )
            await OrderEvent.create(order=order, status=OrderStatus.NEW, source=update.source, detail={"adopted": True})
        return order

    async def set_status(self, order: Order, status: OrderStatus, source: str, *, error: str = "", detail: dict[str, Any] | None = None) -> None:
        """Force a status our side decides (SENT, UNKNOWN, REJECTED), with an event."""
        order.status = status
        if error:
            order.error = error[:255]
        async with in_transaction():
            await order.save(update_fields=["status", "error", "updated_at"])
            await OrderEvent.create(order=order, status=status, source=source, detail=detail or ({"error": error[:200]} if error else {}))

    async def mark_unknown_if_unanswered(self, order: Order, source: str, *, error: str) -> bool:
        """UNKNOWN, but only if the row is still CREATED/SENT in the database (a conditional update, so a status
        written meanwhile by the placing call is never overwritten); True when it was changed. ``order`` is
        refreshed either way."""
        async with in_transaction():
            changed = await Order.filter(id=order.id, status__in=[OrderStatus.CREATED, OrderStatus.SENT]).update(
                status=OrderStatus.UNKNOWN, error=error[:255], updated_at=datetime.now(timezone.utc))
            if changed:
                await OrderEvent.create(order_id=order.id, status=OrderStatus.UNKNOWN, source=source, detail={"error": error[:200]})
        await order.refresh_from_db()
        return bool(changed)

    async def find(self, *, client_order_id: str | None = None, exchange_order_id: str | None = None) -> Order | None:
        """The order with this client id (preferred) or exchange id, in this mode."""
        if client_order_id:
            order = await Order.get_or_none(client_order_id=client_order_id)
            if order is not None:
                return order if order.mode == self.mode else None
        if exchange_order_id:
            return await Order.get_or_none(exchange_order_id=exchange_order_id, mode=self.mode)
        return None

    async def working(self) -> list[Order]:
        """Orders of this mode that are not final (sent, unknown, working)."""
        return await Order.filter(mode=self.mode, status__not_in=[s.value for s in FINAL_STATUSES]).order_by("id")

    async def apply(self, order: Order, update: VenueUpdate, *, derive_fills: bool) -> list[RecordedFill]:
        """Apply one venue report: exchange id, status (forward only), and the fills it proves.

        With ``update.fill`` the execution is recorded as is. Without it, and with
        ``derive_fills``, an executed quantity beyond what is recorded becomes one aggregated fill
        (REST polls: the individual executions were missed).
        """
        recorded: list[RecordedFill] = []
        async with in_transaction():
            await order.refresh_from_db()
            changed: list[str] = []
            if update.exchange_order_id and order.exchange_order_id != update.exchange_order_id:
                order.exchange_order_id = update.exchange_order_id
                changed.append("exchange_order_id")
            fill = update.fill
            if fill is not None and fill.cumulative_qty > order.filled_qty:
                delta = fill.cumulative_qty - order.filled_qty
                if delta == fill.qty:
                    price, fee, pnl = fill.price, fill.fee, fill.realized_pnl
                else:  # an earlier execution was missed: book the gap at the average price
                    price = self._gap_price(order, fill.cumulative_qty, update.avg_price, delta) or fill.price
                    fee, pnl = fill.fee, fill.realized_pnl
                    logger.warning("order %s: fills jumped by %s (last fill %s); booked as one", order.client_order_id, delta, fill.qty,
                                   extra={"mode": self.mode, "symbol": order.symbol, "client_order_id": order.client_order_id})
                recorded += await self._record(order, f"{update.exchange_order_id}:{fill.cumulative_qty}", price, delta, fee, pnl, fill.time_ms)
            elif fill is None and derive_fills and update.executed_qty > order.filled_qty and update.avg_price > 0:
                delta = update.executed_qty - order.filled_qty
                price = self._gap_price(order, update.executed_qty, update.avg_price, delta) or update.avg_price
                fees_so_far, pnl_so_far = await self._totals(order)
                fee = (update.fee_total - fees_so_far) if update.fee_total is not None else ZERO
                pnl = (update.realized_total - pnl_so_far) if update.realized_total is not None else ZERO
                recorded += await self._record(order, f"{update.exchange_order_id}:{update.executed_qty}", price, delta, fee, pnl,
                                               update.time_ms or 0)
            if recorded:
                changed += ["filled_qty", "avg_price"]
            status = update.status
            if order.status not in FINAL_STATUSES and _RANK.get(status, 4) >= _RANK.get(order.status, 4) and status != order.status:
                if status in _ENDS_WITH_FILLS and order.filled_qty < update.executed_qty and not derive_fills:
                    # over on the venue, but executions it reports are not booked: they are on their way (stream) or
                    # were missed (a poll books them). Ending it now would leave them unbooked for good: a final row
                    # is never polled again (a stop that filled 696 of 995 and EXPIRED the rest)
                    self._ending[order.id] = (status, update.executed_qty)
                    status = OrderStatus.PARTIALLY_FILLED
                if status != order.status:
                    order.status = status
                    changed.append("status")
                    await OrderEvent.create(order=order, status=status, source=update.source,
                                            detail={"executed_qty": str(update.executed_qty)})
            if order.status is OrderStatus.PARTIALLY_FILLED:
                ending = self._completed_end(order)
                if ending is not None:  # the last execution arrived after the report that ended the order
                    order.status = ending
                    changed.append("status")
                    await OrderEvent.create(order=order, status=ending, source=update.source, detail={"completed_by_fill": True})
            if order.status in FINAL_STATUSES:
                self._ending.pop(order.id, None)
            if changed:
                await order.save(update_fields=sorted(set(changed)) + ["updated_at"])
        return recorded

    def _completed_end(self, order: Order) -> OrderStatus | None:
        """The final status a working order has reached now that its fills are booked, if any: the end the venue
        reported earlier (:attr:`_ending`), or FILLED once the whole quantity is filled."""
        ending = self._ending.get(order.id)
        if ending is not None and order.filled_qty >= ending[1]:
            return ending[0]
        if order.quantity > 0 and order.filled_qty >= order.quantity:
            return OrderStatus.FILLED
        return None

    async def record_missing_fill(self, order: Order, *, fee_total: Decimal, time_ms: int) -> list[RecordedFill]:
        """Book the executions behind totals set without fills (reconciliation after a restart) as one fill.

        ``order.filled_qty`` / ``avg_price`` already say what executed; the part not covered by
        stored fills gets one fill at its average price carrying ``fee_total`` (the venue's
        cumulative fee) minus the fees already stored. Idempotent (same key as a poll would use).
        """
        async with in_transaction():
            await order.refresh_from_db()
            fills = await Fill.filter(order=order)
            booked_qty = sum((f.qty for f in fills), ZERO)
            gap = order.filled_qty - booked_qty
            if gap <= 0 or order.avg_price is None:
                return []
            key = f"{order.exchange_order_id or order.client_order_id}:{order.filled_qty}"
            if await Fill.exists(fill_key=key):
                return []
            booked_quote = sum((f.price * f.qty for f in fills), ZERO)
            price = (order.avg_price * order.filled_qty - booked_quote) / gap
            fee = fee_total - sum((f.fee for f in fills), ZERO)
            await Fill.create(order=order, fill_key=key, price=price, qty=gap, fee=fee, realized_pnl=ZERO, time_ms=time_ms)
        logger.info("fill %s %s @ %s (fee %s) on %s booked from the venue's totals", order.client_order_id, gap, price, fee,
                    order.symbol, extra={"mode": self.mode, "symbol": order.symbol, "client_order_id": order.client_order_id})
        return [RecordedFill(order.id, price, gap, fee, ZERO, time_ms)]

    @staticmethod
    def _gap_price(order: Order, cumulative: Decimal, avg: Decimal, delta: Decimal) -> Decimal | None:
        if avg <= 0 or delta <= 0:
            return None
        booked_quote = (order.avg_price or ZERO) * order.filled_qty
        return (cumulative * avg - booked_quote) / delta

    @staticmethod
    async def _totals(order: Order) -> tuple[Decimal, Decimal]:
        fills = await Fill.filter(order=order)
        return sum((f.fee for f in fills), ZERO), sum((f.realized_pnl for f in fills), ZERO)

    async def _record(self, order: Order, key: str, price: Decimal, qty: Decimal, fee: Decimal, pnl: Decimal, time_ms: int) -> list[RecordedFill]:
        if await Fill.exists(fill_key=key):
            return []
        await Fill.create(order=order, fill_key=key, price=price, qty=qty, fee=fee, realized_pnl=pnl, time_ms=time_ms)
        quote = (order.avg_price or ZERO) * order.filled_qty + price * qty
        order.filled_qty = order.filled_qty + qty
        order.avg_price = quote / order.filled_qty
        logger.info("fill %s %s @ %s (fee %s) on %s", order.client_order_id, qty, price, fee, order.symbol,
                    extra={"mode": self.mode, "symbol": order.symbol, "client_order_id": order.client_order_id})
        return [RecordedFill(order.id, price, qty, fee, pnl, time_ms)]
