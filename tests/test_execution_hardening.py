"""Execution hardening: manager restore, the broker's read-only view, the entry fee of an entry filled while
the bot was down, one order-rate count per approved entry, a quiet normal shutdown, a gate or an intent
write that fails."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from db.kv import kv_get
from tortoise import connections

from db.models import Fill, Order, OrderIntent, Signal, SignalFate, Trade, TradeState
from engine.execution.broker import GateDecision, TradeView
from engine.execution.runtime import TradingRuntime
from engine.trading.manager import ExitIntent, StopMove, TradeManager
from engine.trading.plan import TradePlan
from strategies.base import Side
from strategies.params import TradeManagementParams
from tests.execution_sim import (
    SYMBOL,
    app_config,
    options,
    simulator,
    step_minutes,
    window,
)

pytestmark = pytest.mark.timeout(120)

STEP = Decimal("0.001")


async def _replay_until(sim: Any, runtime: TradingRuntime, start_ms: int, minutes: int, done: Callable[[], bool]) -> int:
    """Replay minute by minute from ``minutes`` until ``done()`` or the window's end; returns the minutes replayed."""
    while not done() and minutes < 220:
        await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
        minutes += 1
    await runtime.wait_idle()
    return minutes


def _entry_orders(sim: Any) -> list[dict[str, Any]]:
    """The entry orders the simulator received (client order ids ``en...``)."""
    return [o for o in sim.state()["orders"] if str(o.get("clientOrderId") or o.get("client_order_id") or "").startswith("en")]


# -- 1. TradeManager.restore -----------------------------------------------------------------------


def test_restored_manager_carries_on_from_the_stored_state() -> None:
    # LONG 100, 1R = 3: partial 2R at 106 (30 %), trailing step 3R at 109 -> stop 103, target 112 (4R)
    plan = TradePlan.from_entry(Side.LONG, 100.0, 1.0, 3.0, 12.0, TradeManagementParams())
    manager = TradeManager.restore(plan, Decimal(10), qty_step=STEP, min_qty=STEP, remaining=Decimal(7),
                                   partials_done=1, stop=103.0, trailed=True)
    assert (manager.remaining, manager.stop, manager.trailed, manager.closed) == (Decimal(7), 103.0, True, False)
    # the 2R partial and the 3R trailing step are done: a range through both fires neither again
    assert manager.on_range(104.0, 110.0) == []
    actions = manager.on_range(102.0, 104.0)  # the trailed stop (103) is the one in effect
    assert [(a.label, a.qty, a.price) for a in actions if isinstance(a, ExitIntent)] == [("trailing_stop", Decimal(7), 103.0)]


def test_restored_manager_before_any_step_fires_the_remaining_levels() -> None:
    plan = TradePlan.from_entry(Side.LONG, 100.0, 1.0, 3.0, 12.0, TradeManagementParams())
    manager = TradeManager.restore(plan, Decimal(10), qty_step=STEP, min_qty=STEP, remaining=Decimal(10),
                                   partials_done=0, stop=97.0, trailed=False)
    actions = manager.on_range(100.0, 109.5)
    assert [a.label for a in actions if isinstance(a, ExitIntent)] == ["partial_2R"]
    assert [a.new_stop for a in actions if isinstance(a, StopMove)] == [103.0]
    with pytest.raises(ValueError):
        TradeManager.restore(plan, Decimal(10), qty_step=STEP, min_qty=STEP, remaining=Decimal(11), partials_done=0,
                             stop=97.0, trailed=False)
    with pytest.raises(ValueError):
        TradeManager.restore(plan, Decimal(10), qty_step=STEP, min_qty=STEP, remaining=Decimal(5), partials_done=2,
                             stop=97.0, trailed=False)


# -- 3. the entry fee of an entry that filled while the bot was down -------------------------------


async def test_restart_books_the_real_fee_of_an_entry_filled_while_down(db_url: str) -> None:
    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
    try:
        await runtime.start()
        minutes = 0
        while await Trade.filter(mode="live", state=TradeState.OPEN).count() == 0 and minutes < 40:
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
    finally:
        await runtime.stop()
    try:
        trade = await Trade.get(mode="live", state=TradeState.OPEN)
        entry = await Order.get(trade_id=trade.id, intent=OrderIntent.ENTRY)
        real_fee = sum((f.fee for f in await Fill.filter(order_id=entry.id)), Decimal(0))
        assert real_fee > 0
        # the state a crash leaves when the fill was never processed and reconciliation then set the order's
        # totals from the exchange: the trade still PENDING, the entry FILLED, no fill rows
        await Fill.filter(order_id=entry.id).delete()
        trade.state, trade.entry_price, trade.opened_at = TradeState.PENDING, None, None
        await trade.save()

        runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, options=options())
        try:
            await runtime.start()
            assert runtime.recovery is not None
            assert any("entry filled while away" in line for line in runtime.recovery.restored), runtime.recovery.summary()
            fills = await Fill.filter(order_id=entry.id)
            assert sum((f.fee for f in fills), Decimal(0)) == real_fee
            assert sum((f.qty for f in fills), Decimal(0)) == entry.filled_qty
            position = next(iter(runtime.symbols[SYMBOL].engine.positions.values()))
            assert position.entry is not None and position.entry.fee == pytest.approx(float(real_fee))
            assert (await Trade.get(id=trade.id)).state is TradeState.OPEN
        finally:
            await runtime.stop()
    finally:
        await sim.stop()


# -- 2, 4, 5. paper runtime: approval counts once, the public view, a quiet shutdown ---------------


async def test_approved_entry_counts_once_view_is_read_only_and_shutdown_is_info(db_url: str, caplog: Any) -> None:
    from bot.worker import Worker
    from engine.risk.hooks import entry_gate
    from engine.risk.manager import RiskManager

    data, start_ms = window(2620, 2680)
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("paper", sim, db_url, api_key="", api_secret="")
    risk = RiskManager(config)
    asked: list[Any] = []

    class ApproveAtOnce:
        active = True

        async def __call__(self, request: Any, signal_row: Any) -> GateDecision:
            asked.append(request)
            return GateDecision(True)

    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, pre_trade_gate=entry_gate(risk), options=options())
    runtime.entry_approval = ApproveAtOnce()
    stopped = False
    try:
        await runtime.start()
        assert runtime.broker is not None
        assert set(runtime.tasks()) >= {f"candles-{SYMBOL}", "execution-broker", "feed-clock"}
        minutes = 0
        while not runtime.broker.open_trades() and minutes < 40:
            await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
            minutes += 1
        assert len(asked) == 1, "the entry was not approved exactly once"
        # one approved entry = one order toward the cap (the gate ran before the approval and re-checked after it)
        await risk.flush()  # the count is written behind the order
        assert len(await kv_get(f"{RiskManager.RATE_KEY}.paper", [])) == 1

        views = runtime.broker.open_trades()
        assert len(views) == 1 and isinstance(views[0], TradeView)
        view = views[0]
        trade = await Trade.get(mode="paper", state=TradeState.OPEN)
        assert (view.db_id, view.position_id, view.symbol, view.side) == (trade.id, str(trade.id), SYMBOL, trade.side)
        assert view.qty == trade.qty and view.entry_price == trade.entry_price and view.strategy == trade.strategy
        assert view.stop is not None and view.target is not None and view.risk_per_unit is not None
        assert abs(view.risk_per_unit - trade.risk_per_unit) < Decimal("1e-9")  # the DB column is rounded
        with pytest.raises(dataclasses.FrozenInstanceError):
            view.qty = Decimal(0)  # type: ignore[misc]

        # a normal stop halts entries at INFO: no ERROR line for it
        worker = Worker(config)
        worker.runtime = runtime
        caplog.set_level(logging.INFO)
        await worker._stop_trading()
        stopped = True
        halts = [r for r in caplog.records if "entries halted: shutting down" in r.getMessage()]
        assert halts and all(r.levelno == logging.INFO for r in halts)
    finally:
        if not stopped:
            await runtime.stop()
        await sim.stop()


# -- 6. a gate that fails: no order, and the symbol stays tradable -------------------------------------------


async def test_a_failing_gate_sends_nothing_and_blocks_nothing(db_url: str) -> None:
    data, start_ms = window(2620, 2840)  # the XRP window with a long, then a short
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    calls: list[str] = []

    async def gate(request: Any) -> GateDecision:
        calls.append(request.strategy)
        if len(calls) == 1:
            raise RuntimeError("risk store unreadable")
        return GateDecision(True)

    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, pre_trade_gate=gate, options=options())
    try:
        await runtime.start()
        assert runtime.broker is not None
        minutes = await _replay_until(sim, runtime, start_ms, 0, lambda: bool(calls))
        # the refused entry is over for the engine and the broker: nothing pending holds its symbol and side
        assert not runtime.broker.active_trades and not runtime.symbols[SYMBOL].engine.positions
        await _replay_until(sim, runtime, start_ms, minutes, lambda: len(calls) >= 2)
        entries = _entry_orders(sim)
        assert len(calls) == 2, "the entry after a failed gate call was never tried"
        assert len(entries) == 1  # the refused one sent nothing; the next one went out
        refused = await Trade.filter(mode="live").count()
        assert refused == 1  # no trade row for the refused entry (nothing was stored before the gate said no)
    finally:
        await runtime.stop()
        await sim.stop()


# -- 7. the order intent cannot be stored: nothing is sent, nothing is half-written, the user is told ------------

_FAIL_ORDER_INSERTS = {
    # the orders insert is the third statement of the entry's transaction: the signal and the trade rows before
    # it must go too
    "sqlite": ["CREATE TRIGGER fail_orders BEFORE INSERT ON orders BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"],
    "asyncpg": ["CREATE FUNCTION fail_orders() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk I/O error'; END $$ "
                "LANGUAGE plpgsql",
                "CREATE TRIGGER fail_orders BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION fail_orders()"],
}
_HEAL_ORDER_INSERTS = {
    "sqlite": ["DROP TRIGGER fail_orders"],
    "asyncpg": ["DROP TRIGGER fail_orders ON orders", "DROP FUNCTION fail_orders()"],
}


async def test_an_intent_that_cannot_be_stored_is_not_sent(db_url: str) -> None:
    data, start_ms = window(2620, 2840)  # the XRP window with a long, then a short
    sim = simulator(data, start_ms)
    await sim.start()
    config = app_config("live", sim, db_url)
    alerts: list[tuple[str, str]] = []
    calls: list[str] = []

    async def on_alert(event_type: str, text: str, payload: dict[str, Any]) -> None:
        alerts.append((event_type, text))

    async def gate(request: Any) -> GateDecision:
        # runs right before the entry's commit: the first one meets a database that refuses the order row
        calls.append(request.strategy)
        conn = connections.get(Order._meta.default_connection)
        backend = "sqlite" if "sqlite" in type(conn).__module__ else "asyncpg"
        for sql in (_FAIL_ORDER_INSERTS if len(calls) == 1 else _HEAL_ORDER_INSERTS if len(calls) == 2 else {backend: []})[backend]:
            await conn.execute_script(sql)
        return GateDecision(True)

    runtime = TradingRuntime(config, clock_ms=sim.server_time_ms, pre_trade_gate=gate, options=options(), on_alert=on_alert)
    try:
        await runtime.start()
        assert runtime.broker is not None
        minutes = await _replay_until(sim, runtime, start_ms, 0, lambda: bool(calls))
        assert calls and not _entry_orders(sim), "an entry whose intent was not stored reached the exchange"
        # all or nothing: the signal and the trade written before the failing order row are gone with it
        assert await Order.filter(mode="live").count() == 0
        assert await Trade.filter(mode="live").count() == 0
        assert await Signal.filter(mode="live", fate=SignalFate.TAKEN).count() == 0
        refused = await Signal.filter(mode="live", fate=SignalFate.REJECTED).values_list("reason", flat=True)
        assert len(refused) == 1 and "could not store the order intent" in refused[0]  # stored afterwards, on its own
        errors = [text for kind, text in alerts if kind == "error"]
        assert any("could not store the order intent" in text and "not opened" in text for text in errors), alerts
        # the dropped entry holds nothing: the next signal trades
        assert not runtime.broker.active_trades and not runtime.symbols[SYMBOL].engine.positions
        await _replay_until(sim, runtime, start_ms, minutes, lambda: len(calls) >= 2)
        assert len(calls) == 2 and len(_entry_orders(sim)) == 1
        assert await Trade.filter(mode="live").count() == 1
    finally:
        await runtime.stop()
        await sim.stop()
