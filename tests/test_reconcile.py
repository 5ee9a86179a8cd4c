"""Reconciliation against the simulator: the position and its stop are found, a stop deleted on
the exchange while the bot was away is re-placed (once), lost orders follow the rule, and an
unexplained position halts entries with an alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.config import load_config
from db.models import Order, OrderIntent, OrderStatus, ProtectionLock, Trade, TradeState
from engine.exchange.bingx import BingxRestClient, OrderRequest, new_client_order_id
from engine.risk.manager import RiskManager
from engine.risk.reconcile import Reconciler
from engine.risk.state import TradingState

from tests.risk_sim import (
    SYM,
    open_orders_of,
    open_trade,
    sim_state,
)


def config(**reconciliation):
    return load_config(None, env={}, overrides={"mode": "paper", "symbols": [SYM], "reconciliation": reconciliation})


async def age(row: Order, seconds: float = 120.0) -> None:
    """Make ``row`` look last changed ``seconds`` ago (a queryset update skips auto_now)."""
    await Order.filter(id=row.id).update(updated_at=datetime.now(UTC) - timedelta(seconds=seconds))
    await row.refresh_from_db()


def make(client: BingxRestClient, **reconciliation):
    events: list = []
    cfg = config(**reconciliation)
    risk = RiskManager(cfg, alert=events.append)
    return Reconciler(client, cfg, risk, mode="live"), risk, events


async def test_finds_its_position_and_stop_without_placing_anything(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client)
    before = await sim_state(sim)
    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert report.ok, report.summary()
    assert report.positions_matched == [f"{SYM} LONG 100"]
    assert report.orders_matched == 1 and not report.stops_replaced and not report.cancelled_orders
    after = await sim_state(sim)
    assert len(after["orders"]) == len(before["orders"])  # nothing new was sent
    assert (await risk.state.current()).state is TradingState.RUNNING
    assert "balance" in report.summary()


async def test_replaces_a_stop_deleted_while_away_exactly_once(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, side="SHORT", qty="50")
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)  # deleted by hand on the exchange
    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert report.ok, report.summary()
    assert len(report.stops_replaced) == 1
    await stop_row.refresh_from_db()
    assert stop_row.status is OrderStatus.CANCELLED  # the DB learned what happened to the old stop
    stops = [o for o in open_orders_of(await sim_state(sim)) if o["type"] == "STOP_MARKET"]
    assert len(stops) == 1
    [stop] = stops
    assert (stop["side"], stop["positionSide"]) == ("BUY", "SHORT")
    assert Decimal(stop["stopPrice"]) == Decimal(trade.stop) and Decimal(stop["origQty"]) == 50
    new_row = await Order.get(intent=OrderIntent.STOP_LOSS, status=OrderStatus.NEW)
    assert new_row.trade_id == trade.id and new_row.exchange_order_id == str(stop["orderId"])
    # A second run finds the new stop and sends nothing.
    again = await reconciler.run("periodic")
    assert again.ok and not again.stops_replaced
    assert len([o for o in open_orders_of(await sim_state(sim)) if o["type"] == "STOP_MARKET"]) == 1
    assert any(e.title.startswith("Reconciliation repaired") for e in events)


async def test_unexplained_position_halts_entries_and_alerts(db_url, sim, client) -> None:
    await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="MARKET",
                                          quantity=Decimal(30), client_order_id=new_client_order_id("hand")))
    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert not report.ok and "no trade in the DB" in report.unexplained[0]
    info = await risk.state.current()
    assert info.state is TradingState.HALTED and "reconciliation" in info.reason
    lock = await ProtectionLock.get(kind="reconciliation", active=True)
    assert lock.until is None
    assert any(e.event_type == "halt" and "NANO-USDT LONG 30" in e.text for e in events)
    # Nothing was touched on the exchange.
    state = await sim_state(sim)
    assert [p["positionAmt"] for p in state["positions"]] == ["30.0"] and not state["open_order_ids"]


async def test_db_trade_without_position_is_closed_when_its_stop_filled(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, qty="20")
    # The stop "fires": close the position with the stop's own order outcome (simulated by a market close).
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    closed = await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                                   quantity=Decimal(20), client_order_id=new_client_order_id("x")))
    stop_row.client_order_id = closed.client_order_id
    stop_row.exchange_order_id = closed.order_id
    await stop_row.save()
    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert report.ok, report.summary()
    assert len(report.trades_closed) == 1
    await trade.refresh_from_db()
    assert trade.state is TradeState.CLOSED and trade.exit_price == closed.avg_price


async def test_position_gone_without_exit_is_unexplained(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, qty="20")
    await client.cancel_all_orders()
    await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                          quantity=Decimal(20), client_order_id=new_client_order_id("hand")))
    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert not report.ok and any("no exit order of it filled" in u for u in report.unexplained)
    assert (await risk.state.current()).state is TradingState.HALTED


@pytest.mark.parametrize("cancel_unknown", [True, False])
async def test_unknown_order_rule(db_url, sim, client, cancel_unknown: bool) -> None:
    price = Decimal((await sim_state(sim))["markets"][SYM]["last_price"])
    stray = await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT",
                                                  quantity=Decimal(10), price=(price * Decimal("0.9")).quantize(Decimal("0.0001")),
                                                  client_order_id=new_client_order_id("lost")))
    reconciler, risk, events = make(client, cancel_unknown_orders=cancel_unknown)
    report = await reconciler.run("start")
    state = await sim_state(sim)
    if cancel_unknown:
        assert report.ok and len(report.cancelled_orders) == 1 and not state["open_order_ids"]
    else:
        assert not report.ok and "unknown to the bot" in report.unexplained[0]
        assert state["open_order_ids"] == [int(stray.order_id)]


async def test_our_order_lost_in_flight_is_adopted(db_url, sim, client) -> None:
    """An order stored as UNKNOWN (timeout) that did reach the exchange is adopted by client id."""
    price = Decimal((await sim_state(sim))["markets"][SYM]["last_price"])
    cid = new_client_order_id("en")
    trade = await Trade.create(symbol=SYM, strategy="multi_timeframe_long", side="LONG", state=TradeState.PENDING,
                               mode="live", initial_qty=10, qty=0, initial_stop=1, stop=1, target=20, risk_per_unit=1)
    row = await Order.create(client_order_id=cid, trade=trade, mode="live", symbol=SYM, intent=OrderIntent.ENTRY,
                             side="BUY", position_side="LONG", order_type="LIMIT", quantity=10,
                             status=OrderStatus.UNKNOWN)
    placed = await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT",
                                                   quantity=Decimal(10), price=(price * Decimal("0.9")).quantize(Decimal("0.0001")),
                                                   client_order_id=cid))
    await age(row)  # past the in-flight grace: the placement that lost it has long returned
    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert report.ok, report.summary()
    await row.refresh_from_db()
    assert row.status is OrderStatus.NEW and row.exchange_order_id == placed.order_id


async def test_unreadable_exchange_blocks_entries_until_a_clean_run(db_url, sim, client) -> None:
    cfg = config()
    risk = RiskManager(cfg)
    dead = BingxRestClient(rest_url="http://127.0.0.1:9", api_key="k", api_secret="s", max_retries=0)
    async with dead:
        report = await Reconciler(dead, cfg, risk, mode="live").run("start")
    assert report.error is not None and not report.ok
    assert not await risk.entries_allowed(SYM, "multi_timeframe_long")
    clean = await Reconciler(client, cfg, risk, mode="live").run("start")
    assert clean.ok and await risk.entries_allowed(SYM, "multi_timeframe_long")
