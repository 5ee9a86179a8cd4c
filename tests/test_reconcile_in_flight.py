"""Reconciliation next to orders the bot itself has in flight, and the bookkeeping around an entry whose
fill the broker has not booked yet (the full-worker soak's findings), against the simulator on 127.0.0.1.

- The SL/TP the exchange attached to an entry still in flight is not "unknown to the bot" (no halt).
- An acknowledged entry the running broker still books is only read: reconciliation does not write its fill
  (the broker would never book it, never open the trade, never adopt the attached SL/TP).
- With no broker running (start-up) nothing is in flight: the entry is brought forward for restart recovery.
- The wallet is not compared while an order is in flight, and the baseline is kept for the next run.
- A trade closed by start reconciliation sends its own "closed by" alert.
- Restart recovery adopts the exchange's attached SL/TP of an entry filled while the bot was away.
- A funding payment that settles while the entry fill is not booked yet is booked once the entry is.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bot.config import load_config
from db.kv import kv_get
from db.models import Fill, Order, OrderEvent, OrderIntent, OrderStatus, Trade, TradeState
from engine.exchange.bingx import BingxRestClient, OrderRequest, new_client_order_id
from engine.exchange.bingx.orders import OrderType, TriggerSpec, WorkingType
from engine.risk.balance_check import baseline_key
from engine.risk.manager import RiskManager
from engine.risk.orders_db import apply_exchange
from engine.risk.reconcile import Reconciler
from engine.risk.state import TradingState
from tests.risk_sim import SYM, open_orders_of, open_trade, sim_state

pytestmark = pytest.mark.timeout(120)

# the soak's pattern for a "closed" alert (bench/soak.py CLOSED_RE)
CLOSED_RE = re.compile(r"^\[LIVE\] (?P<symbol>\S+) (?P<strategy>\S+) (?P<side>LONG|SHORT) closed by .*?: pnl (?P<pnl>-?[\d.]+) ")


def config(**reconciliation: Any):
    return load_config(None, env={}, overrides={"mode": "paper", "symbols": [SYM], "reconciliation": reconciliation})


def reconciler(client: BingxRestClient, *, settling: Any = frozenset, placing: Any = frozenset, tolerance: float = 1.0,
               **kw: Any) -> tuple[Reconciler, RiskManager, list[Any]]:
    """A reconciler wired as the worker wires it: ``settling()`` None = no broker runs, else the ids it books."""
    events: list[Any] = []
    cfg = config(balance_tolerance_usdt=tolerance)
    risk = RiskManager(cfg, alert=events.append)
    rec = Reconciler(client, cfg, risk, mode="live", placements_in_flight=placing, orders_settling=settling,
                     balance_settle_s=0.01, **kw)
    return rec, risk, events


async def entry_with_attached(sim: Any, client: BingxRestClient, *, status: OrderStatus = OrderStatus.SENT,
                              qty: str = "100") -> tuple[Trade, Order, Any]:
    """A market entry carrying an attached SL/TP, filled on the exchange, with the rows the broker writes before
    sending it (PENDING trade, entry row SENT, the attached levels on its CREATED event)."""
    last = Decimal((await sim_state(sim))["markets"][SYM]["last_price"])
    stop, target = (last * Decimal("0.9")).quantize(Decimal("0.0001")), (last * Decimal("1.2")).quantize(Decimal("0.0001"))
    cid = new_client_order_id("en")
    trade = await Trade.create(symbol=SYM, strategy="multi_timeframe_long", side="LONG", state=TradeState.PENDING, mode="live",
                               initial_qty=Decimal(qty), qty=0, initial_stop=stop, stop=stop, target=target,
                               risk_per_unit=last - stop)
    row = await Order.create(client_order_id=cid, trade=trade, mode="live", symbol=SYM, intent=OrderIntent.ENTRY, side="BUY",
                             position_side="LONG", order_type="MARKET", quantity=Decimal(qty), status=status)
    await OrderEvent.create(order=row, status=OrderStatus.CREATED, source="placement",
                            detail={"stop_loss": str(stop), "take_profit": str(target)})
    placed = await client.place_order(OrderRequest(
        symbol=SYM, side="BUY", position_side="LONG", type="MARKET", quantity=Decimal(qty), client_order_id=cid,
        stop_loss=TriggerSpec(OrderType.STOP_MARKET, stop, working_type=WorkingType.CONTRACT_PRICE, quantity=Decimal(qty)),
        take_profit=TriggerSpec(OrderType.TAKE_PROFIT_MARKET, target, working_type=WorkingType.CONTRACT_PRICE,
                                quantity=Decimal(qty))))
    attached = [o for o in open_orders_of(await sim_state(sim)) if not o.get("clientOrderId")]
    assert {o["type"] for o in attached} == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}, attached
    return trade, row, placed


# -- Bug 1: the attached SL/TP of an entry in flight --------------------------------------------------------


async def test_attached_orders_of_an_entry_in_flight_do_not_halt(db_url, sim, client) -> None:
    trade, row, _ = await entry_with_attached(sim, client)  # the placement has not answered yet (row SENT, young)
    rec, risk, events = reconciler(client, placing=lambda: {row.client_order_id})
    report = await rec.run("periodic")
    assert report.ok, report.summary()
    assert any("attached to an entry" in item for item in report.in_flight), report.summary()
    assert (await risk.state.current()).state is TradingState.RUNNING
    assert not [e for e in events if e.event_type == "halt"]
    assert await Order.filter(mode="live").count() == 1  # nothing adopted behind the broker's back
    assert len(open_orders_of(await sim_state(sim))) == 2  # and nothing cancelled


# -- Bug 2: an acknowledged entry the broker still books ----------------------------------------------------


@pytest.mark.parametrize("hook", [True, False], ids=["broker-says-settling", "no-hook-pending-entry"])
async def test_entry_the_broker_still_books_is_read_not_written(db_url, sim, client, hook: bool) -> None:
    trade, row, placed = await entry_with_attached(sim, client)
    # the broker's state after a placement answered FILLED by lookup: acknowledged, executions still to be booked
    row.exchange_order_id, row.status = placed.order_id, OrderStatus.PARTIALLY_FILLED
    await row.save()
    if hook:
        rec, risk, _ = reconciler(client, settling=lambda: {row.id})
    else:
        events: list[Any] = []
        cfg = config()
        risk = RiskManager(cfg, alert=events.append)
        rec = Reconciler(client, cfg, risk, mode="live", placements_in_flight=frozenset, balance_settle_s=0.01)
    report = await rec.run("periodic")
    assert report.ok, report.summary()
    await row.refresh_from_db()
    assert row.status is OrderStatus.PARTIALLY_FILLED and row.filled_qty == 0  # left to the broker
    assert not await Fill.filter(order_id=row.id).exists()
    assert any("in flight" in item for item in report.in_flight)
    assert (await risk.state.current()).state is TradingState.RUNNING


async def test_with_no_broker_running_the_entry_is_brought_forward_for_recovery(db_url, sim, client) -> None:
    """Start-up: whoever placed the entry is gone; a young row is not "in flight" (recovery would halt on it)."""
    trade, row, placed = await entry_with_attached(sim, client)
    rec, risk, _ = reconciler(client, settling=lambda: None)
    report = await rec.run("start")
    assert report.ok, report.summary()
    await row.refresh_from_db()
    assert row.status is OrderStatus.FILLED and row.filled_qty == Decimal(100)
    assert await Fill.filter(order_id=row.id).exists()
    # its attached SL/TP are left for restart recovery to adopt with the entry
    assert any("attached to an entry" in item for item in report.in_flight), report.summary()
    assert await Order.filter(mode="live").count() == 1
    assert (await risk.state.current()).state is TradingState.RUNNING


async def test_attached_orders_of_an_entry_just_booked_are_the_brokers_to_adopt(db_url, sim, client) -> None:
    """The broker adopts an entry's attached SL/TP right after booking its fill; reconciliation adopting them in
    the same moment would race it for the same row. While a broker runs, a just-opened trade's are left to it."""
    trade, row, placed = await entry_with_attached(sim, client)
    await apply_exchange(row, await client.query_order(SYM, order_id=placed.order_id), "test")  # the broker booked it
    trade.state, trade.qty, trade.entry_price = TradeState.OPEN, Decimal(100), row.avg_price
    await trade.save()
    rec, risk, _ = reconciler(client)  # a broker runs
    report = await rec.run("periodic")
    assert report.ok, report.summary()
    assert not report.adopted_orders and await Order.filter(mode="live").count() == 1, report.summary()
    # with no broker running (a crash right after the fill was booked), reconciliation adopts them
    rec, risk, _ = reconciler(client, settling=lambda: None)
    report = await rec.run("start")
    assert report.ok and len(report.adopted_orders) == 2, report.summary()
    adopted = await Order.filter(mode="live", intent__in=[OrderIntent.STOP_LOSS, OrderIntent.TAKE_PROFIT])
    assert {o.trade_id for o in adopted} == {trade.id}


# -- Bug 1: the wallet while an order is in flight ----------------------------------------------------------


async def test_wallet_is_compared_across_an_order_in_flight_not_during_it(db_url, sim, client) -> None:
    rec, risk, events = reconciler(client, tolerance=0.0001)
    first = await rec.run("start")
    assert first.ok and first.balance_check is not None  # the baseline
    baseline = await kv_get(baseline_key("live"))

    trade, row, placed = await entry_with_attached(sim, client)  # its fee left the wallet, nothing booked yet
    during = await rec.run("periodic")
    assert during.ok, during.summary()
    assert during.balance_check is None and any(i.startswith("wallet balance") for i in during.in_flight)
    assert await kv_get(baseline_key("live")) == baseline  # the baseline is kept
    assert (await risk.state.current()).state is TradingState.RUNNING

    # the broker books the fill and opens the trade: the next run explains the whole change
    ex = await client.query_order(SYM, order_id=placed.order_id)
    await apply_exchange(row, ex, "test")
    trade.state, trade.qty, trade.entry_price = TradeState.OPEN, Decimal(100), ex.avg_price
    await trade.save()
    after = await rec.run("periodic")
    assert after.ok, after.summary()
    assert after.balance_check is not None and after.balance_check.outcome.value == "ok", after.summary()
    assert (await risk.state.current()).state is TradingState.RUNNING


# -- a trade closed by start reconciliation gets its "closed by" alert --------------------------------------


async def test_trade_closed_by_start_reconciliation_sends_its_closed_alert(db_url, sim, client) -> None:
    from bot.worker import Worker

    trade, stop_row = await open_trade(client, qty="20")
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)  # the stop "fired" while the bot was down
    closed = await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                                   quantity=Decimal(20), client_order_id=new_client_order_id("x")))
    stop_row.client_order_id, stop_row.exchange_order_id = closed.client_order_id, closed.order_id
    await stop_row.save()

    cfg = load_config(None, env={}, overrides={"mode": "live", "symbols": [SYM],
                                                "exchange": {"api_key": "risk-key", "api_secret": "risk-secret"}})
    worker = Worker(cfg)
    sent: list[tuple[str, str]] = []
    worker.alerts.forward = lambda kind, text, payload: sent.append((kind, text))
    worker.risk = RiskManager(cfg, alert=worker.alerts.risk)
    rec = Reconciler(client, cfg, worker.risk, alert=worker.alerts.risk, mode="live", on_trade_closed=worker._reconciled_close,
                     placements_in_flight=frozenset, orders_settling=lambda: None, balance_settle_s=0.01)
    report = await rec.run("start")  # before trading starts: no broker
    assert report.ok and len(report.trades_closed) == 1, report.summary()
    await trade.refresh_from_db()
    assert trade.state is TradeState.CLOSED
    exits = [text for kind, text in sent if kind == "exit"]
    assert len(exits) == 1, sent
    match = CLOSED_RE.match(exits[0])
    assert match and (match["symbol"], match["strategy"], match["side"]) == (SYM, trade.strategy, "LONG"), exits
    assert Decimal(match["pnl"]) == Decimal(trade.realized_pnl).quantize(Decimal("0.0001"))


# -- restart recovery adopts the attached SL/TP of an entry filled while away ------------------------------


async def test_restart_recovery_adopts_the_attached_orders_of_an_entry_filled_while_away(db_url: str) -> None:
    from engine.execution.runtime import TradingRuntime
    from tests.execution_sim import API_KEY, API_SECRET, SYMBOL, app_config, options, simulator, window

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    try:
        async with BingxRestClient(rest_url=sim.rest_url, api_key=API_KEY, api_secret=API_SECRET) as rest:
            last = Decimal(str(sim.state()["markets"][SYMBOL]["last_price"]))
            # the signal's levels as the trade row keeps them (unrounded); the entry carried them rounded to the tick
            raw_stop, raw_target = last * Decimal("0.98") - Decimal("0.0000123"), last * Decimal("1.05") + Decimal("0.0000123")
            cid = new_client_order_id("en")
            placed = await rest.place_order(OrderRequest(
                symbol=SYMBOL, side="BUY", position_side="LONG", type="MARKET", quantity=Decimal(100), client_order_id=cid,
                stop_loss=TriggerSpec(OrderType.STOP_MARKET, raw_stop, working_type=WorkingType.CONTRACT_PRICE,
                                      quantity=Decimal(100)),
                take_profit=TriggerSpec(OrderType.TAKE_PROFIT_MARKET, raw_target, working_type=WorkingType.CONTRACT_PRICE,
                                        quantity=Decimal(100))))
            attached = {o["type"]: o for o in open_orders_of(sim.state()) if not o.get("clientOrderId")}
            assert set(attached) == {"STOP_MARKET", "TAKE_PROFIT_MARKET"}
            sent_stop, sent_target = Decimal(str(attached["STOP_MARKET"]["stopPrice"])), Decimal(str(attached["TAKE_PROFIT_MARKET"]["stopPrice"]))
            assert sent_stop != raw_stop  # the row's level and the exchange's differ by the rounding
            # what a crash right after the fill leaves, once start reconciliation brought the entry forward
            trade = await Trade.create(symbol=SYMBOL, strategy="multi_timeframe_long", side="LONG", state=TradeState.PENDING,
                                       mode="live", initial_qty=Decimal(100), qty=0, initial_stop=raw_stop, stop=raw_stop,
                                       target=raw_target, risk_per_unit=last - raw_stop)
            row = await Order.create(client_order_id=cid, trade=trade, mode="live", symbol=SYMBOL, intent=OrderIntent.ENTRY,
                                     side="BUY", position_side="LONG", order_type="MARKET", quantity=Decimal(100),
                                     status=OrderStatus.SENT)
            await OrderEvent.create(order=row, status=OrderStatus.CREATED, source="placement",
                                    detail={"stop_loss": str(sent_stop), "take_profit": str(sent_target)})
            await apply_exchange(row, await rest.query_order(SYMBOL, order_id=placed.order_id), "reconcile")

        runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
        try:
            await runtime.start()
            await runtime.wait_idle()
            assert runtime.recovery is not None and runtime.recovery.ok, runtime.recovery.summary()
            assert (await Trade.get(id=trade.id)).state is TradeState.OPEN
            for kind, intent in (("STOP_MARKET", OrderIntent.STOP_LOSS), ("TAKE_PROFIT_MARKET", OrderIntent.TAKE_PROFIT)):
                adopted = await Order.get_or_none(exchange_order_id=str(attached[kind]["orderId"]), mode="live")
                assert adopted is not None and adopted.intent is intent and adopted.trade_id == trade.id, kind
            known = {o.exchange_order_id for o in await Order.filter(mode="live")}
            assert {str(o["orderId"]) for o in sim.state()["orders"]} <= known  # every exchange order is the bot's
        finally:
            await runtime.stop()
    finally:
        await sim.stop()


# -- funding settled while the entry fill is not booked yet --------------------------------------------------


async def test_funding_while_the_entry_fill_is_not_booked_yet_is_booked_with_the_entry(db_url: str) -> None:
    from engine.execution.runtime import TradingRuntime
    from tests.execution_sim import app_config, funding_paid, options, simulator, step_minutes, window

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    # the account stream loses the entry's execution reports: the broker books the fill from its next poll
    publish = sim.hub.publish_account

    settled: list[int] = []

    def lossy(payload: dict[str, Any]) -> None:
        order = payload.get("o") if isinstance(payload, dict) else None
        if payload.get("e") == "ORDER_TRADE_UPDATE" and isinstance(order, dict) and str(order.get("c", "")).startswith("en"):
            if order.get("X") == "FILLED" and not settled:
                # the position is open on the exchange, its trade still pending in the books: funding settles now
                settled.append(sim.server_time_ms())
                asyncio.get_running_loop().call_soon(sim.engine.apply_funding, settled[0])
            return
        publish(payload)

    sim.hub.publish_account = lossy  # type: ignore[method-assign]
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms,
                             options=options(slow_poll_s=4.0, fast_poll_s=4.0, fill_grace_s=4.0))
    try:
        await runtime.start()
        minutes = 0
        while not settled:
            assert minutes < 40, "no entry"
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        trade = await Trade.get(mode="live")
        paid = funding_paid(sim)
        assert paid != 0

        async def booked() -> bool:
            await trade.refresh_from_db()
            return trade.state is TradeState.OPEN and trade.funding != 0

        for _ in range(300):
            if await booked():
                break
            await asyncio.sleep(0.05)
        await runtime.wait_idle()
        await trade.refresh_from_db()
        assert trade.state is TradeState.OPEN
        assert trade.funding == paid, (trade.funding, paid)
    finally:
        await runtime.stop()
        await sim.stop()


async def test_funding_missed_while_the_account_stream_was_down_is_booked_on_reconnect(db_url: str) -> None:
    from engine.exchange.bingx.events import StreamReconnected
    from engine.execution.runtime import TradingRuntime
    from tests.execution_sim import (app_config, hold_account_reports, is_funding_report, open_live_trade, options,
                                     settle_funding, simulator, window)
    from bot.worker import Worker

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    lost, _ = hold_account_reports(sim, is_funding_report)  # the stream is down when the funding settles: never published
    config = app_config("live", sim, db_url)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        await open_live_trade(sim, runtime, start_ms)
        paid = settle_funding(sim)
        assert paid != 0 and lost, "the funding event was not lost: no test"
        trade = await Trade.get(mode="live", state=TradeState.OPEN)
        assert trade.funding == 0

        # the worker hears that the stream reconnected: events may have been missed, the funding among them
        worker = Worker(config)
        worker.runtime = runtime
        worker.reconciler = Reconciler(runtime.rest, config, RiskManager(config), mode="live", balance_settle_s=0.01,
                                       placements_in_flight=lambda: runtime.broker.placements_in_flight(),
                                       orders_settling=lambda: runtime.broker.orders_settling())
        await worker._on_stream_event(StreamReconnected(stream="account", shard=0, topics=(), attempt=1, downtime_s=0.5))
        await runtime.wait_idle()
        if worker._reconcile_task is not None:
            await worker._reconcile_task
        await trade.refresh_from_db()
        assert trade.funding == paid, (trade.funding, paid)
        # once: a second reconnect books nothing more
        await worker._on_stream_event(StreamReconnected(stream="account", shard=0, topics=(), attempt=1, downtime_s=0.5))
        await runtime.wait_idle()
        if worker._reconcile_task is not None:
            await worker._reconcile_task
        await trade.refresh_from_db()
        assert trade.funding == paid
    finally:
        await runtime.stop()
        await sim.stop()


async def test_funding_reported_after_the_close_was_booked_goes_to_the_trade_that_held_it(db_url: str) -> None:
    """The payment settled while the trade was open, but its event is handled after the trade's close was booked
    (the fills were learned first, by a lookup or from a slow queue): it is still the closed trade's funding."""
    from engine.execution.runtime import TradingRuntime
    from tests.execution_sim import (app_config, hold_account_reports, is_funding_report, open_live_trade, options,
                                     settle_funding, simulator, window)

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    held, publish = hold_account_reports(sim, is_funding_report)  # the funding event reaches the bot only after the close
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        assert runtime.broker is not None
        await open_live_trade(sim, runtime, start_ms)
        paid = settle_funding(sim)
        assert paid != 0 and held, "no funding event held back: no test"
        [ctx] = runtime.broker.active_trades
        assert runtime.broker.close_trade(ctx.trade_id)
        for _ in range(200):
            await runtime.wait_idle()
            if await Trade.filter(mode="live", state=TradeState.CLOSED).count() == 1:
                break
            await asyncio.sleep(0.05)
        trade = await Trade.get(mode="live")
        assert trade.state is TradeState.CLOSED and trade.funding == 0

        publish(held[0])  # now the event arrives
        for _ in range(100):
            await runtime.wait_idle()
            await trade.refresh_from_db()
            if trade.funding != 0:
                break
            await asyncio.sleep(0.05)
        assert trade.funding == paid, (trade.funding, paid)
    finally:
        await runtime.stop()
        await sim.stop()


async def test_funding_history_is_read_up_to_the_exchanges_now_not_our_estimate_of_it(db_url, sim, client) -> None:
    """Our estimate of server time can lag the exchange (an offset measured a while ago; a replay running
    many times faster than the wall clock): a payment the exchange settled must still be in the answer."""
    from engine.execution.live_venue import LiveVenue

    await open_trade(client, qty="100")
    await client.sync_time()
    sim.engine.apply_funding(sim.server_time_ms())
    paid = [r for r in sim.engine.account.income if r.income_type == "FUNDING_FEE"]
    assert paid and paid[0].amount != 0
    client.time.offset_ms -= 3_600_000  # our estimate is an hour behind the exchange's clock
    records = await LiveVenue(client).funding_income(SYM, paid[0].time_ms - 60_000)
    assert [(amount, time_ms) for _, amount, time_ms in records] == [(paid[0].amount, paid[0].time_ms)]


# -- a trade closed while the bot was down: its unbooked exits only, and the funding it paid meanwhile --------


async def _close_while_away(client: BingxRestClient, trade: Trade, qty: Decimal, *, intent: OrderIntent,
                            status: OrderStatus) -> Order:
    """The exchange closes ``qty`` (the stop/target fired while the bot was down); the row as a restart finds it."""
    closed = await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                                   quantity=qty, client_order_id=new_client_order_id("x")))
    row = await Order.create(client_order_id=closed.client_order_id, exchange_order_id=closed.order_id, trade=trade,
                             mode="live", symbol=SYM, intent=intent, side="SELL", position_side="LONG",
                             order_type="TAKE_PROFIT_MARKET", quantity=Decimal(trade.initial_qty), status=OrderStatus.NEW)
    await apply_exchange(row, closed, "test")
    row.status = status  # a take-profit sized for more than was left fills what is open and ends EXPIRED
    await row.save()
    return row


def _worker_reconciler(client: BingxRestClient) -> tuple[Any, Reconciler, list[tuple[str, str]]]:
    from bot.worker import Worker

    cfg = load_config(None, env={}, overrides={"mode": "live", "symbols": [SYM],
                                                "exchange": {"api_key": "risk-key", "api_secret": "risk-secret"}})
    worker = Worker(cfg)
    sent: list[tuple[str, str]] = []
    worker.alerts.forward = lambda kind, text, payload: sent.append((kind, text))
    worker.risk = RiskManager(cfg, alert=worker.alerts.risk)
    rec = Reconciler(client, cfg, worker.risk, alert=worker.alerts.risk, mode="live", on_trade_closed=worker._reconciled_close,
                     placements_in_flight=frozenset, orders_settling=lambda: None, balance_settle_s=0.01)
    return worker, rec, sent


async def test_close_while_away_books_only_the_exits_not_booked_yet(db_url, sim, client) -> None:
    from db.models import TradeExit

    trade, stop_row = await open_trade(client, qty="20")
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    # a partial exit of 5, booked by the broker before the crash
    partial = await _close_while_away(client, trade, Decimal(5), intent=OrderIntent.PARTIAL_EXIT, status=OrderStatus.FILLED)
    partial_fee = sum((f.fee for f in await Fill.filter(order_id=partial.id)), Decimal(0))
    partial_pnl = (partial.avg_price - trade.entry_price) * 5 - partial_fee
    await TradeExit.create(trade=trade, kind="partial_2R", qty=5, price=partial.avg_price, pnl=partial_pnl, fee=partial_fee,
                           time_ms=0)
    trade.qty, trade.realized_pnl, trade.fees = Decimal(15), partial_pnl, partial_fee
    await trade.save()
    # then the target fired on the 15 left while the bot was down (its row ends EXPIRED with 15 executed)
    target = await _close_while_away(client, trade, Decimal(15), intent=OrderIntent.TAKE_PROFIT, status=OrderStatus.EXPIRED)
    target_fee = sum((f.fee for f in await Fill.filter(order_id=target.id)), Decimal(0))

    worker, rec, sent = _worker_reconciler(client)
    report = await rec.run("start")
    assert report.ok and len(report.trades_closed) == 1, report.summary()
    assert target.client_order_id in report.trades_closed[0] and partial.client_order_id not in report.trades_closed[0]
    await trade.refresh_from_db()
    assert trade.state is TradeState.CLOSED
    assert trade.realized_pnl == partial_pnl + (target.avg_price - trade.entry_price) * 15 - target_fee
    exits = [text for kind, text in sent if kind == "exit"]
    assert len(exits) == 1 and "closed by take_profit" in exits[0], exits


async def test_close_while_away_books_the_funding_paid_before_the_close(db_url, sim, client) -> None:
    trade, stop_row = await open_trade(client, qty="20")
    trade.opened_at = datetime.fromtimestamp((sim.server_time_ms() - 60_000) / 1000, UTC)
    await trade.save()
    sim.engine.apply_funding(sim.server_time_ms())  # settled while the bot was down, before the stop fired
    paid = sum((r.amount for r in sim.engine.account.income if r.income_type == "FUNDING_FEE"), Decimal(0))
    assert paid != 0
    await sim.advance(to_ms=sim.server_time_ms() + 60_000)
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    await _close_while_away(client, trade, Decimal(20), intent=OrderIntent.STOP_LOSS, status=OrderStatus.FILLED)

    worker, rec, sent = _worker_reconciler(client)
    report = await rec.run("start")
    assert report.ok and len(report.trades_closed) == 1, report.summary()
    await trade.refresh_from_db()
    assert trade.state is TradeState.CLOSED and trade.funding == paid, (trade.funding, paid)
    # the restart after it books nothing twice: the payment is noted as booked
    again = await rec.run("start")
    assert again.ok
    await trade.refresh_from_db()
    assert trade.funding == paid


async def test_a_stop_that_fires_while_a_trailing_step_replaces_it_is_booked_at_once(db_url: str) -> None:
    """A trailing step places the new stop, then cancels the old one. The old one fired on the exchange in between
    (BingX answers the cancel with 80018, order already filled) and its report is late: the broker looks the order up
    and books the close at once. Before, it logged the failed cancel and waited for the report, so the next order
    for the trade (a stop, an exit) met "no position to close", found no closing order among the current ones and
    halted entries."""
    from engine.execution.runtime import TradingRuntime
    from engine.trading.manager import StopMove
    from tests.execution_sim import app_config, hold_account_reports, open_live_trade, options, simulator, window

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    hold = [False]
    late_reports, publish = hold_account_reports(sim, lambda payload: hold[0])
    runtime = TradingRuntime(app_config("live", sim, db_url), clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        broker = runtime.broker
        assert broker is not None
        await open_live_trade(sim, runtime, start_ms)
        [ctx] = broker.active_trades
        old_stop = ctx.stop
        assert old_stop is not None and ctx.stop_level is not None
        venue_cancel = broker.venue.cancel

        async def cancel_after_it_fired(symbol: str, exchange_order_id: str) -> Any:
            if exchange_order_id == old_stop.exchange_order_id:
                hold[0] = True  # the account stream's report of the fill comes late
                sim.engine._trigger(sim.engine.orders[int(exchange_order_id)], sim.engine.markets[symbol])
            return await venue_cancel(symbol, exchange_order_id)

        broker.venue.cancel = cancel_after_it_fired  # type: ignore[method-assign]
        price = broker.last_price[ctx.symbol]
        halfway = float(ctx.stop_level) + (price - float(ctx.stop_level)) / 2  # favourable on either side
        further = float(ctx.stop_level) + (price - float(ctx.stop_level)) * 0.6
        broker.move_stop(ctx.symbol, ctx.position, StopMove(halfway, 1.0, 0.5), sim.server_time_ms())
        # the next step follows at once, well inside the order poll's interval (the safety net that would find the fill)
        broker.move_stop(ctx.symbol, ctx.position, StopMove(further, 1.2, 0.6), sim.server_time_ms())
        for _ in range(100):
            await runtime.wait_idle()
            if await Trade.filter(mode="live", state=TradeState.CLOSED).count() == 1:
                break
            await asyncio.sleep(0.05)
        assert late_reports, "the fill report was not held back: no test"
        trade = await Trade.get(mode="live")
        assert trade.state is TradeState.CLOSED, trade.state  # booked from the lookup, before any report
        assert broker.halted_reason is None
        hold[0] = False
        for payload in late_reports:  # the late reports change nothing
            publish(payload)
        for _ in range(40):
            await runtime.wait_idle()
            if not sim.engine.open_orders[ctx.symbol]:
                break
            await asyncio.sleep(0.05)
        assert not sim.engine.open_orders[ctx.symbol]  # the new stop and the target went with the position
        position = sim.engine.account.position(ctx.symbol, ctx.side)
        assert position is None or position.amount == 0
        assert broker.halted_reason is None and (await Trade.get(mode="live")).state is TradeState.CLOSED
    finally:
        await runtime.stop()
        await sim.stop()
