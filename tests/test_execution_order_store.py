"""Order store: stored before sending, status only moves forward, fills recorded once."""

from __future__ import annotations

from decimal import Decimal

from db.models import Fill, OrderEvent, OrderIntent, OrderStatus
from engine.execution.order_store import OrderStore
from engine.execution.venue import OrderSpec, VenueFill, VenueUpdate


def _update(status: OrderStatus, executed: str, avg: str, fill: VenueFill | None = None, source: str = "stream") -> VenueUpdate:
    return VenueUpdate("XRP-USDT", "777", "en1", "BUY", "LONG", "MARKET", status, Decimal(100), Decimal(0), Decimal(executed),
                       Decimal(avg), fee_total=Decimal("0.1"), realized_total=Decimal(0), fill=fill, time_ms=5, source=source)


async def test_fills_are_recorded_once_and_status_never_goes_back(db_url: str) -> None:
    store = OrderStore("live")
    order = await store.create(OrderSpec("XRP-USDT", "BUY", "LONG", "MARKET", Decimal(100), "en1"), OrderIntent.ENTRY, None)
    assert order.status is OrderStatus.CREATED and await OrderEvent.filter(order=order).count() == 1
    # the placement answer says FILLED before any execution is booked: kept as partially filled until they are
    await store.apply(order, _update(OrderStatus.FILLED, "100", "1.5", source="placement"), derive_fills=False)
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.exchange_order_id == "777"
    first = VenueFill(Decimal("1.4"), Decimal(40), Decimal("0.03"), Decimal(0), 4, Decimal(40))
    second = VenueFill(Decimal("1.5666"), Decimal(60), Decimal("0.07"), Decimal(0), 5, Decimal(100))
    assert len(await store.apply(order, _update(OrderStatus.PARTIALLY_FILLED, "40", "1.4", first), derive_fills=False)) == 1
    assert len(await store.apply(order, _update(OrderStatus.FILLED, "100", "1.5", second), derive_fills=False)) == 1
    assert order.status is OrderStatus.FILLED and order.filled_qty == 100
    # the same executions again (stream replay, REST poll): nothing new, and a late NEW does not reopen it
    assert await store.apply(order, _update(OrderStatus.PARTIALLY_FILLED, "40", "1.4", first), derive_fills=False) == []
    assert await store.apply(order, _update(OrderStatus.FILLED, "100", "1.5", source="poll"), derive_fills=True) == []
    assert await store.apply(order, _update(OrderStatus.NEW, "0", "0"), derive_fills=False) == []
    await order.refresh_from_db()
    assert order.status is OrderStatus.FILLED
    assert [f.qty for f in await Fill.filter(order=order).order_by("id")] == [40, 60]


async def test_a_poll_books_missed_executions_as_one_fill(db_url: str) -> None:
    store = OrderStore("live")
    order = await store.create(OrderSpec("XRP-USDT", "BUY", "LONG", "MARKET", Decimal(100), "en1"), OrderIntent.ENTRY, None)
    recorded = await store.apply(order, _update(OrderStatus.FILLED, "100", "1.5", source="poll"), derive_fills=True)
    assert [(f.qty, f.price, f.fee) for f in recorded] == [(Decimal(100), Decimal("1.5"), Decimal("0.1"))]
    assert order.status is OrderStatus.FILLED and order.avg_price == Decimal("1.5")
