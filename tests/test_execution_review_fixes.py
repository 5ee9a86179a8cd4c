"""Money-safety review fixes of the execution layer, against the BingX simulator (real sockets on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from db.models import Order, OrderIntent, OrderStatus, Trade, TradeState
from engine.execution.runtime import TradingRuntime
from tests.execution_sim import (
    SYMBOL,
    app_config,
    open_live_trade,
    options,
    settle_funding,
    simulator,
    step_minutes,
    window,
)

pytestmark = pytest.mark.timeout(120)


def _position(sim: Any) -> Decimal:
    return sum((Decimal(str(p["positionAmt"])) for p in sim.state()["positions"]), Decimal(0))


def _working_stops(sim: Any) -> list[dict[str, Any]]:
    return [o for o in sim.state()["orders"] if o["type"] == "STOP_MARKET" and o["status"] in ("NEW", "PENDING")]


# -- 1. a rejected exit alerts, halts, keeps the stop and can be retried -----------------------------


async def test_rejected_close_keeps_the_stop_halts_and_can_be_retried(db_url: str) -> None:
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    alerts: list[tuple[str, str]] = []

    async def on_alert(event_type: str, text: str, payload: dict[str, Any]) -> None:
        alerts.append((event_type, text))

    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(), on_alert=on_alert)
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        broker = runtime.broker
        assert broker is not None
        view = broker.open_trades()[0]
        held = _position(sim)
        assert held > 0 and len(_working_stops(sim)) == 1

        sim.faults.reject_next_orders.append((101204, "insufficient margin"))
        assert broker.close_trade(view.trade_id, "closed by test")
        await runtime.wait_idle()
        assert any(kind == "error" and "rejected the closed by test exit" in text for kind, text in alerts), alerts
        assert broker.halted_reason is not None and "rejected" in broker.halted_reason
        assert _position(sim) == held and len(_working_stops(sim)) == 1  # still held, still protected
        trade = await Trade.get(id=view.db_id)
        assert trade.state is TradeState.OPEN
        assert (await Order.get(intent=OrderIntent.CLOSE)).status is OrderStatus.REJECTED
        ctx = broker.active_trades[0]
        assert ctx.exit_intents == {} and not ctx.closed

        # the intent was cleared: a second close goes through and flattens the position
        assert broker.close_trade(view.trade_id, "retry")
        await runtime.wait_idle()
        assert _position(sim) == 0
        assert (await Trade.get(id=view.db_id)).state is TradeState.CLOSED
    finally:
        await runtime.stop()
        await sim.stop()


async def test_exit_racing_the_exchange_stop_books_the_stop_without_halting(db_url: str) -> None:
    """The engine may decide an exit on a candle whose trades already fired the exchange's stop, before that
    fill report arrives: the exit gets 101205 'No position to close'. That is no reason to halt: the broker
    looks the stop up, books its fill, and carries on (an unexplained 101205 still halts)."""
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    alerts: list[tuple[str, str]] = []

    async def on_alert(event_type: str, text: str, payload: dict[str, Any]) -> None:
        alerts.append((event_type, text))

    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(), on_alert=on_alert)
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        broker = runtime.broker
        assert broker is not None
        view = broker.open_trades()[0]
        stop_row = await Order.get(trade_id=view.db_id, intent=OrderIntent.STOP_LOSS, status=OrderStatus.NEW)
        sim_stop = sim.engine.find_order(SYMBOL, stop_row.exchange_order_id, None)
        orders_before = len(sim.state()["orders"])

        sim.engine._trigger(sim_stop, sim.markets[SYMBOL])  # the exchange's stop fires ...
        assert _position(sim) == 0
        assert broker.close_trade(view.trade_id, "partial decided late")  # ... and the bot's exit is already queued
        await runtime.wait_idle()

        assert (await Order.get(intent=OrderIntent.CLOSE)).status is OrderStatus.REJECTED  # 101205 from the exchange
        trade = await Trade.get(id=view.db_id)
        assert trade.state is TradeState.CLOSED and trade.exit_reason == "stop"
        assert broker.halted_reason is None, broker.halted_reason
        assert not any(kind == "error" for kind, _ in alerts), alerts
        assert sim.state()["orders"][orders_before:] == []  # no emergency close or new stop on a flat position
        assert _position(sim) == 0 and broker.open_trades() == []
    finally:
        await runtime.stop()
        await sim.stop()


# -- 2. a stop that filled while the bot was down is booked as the exit at restart ------------------


async def test_stop_filled_while_down_is_booked_at_restart_and_no_stop_is_placed_on_a_flat_position(db_url: str) -> None:
    from engine.execution.live_venue import LiveVenue
    from engine.execution.order_store import OrderStore

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
    finally:
        await runtime.stop()
    try:
        trade = await Trade.get(mode="live", state=TradeState.OPEN)
        stop_row = await Order.get(trade_id=trade.id, intent=OrderIntent.STOP_LOSS, status=OrderStatus.NEW)
        # the stop fires on the exchange while the bot is down
        sim_stop = sim.engine.find_order(SYMBOL, stop_row.exchange_order_id, None)
        sim.engine._trigger(sim_stop, sim.markets[SYMBOL])
        assert _position(sim) == 0
        orders_before = len(sim.state()["orders"])
        # what a poll (or reconciliation) without the broker's routes leaves: the stop row FILLED, nothing booked
        probe = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
        try:
            update = await LiveVenue(probe.rest).query(SYMBOL, exchange_order_id=stop_row.exchange_order_id)
            assert update is not None
            await OrderStore("live").apply(stop_row, update, derive_fills=True)
        finally:
            await probe.rest.close()
        assert (await Order.get(id=stop_row.id)).status is OrderStatus.FILLED

        runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
        try:
            await runtime.start()
            await runtime.wait_idle()
            assert runtime.recovery is not None and runtime.recovery.ok, runtime.recovery.summary()
            assert runtime.recovery.closed, runtime.recovery.summary()
            closed = await Trade.get(id=trade.id)
            assert closed.state is TradeState.CLOSED and closed.exit_reason == "stop"
            assert closed.realized_pnl < 0
            new_orders = sim.state()["orders"][orders_before:]
            assert new_orders == [], new_orders  # no stop re-placed, no emergency close on a flat position
            assert runtime.broker is not None and runtime.broker.open_trades() == []
        finally:
            await runtime.stop()
    finally:
        await sim.stop()


# -- 3. "duplicate client order id" / an unclassified code is an unknown outcome, not a rejection ------


@pytest.mark.parametrize("code,message", [(101481, "clientOrderID repeat"), (987654, "something new")])
async def test_entry_with_an_ambiguous_answer_halts_and_is_looked_up(db_url: str, code: int, message: str) -> None:
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    sim.faults.reject_next_orders.append((code, message))  # the first placement is the entry
    alerts: list[tuple[str, str]] = []

    async def on_alert(event_type: str, text: str, payload: dict[str, Any]) -> None:
        alerts.append((event_type, text))

    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(), on_alert=on_alert)
    try:
        await runtime.start()
        minutes = 0
        while not await Order.filter(intent=OrderIntent.ENTRY).exists():
            assert minutes < 40, "no entry attempted"
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        await runtime.wait_idle()
        assert runtime.broker is not None and runtime.broker.halted_reason is not None
        assert "unknown state" in runtime.broker.halted_reason
        assert any(kind == "halt" and "outcome unknown" in text for kind, text in alerts), alerts
        entry = await Order.get(intent=OrderIntent.ENTRY)
        assert entry.status is not OrderStatus.REJECTED
        # the tracker looks it up by client order id; the exchange never had it: it ends EXPIRED, the entry fails
        for _ in range(300):
            await entry.refresh_from_db()
            if entry.status is OrderStatus.EXPIRED:
                break
            await runtime.tracker.poll_once() if runtime.tracker is not None else None
        assert entry.status is OrderStatus.EXPIRED
        await runtime.wait_idle()
        assert (await Trade.get(id=entry.trade_id)).state is TradeState.CLOSED
        assert _position(sim) == 0
    finally:
        await runtime.stop()
        await sim.stop()


# -- 4. an externally cancelled stop is put back even when the position cannot be read ----------------


async def test_cancelled_stop_is_replaced_when_the_position_read_fails(db_url: str) -> None:
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    alerts: list[tuple[str, str]] = []

    async def on_alert(event_type: str, text: str, payload: dict[str, Any]) -> None:
        alerts.append((event_type, text))

    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(), on_alert=on_alert)
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        assert runtime.live is not None and runtime.broker is not None
        [stop] = _working_stops(sim)

        async def position_read_fails(symbol: str, position_side: str) -> Decimal:
            raise ConnectionResetError("position endpoint unreachable")

        runtime.live.position_qty = position_read_fails  # type: ignore[method-assign]
        sim.engine.cancel(SYMBOL, str(stop["orderId"]), None)  # someone cancels the stop on the exchange
        for _ in range(500):
            if _working_stops(sim):
                break
            await runtime.wait_idle()
            await asyncio.sleep(0.01)
        await runtime.wait_idle()
        [replacement] = _working_stops(sim)
        assert replacement["orderId"] != stop["orderId"] and Decimal(str(replacement["origQty"])) == _position(sim)
        ctx = runtime.broker.active_trades[0]
        assert ctx.stop is not None and ctx.stop.exchange_order_id == str(replacement["orderId"])
        assert runtime.broker.halted_reason is not None
        assert any(kind == "error" and "could not be read" in text for kind, text in alerts), alerts
    finally:
        await runtime.stop()
        await sim.stop()


async def test_unexpected_placement_error_marks_the_order_unknown_and_halts(db_url: str) -> None:
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        assert runtime.live is not None and runtime.broker is not None
        real_place = runtime.live.place
        calls: list[str] = []

        async def place_fails_once(spec: Any) -> Any:
            calls.append(spec.client_order_id)
            if len(calls) == 1:
                raise KeyError("orderId")  # e.g. an answer of an unexpected shape
            return await real_place(spec)

        runtime.live.place = place_fails_once  # type: ignore[method-assign]
        minutes = 0
        while not calls:
            assert minutes < 40, "no entry attempted"
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        await runtime.wait_idle()
        entry = await Order.get(intent=OrderIntent.ENTRY)
        assert entry.status in (OrderStatus.UNKNOWN, OrderStatus.EXPIRED)  # never left SENT
        assert runtime.broker.halted_reason is not None and "unknown state" in runtime.broker.halted_reason
        for _ in range(300):  # the tracker looks it up by client order id and ends it
            await entry.refresh_from_db()
            if entry.status is OrderStatus.EXPIRED:
                break
            await asyncio.sleep(0.02)
        assert entry.status is OrderStatus.EXPIRED
    finally:
        await runtime.stop()
        await sim.stop()


async def test_broker_reports_its_placements_in_flight_to_reconciliation(db_url: str) -> None:
    """While the exchange has not answered a placement, reconciliation must see it as in flight."""
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        assert runtime.live is not None and runtime.broker is not None
        broker = runtime.broker
        real_place = runtime.live.place
        seen_during: list[frozenset[str]] = []

        async def observed_place(spec: Any) -> Any:
            seen_during.append(broker.placements_in_flight())
            assert spec.client_order_id in seen_during[-1]
            return await real_place(spec)

        runtime.live.place = observed_place  # type: ignore[method-assign]
        minutes = 0
        while not seen_during:
            assert minutes < 40, "no entry attempted"
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        await runtime.wait_idle()
        assert broker.placements_in_flight() == frozenset()  # answered: no longer in flight
    finally:
        await runtime.stop()
        await sim.stop()


async def test_tracker_treats_an_old_sent_order_as_unknown(db_url: str) -> None:
    from engine.execution.order_store import OrderStore
    from engine.execution.venue import OrderSpec

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    alerts: list[tuple[str, str]] = []

    async def on_alert(event_type: str, text: str, payload: dict[str, Any]) -> None:
        alerts.append((event_type, text))

    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options(stale_sent_s=0.3),
                             on_alert=on_alert)
    try:
        await runtime.start()
        # a placement whose call died (crash of the job, cancellation) and left its row SENT
        store = OrderStore("live")
        spec = OrderSpec(symbol=SYMBOL, side="BUY", position_side="LONG", order_type="MARKET", quantity=Decimal(10),
                         client_order_id="en-lost-placement-1")
        order = await store.create(spec, OrderIntent.ENTRY, None)
        await store.set_status(order, OrderStatus.SENT, "placement")
        for _ in range(300):
            await order.refresh_from_db()
            if order.status is OrderStatus.EXPIRED:
                break
            await asyncio.sleep(0.02)
        assert order.status is OrderStatus.EXPIRED  # looked up by client order id: confirmed absent
        assert runtime.broker is not None and runtime.broker.halted_reason is not None
        assert any(kind == "halt" and "never answered" in text for kind, text in alerts), alerts
    finally:
        await runtime.stop()
        await sim.stop()


# -- 9. a report carrying the entry's client id but another exchange id is another order ----------------


async def test_report_with_the_entry_client_id_and_another_exchange_id_is_not_applied_to_the_entry(db_url: str) -> None:
    from engine.execution.venue import VenueUpdate

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        assert runtime.live is not None and runtime.broker is not None
        entry = await Order.get(intent=OrderIntent.ENTRY)
        ctx = runtime.broker.active_trades[0]
        assert ctx.attached_stop is not None and entry.exchange_order_id
        # an attached stop reported with its entry's client id (if BingX copies it): adopted as the stop, entry untouched
        other_id = "1" + entry.exchange_order_id
        await runtime.live.emit(VenueUpdate(SYMBOL, other_id, entry.client_order_id, ctx.closing_side, ctx.side, "STOP_MARKET",
                                            OrderStatus.NEW, ctx.open_qty, ctx.attached_stop, Decimal(0), Decimal(0)))
        await runtime.wait_idle()
        again = await Order.get(id=entry.id)
        assert (again.exchange_order_id, again.status, again.filled_qty) == (entry.exchange_order_id, entry.status, entry.filled_qty)
        adopted = await Order.get_or_none(exchange_order_id=other_id)
        assert adopted is not None and adopted.intent is OrderIntent.STOP_LOSS and adopted.id != entry.id
    finally:
        await runtime.stop()
        await sim.stop()


# -- 5. a stop fill seen by both reconciliation and the broker is booked and counted once -------------


async def test_reconciled_stop_fill_is_booked_once_and_reported_to_risk_once(db_url: str) -> None:
    from bot.worker import Worker
    from db.models import TradeExit
    from engine.execution.live_venue import LiveVenue
    from engine.risk.manager import RiskManager
    from engine.risk.reconcile import Reconciler

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    worker = Worker(config)
    worker.risk = RiskManager(config, alert=worker.alerts.risk)
    worker.alerts.on_trade_closed = worker._trade_closed
    reported: list[tuple[str, Decimal]] = []
    real_on_trade_closed = worker.risk.on_trade_closed

    async def counting(symbol: str, strategy: str, pnl: Decimal) -> Any:
        reported.append((symbol, pnl))
        return await real_on_trade_closed(symbol, strategy, pnl)

    worker.risk.on_trade_closed = counting
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options(), on_alert=worker.alerts.execution)
    worker.runtime = runtime
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        assert runtime.tracker is not None and runtime.account_stream is not None and runtime.live is not None
        # an outage: no stream, no polls; the stop fills meanwhile
        await runtime.tracker.stop()
        await runtime.account_stream.close()
        trade = await Trade.get(mode="live", state=TradeState.OPEN)
        stop_row = await Order.get(trade_id=trade.id, intent=OrderIntent.STOP_LOSS, status=OrderStatus.NEW)
        sim.engine._trigger(sim.engine.find_order(SYMBOL, stop_row.exchange_order_id, None), sim.markets[SYMBOL])
        assert _position(sim) == 0

        # after the reconnect: reconciliation (with the worker's hook) and the stale copy of the fill both arrive
        reconciler = Reconciler(runtime.rest, config, worker.risk, alert=worker.alerts.risk, mode="live",
                                on_trade_closed=worker._reconciled_close)
        report = await reconciler.run("stream reconnect")
        assert report.trades_closed, report.summary()
        update = await LiveVenue(runtime.rest).query(SYMBOL, exchange_order_id=stop_row.exchange_order_id)
        assert update is not None
        await runtime.live.emit(update)
        await runtime.wait_idle()

        closed = await Trade.get(id=trade.id)
        assert closed.state is TradeState.CLOSED and closed.exit_reason == "stop"
        assert await TradeExit.filter(trade_id=trade.id).count() == 1
        assert len(reported) == 1, reported
        assert reported[0][1] == closed.realized_pnl + closed.funding
        assert runtime.broker is not None and runtime.broker.open_trades() == []
    finally:
        await runtime.stop()
        await sim.stop()


# -- 6. the entry gate sees the last trusted price, the real available margin and the contract minimums -----


def _request(**changes: Any) -> Any:
    from engine.execution.broker import TradeRequest

    base = dict(mode="paper", symbol=SYMBOL, strategy="multi_timeframe_long", side="LONG", qty=Decimal(100), entry=0.5,
                stop=0.49, target=0.53, risk_amount=1.0, notional=50.0, equity=10_000.0, time_ms=0)
    base.update(changes)
    return TradeRequest(**base)


@pytest.mark.parametrize("recheck", [False, True])
async def test_entry_gate_checks_price_margin_and_minimums(db_url: str, recheck: bool) -> None:
    from engine.risk.hooks import entry_gate
    from engine.risk.manager import RiskManager

    sim = simulator(*window(2620, 2622))  # only for a valid configuration; nothing is started
    risk = RiskManager(app_config("paper", sim, db_url, api_key="", api_secret=""))
    prices = {SYMBOL: 0.5}
    margin = {"available": Decimal(10000)}

    async def available() -> Decimal:
        return margin["available"]

    gate = entry_gate(risk, reference_price=prices.get, available_margin=available,
                      minimums=lambda symbol: (Decimal(10), Decimal(5)))
    assert (await gate(_request(recheck=recheck))).allowed
    # an absurd entry price (the feed's last trade is 0.5): refused
    decision = await gate(_request(entry=5.0, stop=4.9, target=5.3, recheck=recheck))
    assert not decision.allowed and decision.reason.startswith("price_deviation"), decision
    # the contract minimums
    decision = await gate(_request(qty=Decimal(5), recheck=recheck))
    assert not decision.allowed and decision.reason.startswith("contract_minimum"), decision
    # the margin the account really has, not the equity
    margin["available"] = Decimal(1)
    decision = await gate(_request(recheck=recheck))
    assert not decision.allowed and decision.reason.startswith("free_margin"), decision

    async def unreadable() -> Decimal:
        raise ConnectionError("balance endpoint down")

    decision = await entry_gate(risk, reference_price=prices.get, available_margin=unreadable)(_request(recheck=recheck))
    assert not decision.allowed and "unreadable" in decision.reason


async def test_the_recheck_after_an_approval_reads_the_trading_state_afresh_and_audits_a_refusal(db_url: str) -> None:
    """Minutes may pass while a human decides: the re-check must see a pause another process wrote even while
    the gate's cached view of the state is still fresh, and its refusal is audited like a first check's."""
    from db.models import AuditLog
    from engine.risk.hooks import entry_gate
    from engine.risk.manager import RiskManager
    from engine.risk.state import TradingState

    sim = simulator(*window(2620, 2622))  # only for a valid configuration; nothing is started
    config = app_config("paper", sim, db_url, api_key="", api_secret="")
    risk = RiskManager(config, entry_view_ttl_s=3600.0)  # the cached view never expires during the test

    async def available() -> Decimal:
        return Decimal(10000)

    gate = entry_gate(risk, reference_price={SYMBOL: 0.5}.get, available_margin=available)
    assert (await gate(_request())).allowed  # reads and caches the view: trading is running
    # another process (emergency-stop, /pause through another worker) pauses trading in the database
    await RiskManager(config).state.set(TradingState.PAUSED, "paused by a test", "test")
    assert (await gate(_request())).allowed  # a first check within the view's lifetime does not see it yet
    decision = await gate(_request(recheck=True))
    assert not decision.allowed and decision.reason.startswith("state: trading is PAUSED"), decision
    rejections = await AuditLog.filter(kind="risk_rejection").values_list("detail", flat=True)
    assert [d["rule"] for d in rejections] == ["state"]


async def test_available_margin_live_comes_from_the_exchange(db_url: str) -> None:
    from bot.worker import _available_margin, _contract_minimums, _last_price

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        account = sim.state()["account"]
        margin = await _available_margin(runtime)
        assert margin == Decimal(str(account["available_margin"])) and margin < Decimal(str(account["wallet"]))
        assert _last_price(runtime, SYMBOL) is not None and _last_price(runtime, SYMBOL) > 0
        min_qty, min_notional = _contract_minimums(runtime, SYMBOL)
        assert min_qty > 0 and min_notional >= 0
    finally:
        await runtime.stop()
        await sim.stop()


# -- 7. deposits/withdrawals from the account stream are noted for the balance check --------------------


async def test_deposit_on_the_account_stream_is_noted(db_url: str) -> None:
    from bot.worker import Worker
    from db.kv import kv_get
    from engine.risk.balance_check import transfers_key
    from engine.simulator import formats

    data, start_ms = window(2620, 2640)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    worker = Worker(config)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    runtime.on_stream_event = worker._on_stream_event
    try:
        await runtime.start()
        now = sim.server_time_ms()
        sim.hub.publish_account(formats.ws_account_update("DEPOSIT", Decimal(250), [], sim.engine, now))
        sim.hub.publish_account(formats.ws_account_update("ORDER", Decimal(-3), [], sim.engine, now))  # not a transfer
        for _ in range(500):
            if (await kv_get(transfers_key("live"), {}) or {}).get("total") not in (None, "0"):
                break
            await asyncio.sleep(0.01)
        stored = await kv_get(transfers_key("live"), {})
        assert Decimal(stored["total"]) == Decimal(250), stored
    finally:
        await runtime.stop()
        await sim.stop()


# -- 8. funding settled while the bot was down is booked at restart, once --------------------------------


async def test_funding_paid_while_down_is_booked_once_at_restart(db_url: str) -> None:
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        first = settle_funding(sim)  # one settlement while the bot runs: booked from the account stream
        assert first != 0
        trade = await Trade.get(mode="live", state=TradeState.OPEN)
        for _ in range(500):
            await trade.refresh_from_db()
            if trade.funding != 0:
                break
            await asyncio.sleep(0.01)
        await runtime.wait_idle()
        assert trade.funding == first
    finally:
        await runtime.stop()
    try:
        # the next settlement comes while the bot is down (10 replayed minutes later: the window has no 8 h boundary)
        await sim.advance(to_ms=sim.server_time_ms() + 10 * 60_000)
        assert _position(sim) > 0
        missed = settle_funding(sim) - first
        assert missed != 0
        for _ in range(2):  # two restarts: the missed payment is booked by the first only
            runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
            try:
                await runtime.start()
                await runtime.wait_idle()
            finally:
                await runtime.stop()
            await trade.refresh_from_db()
            assert trade.funding == first + missed, (trade.funding, first, missed)
    finally:
        await sim.stop()


async def test_available_margin_paper_is_the_wallet_less_the_margin_of_open_trades(db_url: str) -> None:
    from bot.worker import _available_margin

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("paper", sim, db_url, api_key="", api_secret="")
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        assert runtime.broker is not None
        assert await _available_margin(runtime) == runtime.broker.wallet
        minutes = 0
        while not runtime.broker.open_trades():
            assert minutes < 40, "no trade opened"
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        [view] = runtime.broker.open_trades()
        leverage = Decimal(max(1, round(config.strategies.leverage)))
        assert await _available_margin(runtime) == runtime.broker.wallet - view.qty * view.entry_price / leverage
    finally:
        await runtime.stop()
        await sim.stop()
