"""Money-safety review fixes in engine/risk/, against the simulator over real sockets:

1. the emergency stop never cancels a position's stop before that position is confirmed flat,
   and an unclosable position without a stop gets one (or a loud UNPROTECTED);
2. reconciliation leaves an order whose placement is in flight alone, and never guesses that an
   old unanswered one never arrived;
3. re-placed stops trigger on the same price as the broker's (CONTRACT_PRICE).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from bot.config import load_config
from db.models import Order, OrderIntent, OrderStatus, Trade, TradeState
from engine.exchange.bingx import BingxRestClient, OrderRequest, new_client_order_id
from engine.risk.emergency import emergency_stop
from engine.risk.manager import RiskManager
from engine.risk.reconcile import Reconciler
from engine.risk.state import TradingState

from tests.risk_sim import (
    SYM,
    open_orders_of,
    open_trade,
    sim_state,
)


async def _limit(client: BingxRestClient, sim, side: str, position_side: str, factor: str) -> str:
    price = Decimal((await sim_state(sim))["markets"][SYM]["last_price"])
    placed = await client.place_order(OrderRequest(
        symbol=SYM, side=side, position_side=position_side, type="LIMIT", quantity=Decimal(10),
        price=(price * Decimal(factor)).quantize(Decimal("0.0001")), client_order_id=new_client_order_id("l")))
    return placed.order_id


def _stops(state: dict) -> list[dict]:
    return [o for o in open_orders_of(state) if o["type"] == "STOP_MARKET"]


# --- 1. emergency stop ordering -------------------------------------------------------------------

async def test_failed_close_keeps_the_positions_stop_and_cancels_the_openers(db_url, sim, client) -> None:
    _trade, stop_row = await open_trade(client, side="LONG", qty="100")
    opener = await _limit(client, sim, "BUY", "LONG", "0.9")  # would add to the long if it filled
    sim.faults.update({"reject_next_orders": [101400] * 20})  # every close is refused
    events: list = []
    report = await emergency_stop(client, verify_attempts=3, poll_s=0.01, alert=events.append)
    state = await sim_state(sim)
    assert [p["positionAmt"] for p in state["positions"]] == ["100.0"]
    stops = _stops(state)
    assert [str(s["orderId"]) for s in stops] == [stop_row.exchange_order_id]  # the long is still protected
    assert int(opener) not in state["open_order_ids"]  # the opener is gone
    assert not report.flat and "NOT flat" in report.text()
    assert report.remaining_positions == [f"{SYM} LONG 100.0"]
    assert not any(f.startswith("UNPROTECTED") for f in report.failures)
    assert events and "NOT flat" in events[-1].title


async def test_unclosable_position_without_a_stop_gets_its_trade_stop_back(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, side="SHORT", qty="50", strategy="trend_distance_short")
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)  # lost by hand before the emergency
    sim.faults.update({"reject_next_orders": [101400] * 2})  # the first close and its one retry fail
    report = await emergency_stop(client, mode="live", verify_attempts=2, poll_s=0.01)
    state = await sim_state(sim)
    assert [(p["positionSide"], p["positionAmt"]) for p in state["positions"]] == [("SHORT", "50.0")]
    assert not report.flat
    [stop] = _stops(state)
    assert (stop["side"], stop["positionSide"], stop["workingType"]) == ("BUY", "SHORT", "CONTRACT_PRICE")
    assert Decimal(stop["stopPrice"]) == Decimal(trade.stop) and Decimal(stop["origQty"]) == 50
    row = await Order.get(client_order_id=stop["clientOrderId"].lower())
    assert row.intent is OrderIntent.STOP_LOSS and row.trade_id == trade.id and row.status is OrderStatus.NEW
    assert any("re-placed" in f for f in report.failures)


async def test_unclosable_unknown_position_is_reported_unprotected(sim, client) -> None:
    await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="MARKET",
                                          quantity=Decimal(10), client_order_id=new_client_order_id("p")))
    sim.faults.update({"reject_next_orders": [101400] * 20})
    events: list = []
    report = await emergency_stop(client, verify_attempts=2, poll_s=0.01, alert=events.append)
    assert not report.flat
    assert any(f.startswith("UNPROTECTED") and f"{SYM} LONG 10" in f for f in report.failures)
    assert "NO STOP" in events[-1].title
    assert _stops(await sim_state(sim)) == []  # no level was guessed


async def test_stop_of_a_closed_position_goes_while_the_unclosed_one_keeps_its_own(db_url, sim, client) -> None:
    """Two positions; the long's close fails, the short's succeeds: only the short's leftovers are cancelled."""
    _long_trade, long_stop = await open_trade(client, side="LONG", qty="100")
    _short_trade, short_stop = await open_trade(client, side="SHORT", qty="40", strategy="trend_distance_short")
    sim.faults.update({"reject_next_orders": [101400] * 1})  # the first close fails, the other goes through
    report = await emergency_stop(client, verify_attempts=1, poll_s=0.01)
    state = await sim_state(sim)
    left = {p["positionSide"] for p in state["positions"]}
    assert len(left) == 1 and not report.flat
    kept = long_stop if left == {"LONG"} else short_stop
    assert [str(s["orderId"]) for s in _stops(state)] == [kept.exchange_order_id]


# --- 2. reconciliation and placements in flight ------------------------------------------------------

def _make(client: BingxRestClient, **kw):
    events: list = []
    cfg = load_config(None, env={}, overrides={"mode": "paper", "symbols": [SYM]})
    risk = RiskManager(cfg, alert=events.append)
    return Reconciler(client, cfg, risk, mode="live", **kw), risk, events


async def _pending_entry(status: OrderStatus = OrderStatus.SENT, age_s: float = 0.0) -> tuple[Trade, Order]:
    """The rows the broker writes before its entry placement returns."""
    trade = await Trade.create(symbol=SYM, strategy="multi_timeframe_long", side="LONG", state=TradeState.PENDING,
                               mode="live", initial_qty=10, qty=0, initial_stop=1, stop=1, target=20, risk_per_unit=1)
    row = await Order.create(client_order_id=new_client_order_id("en"), trade=trade, mode="live", symbol=SYM,
                             intent=OrderIntent.ENTRY, side="BUY", position_side="LONG", order_type="MARKET",
                             quantity=10, status=status)
    if age_s:
        await Order.filter(id=row.id).update(updated_at=datetime.now(UTC) - timedelta(seconds=age_s))
        await row.refresh_from_db()
    return trade, row


async def test_entry_in_flight_is_not_marked_rejected(db_url, sim, client) -> None:
    _trade, row = await _pending_entry()
    reconciler, risk, _events = _make(client)
    report = await reconciler.run("stream reconnect")
    assert report.ok, report.summary()
    await row.refresh_from_db()
    assert row.status is OrderStatus.SENT  # untouched: the broker's placement owns it
    assert any(row.client_order_id in item for item in report.in_flight)
    # The placement now arrives and fills; the next run, while still in the grace period, does not halt on it.
    await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="MARKET",
                                          quantity=Decimal(10), client_order_id=row.client_order_id))
    again = await reconciler.run("periodic")
    assert again.ok, again.summary()
    assert (await risk.state.current()).state is TradingState.RUNNING


async def test_old_unanswered_entry_is_unresolved_not_rejected_without_broker_knowledge(db_url, sim, client) -> None:
    _trade, row = await _pending_entry(OrderStatus.SENT, age_s=120)
    reconciler, _risk, events = _make(client)
    report = await reconciler.run("periodic")
    await row.refresh_from_db()
    assert row.status is OrderStatus.SENT
    assert any(row.client_order_id in item for item in report.unresolved)
    assert any(e.title == "Reconciliation: order state unresolved" for e in events)


@pytest.mark.parametrize("still_placing", [True, False])
async def test_old_unanswered_entry_follows_the_brokers_in_flight_set(db_url, sim, client, still_placing: bool) -> None:
    _trade, row = await _pending_entry(OrderStatus.UNKNOWN, age_s=120)
    placing = {row.client_order_id} if still_placing else set()
    reconciler, _risk, _events = _make(client, placements_in_flight=lambda: placing)
    report = await reconciler.run("periodic")
    await row.refresh_from_db()
    if still_placing:
        assert row.status is OrderStatus.UNKNOWN and report.unresolved
    else:
        assert row.status is OrderStatus.REJECTED and not report.unresolved


async def test_stop_in_flight_is_not_placed_a_second_time(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, side="LONG", qty="30")
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    await stop_row.delete()
    # The broker has stored its stop and is sending it right now.
    cid = new_client_order_id("sl")
    await Order.create(client_order_id=cid, trade=trade, mode="live", symbol=SYM, intent=OrderIntent.STOP_LOSS,
                       side="SELL", position_side="LONG", order_type="STOP_MARKET", quantity=30,
                       stop_price=trade.stop, reduce_only=True, status=OrderStatus.SENT)
    reconciler, _risk, _events = _make(client)
    report = await reconciler.run("periodic")
    assert not report.stops_replaced and _stops(await sim_state(sim)) == []
    await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="STOP_MARKET",
                                          quantity=Decimal(30), stop_price=Decimal(trade.stop),
                                          working_type="CONTRACT_PRICE", client_order_id=cid))
    assert len(_stops(await sim_state(sim))) == 1


# --- 3. trigger basis of re-placed stops -----------------------------------------------------------------

async def test_replaced_stop_triggers_on_the_brokers_price(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, side="LONG", qty="20")
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    reconciler, _risk, _events = _make(client)
    report = await reconciler.run("start")
    assert report.ok and len(report.stops_replaced) == 1, report.summary()
    [stop] = _stops(await sim_state(sim))
    assert stop["workingType"] == "CONTRACT_PRICE"
    assert Decimal(stop["stopPrice"]) == Decimal(trade.stop)
