"""The wallet-balance rule of reconciliation, against the simulator over 127.0.0.1 and across
restarts (database closed and re-opened, every object new): booked fills explain the wallet,
a withdrawal nobody reported halts entries, deposits are alerted without halting, and a fill
learned only by reconciliation is booked so the next check still adds up."""

from __future__ import annotations

import asyncio
from decimal import Decimal


from bot.config import load_config
from db.database import close_db, init_db
from db.kv import kv_get
from db.models import Fill, Order, ProtectionLock, Trade, TradeState
from engine.exchange.bingx import BingxRestClient, OrderRequest, new_client_order_id
from engine.exchange.bingx.events import AccountUpdate, BalanceChange
from engine.risk.balance_check import BalanceOutcome, baseline_key, note_account_update
from engine.risk.manager import RiskManager
from engine.risk.reconcile import Reconciler
from engine.risk.state import TradingState
from engine.simulator.accounts import Income

from tests.risk_sim import (
    SYM,
    open_trade,
)
MODE = "live"


def make(client: BingxRestClient, tolerance: float = 1.0, settle_s: float = 0.0):
    """A fresh process's reconciler (new config, risk manager and reconciler objects)."""
    events: list = []
    cfg = load_config(None, env={}, overrides={"mode": "paper", "symbols": [SYM],
                                                "reconciliation": {"balance_tolerance_usdt": tolerance}})
    risk = RiskManager(cfg, alert=events.append)
    return Reconciler(client, cfg, risk, mode=MODE, balance_settle_s=settle_s), risk, events


async def restart(db_url: str) -> None:
    await close_db()
    await init_db(db_url)


async def book_fill(client: BingxRestClient, row: Order) -> Fill:
    """Book an order's execution as the execution layer does (exchange PnL; commission negative = paid)."""
    ex = await client.query_order(SYM, order_id=row.exchange_order_id)
    assert ex is not None and ex.executed_qty > 0
    return await Fill.create(order=row, fill_key=f"{ex.order_id}:{ex.executed_qty}", price=ex.avg_price,
                             qty=ex.executed_qty, fee=-ex.commission, realized_pnl=ex.profit, time_ms=ex.time_ms or 0)


async def transfer(sim, amount: str) -> None:
    """Money moves into or out of the futures wallet on the exchange (the stream is not involved)."""
    sim.account.add_income(Income("", "TRANSFER", Decimal(amount), "transfer", 0, "t1", "t1"))


async def wallet(client: BingxRestClient) -> Decimal:
    return next(b.balance for b in await client.balance() if b.asset == "USDT")


async def test_first_run_keeps_a_baseline_and_booked_trading_explains_the_change_after_restart(db_url, sim, client):
    reconciler, risk, events = make(client, tolerance=0.000001)
    first = await reconciler.run("start")
    assert first.ok and first.balance_check.outcome is BalanceOutcome.BASELINE
    start_wallet = await wallet(client)
    assert Decimal((await kv_get(baseline_key(MODE)))["wallet"]) == start_wallet

    await restart(db_url)
    # Trade round trip, every fill booked in the DB with the exchange's PnL and commission.
    trade, stop_row = await open_trade(client, qty="200")
    entry = await Order.get(trade_id=trade.id, intent="entry")
    await book_fill(client, entry)
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    close_cid = new_client_order_id("cl")
    closed = await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                                   quantity=Decimal(200), client_order_id=close_cid))
    close_row = await Order.create(client_order_id=close_cid, exchange_order_id=closed.order_id, trade=trade,
                                   mode=MODE, symbol=SYM, intent="close", side="SELL", position_side="LONG",
                                   order_type="MARKET", quantity=200, status="filled", filled_qty=200,
                                   avg_price=closed.avg_price)
    await book_fill(client, close_row)
    await Order.filter(id=stop_row.id).update(status="cancelled")
    await Trade.filter(id=trade.id).update(state=TradeState.CLOSED, qty=0)
    assert await wallet(client) != start_wallet  # fees were paid: the wallet did move

    reconciler, risk, events = make(client, tolerance=0.000001)
    report = await reconciler.run("periodic")
    check = report.balance_check
    assert report.ok, report.summary()
    assert check.outcome is BalanceOutcome.OK and check.unexplained == 0
    assert check.wallet - check.previous_wallet == check.booked < 0
    assert (await risk.state.current()).state is TradingState.RUNNING
    assert not any("wallet" in e.title for e in events)


async def test_unreported_withdrawal_halts_entries_across_a_restart(db_url, sim, client):
    reconciler, risk, events = make(client)
    assert (await reconciler.run("start")).ok
    await restart(db_url)
    await transfer(sim, "-250")  # gone from the wallet; nothing in the DB or the stream explains it

    reconciler, risk, events = make(client)
    report = await reconciler.run("start")
    assert not report.ok
    assert report.balance_check.outcome is BalanceOutcome.DROP and report.balance_check.unexplained == Decimal(-250)
    assert any("wallet balance" in u and "unexplained -250" in u for u in report.unexplained)
    info = await risk.state.current()
    assert info.state is TradingState.HALTED
    assert await ProtectionLock.filter(kind="reconciliation", active=True).exists()
    assert not await risk.entries_allowed(SYM, "multi_timeframe_long")
    assert any(e.event_type == "halt" and "unexplained -250" in e.text for e in events)
    # Reported once: the baseline moved on, so the next run is clean (the lock stays for an admin).
    again = await make(client)[0].run("periodic")
    assert again.ok and again.balance_check.outcome is BalanceOutcome.OK


async def test_stream_reported_deposit_and_withdrawal_alert_without_halting(db_url, sim, client):
    reconciler, risk, events = make(client)
    assert (await reconciler.run("start")).ok
    await transfer(sim, "500")
    await note_account_update(AccountUpdate(1, 1, "DEPOSIT", (BalanceChange("USDT", Decimal(0), None, Decimal(500)),), ()),
                              MODE)
    await transfer(sim, "-120")
    await note_account_update(AccountUpdate(2, 2, "WITHDRAW", (BalanceChange("USDT", Decimal(0), None, Decimal(-120)),), ()),
                              MODE)
    # Not transfers: ignored by the ledger.
    assert await note_account_update(AccountUpdate(3, 3, "ORDER", (BalanceChange("USDT", Decimal(0), None, Decimal(-3)),), ()),
                                     MODE) == []
    await restart(db_url)

    reconciler, risk, events = make(client)
    report = await reconciler.run("periodic")
    assert report.ok, report.summary()
    check = report.balance_check
    assert check.outcome is BalanceOutcome.OK and check.transfers == Decimal(380)
    assert check.transfer_notes == ["deposit 500 USDT", "withdraw -120 USDT"]
    assert (await risk.state.current()).state is TradingState.RUNNING
    [alert] = [e for e in events if e.title == "Reconciliation: wallet balance changed"]
    assert alert.event_type == "protection" and "deposit 500" in alert.text and "withdraw -120" in alert.text
    # The next run reports nothing new.
    reconciler, risk, events = make(client)
    assert (await reconciler.run("periodic")).balance_check.transfer_notes == []
    assert not events


async def test_unreported_deposit_is_alerted_not_halted(db_url, sim, client):
    reconciler, risk, events = make(client)
    await reconciler.run("start")
    await transfer(sim, "1000")
    report = await reconciler.run("periodic")
    assert report.ok and report.balance_check.outcome is BalanceOutcome.RISE
    assert (await risk.state.current()).state is TradingState.RUNNING
    assert any(e.event_type == "protection" and "unexplained 1000" in e.text for e in events)


async def test_change_within_tolerance_passes_and_beyond_it_halts(db_url, sim, client):
    reconciler, _risk, _events = make(client, tolerance=5)
    await reconciler.run("start")
    await transfer(sim, "-5")  # exactly the tolerance: fine
    assert (await reconciler.run("periodic")).balance_check.outcome is BalanceOutcome.OK
    await transfer(sim, "-5.01")
    report = await reconciler.run("periodic")
    assert report.balance_check.outcome is BalanceOutcome.DROP and not report.ok


async def test_fill_on_its_way_into_the_db_is_waited_for(db_url, sim, client):
    """A drop beyond the tolerance is read again after the settle pause before it may halt."""
    trade, stop_row = await open_trade(client, qty="100")
    entry = await Order.get(trade_id=trade.id, intent="entry")
    await book_fill(client, entry)
    reconciler, _risk, _events = make(client, tolerance=0.000001, settle_s=0.5)
    assert (await reconciler.run("start")).ok
    # The stop fires on the exchange; the execution layer books it a moment after reconciliation starts.
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    closed = await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                                   quantity=Decimal(100), client_order_id=new_client_order_id("x")))
    await Order.filter(id=stop_row.id).update(client_order_id=closed.client_order_id, exchange_order_id=closed.order_id,
                                              status="filled", filled_qty=100, avg_price=closed.avg_price)
    await Trade.filter(id=trade.id).update(state=TradeState.CLOSED, qty=0)

    async def execution_layer_books_it() -> None:
        await asyncio.sleep(0.1)
        await book_fill(client, await Order.get(id=stop_row.id))

    booking = asyncio.create_task(execution_layer_books_it())
    report = await reconciler.run("periodic")
    await booking
    assert report.ok, report.summary()
    assert report.balance_check.outcome is BalanceOutcome.OK


async def test_fill_learned_by_reconciliation_is_booked_so_the_wallet_adds_up(db_url, sim, client):
    """The stop fills while the bot is down; the restart's reconciliation books that fill (PnL and fee)."""
    trade, stop_row = await open_trade(client, qty="100")
    await book_fill(client, await Order.get(trade_id=trade.id, intent="entry"))
    reconciler, _risk, _events = make(client, tolerance=0.000001)
    assert (await reconciler.run("start")).ok
    await restart(db_url)
    # While away: the stop order is replaced on the exchange by its fill (as in test_reconcile).
    await client.cancel_order(SYM, order_id=stop_row.exchange_order_id)
    closed = await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="MARKET",
                                                   quantity=Decimal(100), client_order_id=new_client_order_id("x")))
    await Order.filter(id=stop_row.id).update(client_order_id=closed.client_order_id, exchange_order_id=closed.order_id)

    reconciler, _risk, _events = make(client, tolerance=0.000001)
    report = await reconciler.run("start")
    assert report.ok, report.summary()
    assert len(report.trades_closed) == 1
    [fill] = await Fill.filter(order_id=stop_row.id)
    ex = await client.query_order(SYM, order_id=closed.order_id)
    assert fill.qty == 100 and fill.fee == -ex.commission > 0 and fill.realized_pnl == ex.profit
    assert report.balance_check.outcome is BalanceOutcome.OK
    # A second lookup of the same order books nothing twice.
    again = await make(client, tolerance=0.000001)[0].run("periodic")
    assert again.ok and await Fill.filter(order_id=stop_row.id).count() == 1
