"""Live mode end to end against the BingX simulator (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from db.models import Order, OrderIntent, Trade, TradeExit, TradeState
from engine.execution.runtime import TradingRuntime

from tests.execution_sim import (
    app_config,
    assert_db_matches_exchange,
    assert_stop_always_on_exchange,
    options,
    simulator,
    step_minutes,
    window,
)

pytestmark = pytest.mark.timeout(120)


async def test_live_trades_match_the_exchange_and_stops_are_always_there(db_url: str) -> None:
    # XRP minutes 2620..2840: a long (2R partial, trailing step, trailing stop) then a short (stop).
    data, start_ms = window(2620, 2840)
    sim = simulator(data, start_ms)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await step_minutes(sim, runtime, start_ms, 220)
        await runtime.wait_idle()
        state = sim.state()
        counts = await assert_db_matches_exchange(state, Decimal("10000"))
        spans = assert_stop_always_on_exchange(state)
    finally:
        await runtime.stop()
        await sim.stop()
    trades = await Trade.filter(mode="live").order_by("id")
    print(counts, spans, [(t.strategy, t.state, t.exit_reason, t.realized_pnl, t.r_multiple) for t in trades])
    assert len(trades) >= 2 and spans >= 2
    assert all(t.state is TradeState.CLOSED for t in trades)
    kinds = [e.kind for e in await TradeExit.all().order_by("id")]
    assert "partial_2R" in kinds and "trailing_stop" in kinds and "stop" in kinds


async def test_placement_without_answer_gives_exactly_one_position(db_url: str) -> None:
    # The entry (first placement) is executed by the exchange but its answer never comes: the client
    # times out, looks the order up by client order id and finds it - never a second entry.
    data, start_ms = window(2620, 2660)
    sim = simulator(data, start_ms)
    await sim.start()
    sim.faults.hang_next_orders = 1
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await step_minutes(sim, runtime, start_ms, 25)
        await runtime.wait_idle()
        state = sim.state()
        assert sim.faults.hang_next_orders == 0  # the fault was used
        entries = [o for o in state["orders"] if o["type"] == "MARKET" and o["side"] == "BUY"]
        assert len(entries) == 1
        positions = [p for p in state["positions"] if Decimal(str(p["positionAmt"])) != 0]
        assert len(positions) == 1 and positions[0]["positionSide"] == "LONG"
        await assert_db_matches_exchange(state, Decimal("10000"))
        assert_stop_always_on_exchange(state)
        db_entries = await Order.filter(intent=OrderIntent.ENTRY)
        assert len(db_entries) == 1 and db_entries[0].exchange_order_id == str(entries[0]["orderId"])
        assert runtime.broker is not None and runtime.broker.halted_reason is None
        trades = await Trade.filter(mode="live")
        assert len(trades) == 1 and trades[0].state is TradeState.OPEN
    finally:
        await runtime.stop()
        await sim.stop()


async def test_rejected_stop_closes_at_market_and_alerts(db_url: str) -> None:
    data, start_ms = window(2620, 2660)
    sim = simulator(data, start_ms)
    await sim.start()
    alerts: list[tuple[str, str]] = []

    async def on_alert(event_type: str, text: str, payload: dict) -> None:
        alerts.append((event_type, text))
        if event_type == "entry":  # the entry filled: the next placement is the replanned stop
            sim.faults.reject_next_orders.append((110412, "the stop price is invalid"))

    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(), on_alert=on_alert)
    try:
        await runtime.start()
        await step_minutes(sim, runtime, start_ms, 25)
        await runtime.wait_idle()
        state = sim.state()
        await assert_db_matches_exchange(state, Decimal("10000"))
        assert_stop_always_on_exchange(state)
        assert not [p for p in state["positions"] if Decimal(str(p["positionAmt"])) != 0]
    finally:
        await runtime.stop()
        await sim.stop()
    assert any(kind == "error" and "rejected the stop" in text and text.startswith("[LIVE]") for kind, text in alerts), alerts
    trade = (await Trade.filter(mode="live"))[0]
    assert trade.state is TradeState.CLOSED and trade.exit_reason == "emergency"
    emergency = await Order.filter(intent=OrderIntent.EMERGENCY_CLOSE)
    assert len(emergency) == 1 and emergency[0].status.value == "filled"
    rejected = await Order.filter(intent=OrderIntent.STOP_LOSS, status="rejected")
    assert len(rejected) == 1 and "110412" in rejected[0].error


async def test_polling_books_orders_while_the_account_stream_is_down(db_url: str) -> None:
    # Without the account stream, the REST poll (fast while the stream is down) must still bring every
    # order to its final state, book the executions (aggregated per order) and close the trades.
    data, start_ms = window(2620, 2700)
    sim = simulator(data, start_ms)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(fast_poll_s=0.05))
    try:
        await runtime.start()
        assert runtime.account_stream is not None and runtime.tracker is not None
        await runtime.account_stream.close()
        runtime.tasks()["account-stream-watch"].cancel()
        runtime.tracker.set_stream_state(False)
        await step_minutes(sim, runtime, start_ms, 60)
        # the poll (every 0.05 s while the stream is down) catches up with what happened in the last minute
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while await Order.filter(mode="live", status__in=["new", "partially_filled", "sent", "unknown"]).exists():
            assert loop.time() < deadline, "the poll did not bring every order to its final state"
            await asyncio.sleep(0.05)
        await runtime.wait_idle()
        state = sim.state()
    finally:
        await runtime.stop()
        await sim.stop()
    assert runtime.tracker.polls > 3
    sim_orders = {str(o["orderId"]): o for o in state["orders"]}
    db_orders = {o.exchange_order_id: o for o in await Order.filter(mode="live") if o.exchange_order_id}
    assert set(sim_orders) == set(db_orders)
    for oid, so in sim_orders.items():
        assert db_orders[oid].filled_qty == Decimal(so["executedQty"])
        assert db_orders[oid].status.value == {"FILLED": "filled", "CANCELLED": "cancelled", "NEW": "new"}[so["status"]], (db_orders[oid].intent, db_orders[oid].client_order_id, so)
    trades = await Trade.filter(mode="live")
    assert len(trades) == 1 and trades[0].state is TradeState.CLOSED
    kinds = [e.kind for e in await TradeExit.all().order_by("id")]
    assert kinds == ["partial_2R", "trailing_stop"]
    assert_stop_always_on_exchange(state)


async def test_leverage_is_set_at_start_so_the_first_entry_sends_only_its_order(db_url: str) -> None:
    data, start_ms = window(2620, 2660)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        settings = sim.state()["settings"]
        expected = max(1, round(config.strategies.leverage))
        assert all(settings[s]["long_leverage"] == settings[s]["short_leverage"] == expected for s in config.symbols), settings
        assert not sim.state()["orders"]  # nothing traded yet: this happened at start, not at an entry
    finally:
        await runtime.stop()
        await sim.stop()
