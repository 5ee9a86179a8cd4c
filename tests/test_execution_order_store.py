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


def _stop_update(status: OrderStatus, executed: str, avg: str, fill: VenueFill | None = None, source: str = "stream") -> VenueUpdate:
    return VenueUpdate("EOS-USDT", "888", "sl1", "SELL", "LONG", "STOP_MARKET", status, Decimal(995), Decimal("4.81415"),
                       Decimal(executed), Decimal(avg), fee_total=Decimal("1.67"), realized_total=Decimal("61.3"), fill=fill,
                       time_ms=9, source=source)


async def _stop_order(store: OrderStore):  # type: ignore[no-untyped-def]
    spec = OrderSpec("EOS-USDT", "SELL", "LONG", "STOP_MARKET", Decimal(995), "sl1", stop_price=Decimal("4.81415"))
    return await store.create(spec, OrderIntent.STOP_LOSS, None, sent=True)


async def test_an_end_reported_before_its_executions_waits_for_the_poll_to_book_them(db_url: str) -> None:
    # a stop for 995 fired on a position of 696: 696 executed, the rest EXPIRED. The stream's execution was missed
    # (a drop) and the EXPIRED report (or the lookup after an unanswered placement) came alone
    store = OrderStore("live")
    order = await _stop_order(store)
    assert await store.apply(order, _stop_update(OrderStatus.EXPIRED, "696", "4.8086", source="placement"), derive_fills=False) == []
    assert order.status is OrderStatus.PARTIALLY_FILLED  # still working: the tracker's poll reaches it
    assert order in await store.working()
    recorded = await store.apply(order, _stop_update(OrderStatus.EXPIRED, "696", "4.8086", source="poll"), derive_fills=True)
    assert [(f.qty, f.price, f.fee) for f in recorded] == [(Decimal(696), Decimal("4.8086"), Decimal("1.67"))]
    assert order.status is OrderStatus.EXPIRED and order.filled_qty == 696


async def test_an_end_reported_before_its_execution_ends_the_order_when_the_execution_arrives(db_url: str) -> None:
    store = OrderStore("live")
    order = await _stop_order(store)
    await store.apply(order, _stop_update(OrderStatus.CANCELLED, "696", "4.8086"), derive_fills=False)
    assert order.status is OrderStatus.PARTIALLY_FILLED
    fill = VenueFill(Decimal("4.8086"), Decimal(696), Decimal("1.67"), Decimal("61.3"), 9, Decimal(696))
    recorded = await store.apply(order, _stop_update(OrderStatus.PARTIALLY_FILLED, "696", "4.8086", fill), derive_fills=False)
    assert len(recorded) == 1
    assert order.status is OrderStatus.CANCELLED and order.filled_qty == 696  # ended as the venue reported
    assert order not in await store.working()
