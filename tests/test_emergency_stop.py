"""``trading-bot emergency-stop --yes`` against the simulator: with positions and orders open it
leaves the account flat with no open orders (checked through /_sim/state) and says so."""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal
from pathlib import Path


from db.database import close_db, init_db
from db.models import Order, OrderIntent, TradingStateRecord
from engine.exchange.bingx import OrderRequest, new_client_order_id
from engine.risk import cli
from engine.risk.emergency import emergency_stop
from engine.risk.shutdown import cancel_entry_orders, close_bot_positions

from tests.risk_sim import (
    KEY,
    SECRET,
    SYM,
    client_for,
    open_orders_of,
    open_trade,
    sim_state,
)


async def _mess(client, sim) -> None:
    """A long with a stop, a short, and two resting limit orders."""
    price = Decimal((await sim_state(sim))["markets"][SYM]["last_price"])
    await open_trade(client, side="LONG", qty="100")
    await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="SHORT", type="MARKET",
                                          quantity=Decimal(40), client_order_id=new_client_order_id("s")))
    for factor, side, pos in (("0.9", "BUY", "LONG"), ("1.1", "SELL", "SHORT")):
        await client.place_order(OrderRequest(symbol=SYM, side=side, position_side=pos, type="LIMIT",
                                              quantity=Decimal(10), price=(price * Decimal(factor)).quantize(Decimal("0.0001")),
                                              client_order_id=new_client_order_id("l")))
    state = await sim_state(sim)
    assert len(state["positions"]) == 2 and len(state["open_order_ids"]) == 3


def _write_config(tmp_path: Path, sim) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        f"mode: live\nsymbols: [{SYM}]\n"
        f"exchange:\n  rest_url: {sim.rest_url}\n  api_key: {KEY}\n  api_secret: {SECRET}\n"
        f"database:\n  url: sqlite://{tmp_path / 'bot.db'}\n"
        f"logging:\n  file: ''\n", encoding="utf-8")
    return path


async def test_cli_emergency_stop_yes_leaves_the_account_flat(tmp_path: Path, sim, capsys) -> None:
    await init_db(f"sqlite://{tmp_path / 'bot.db'}")
    try:
        async with client_for(sim) as client:
            await _mess(client, sim)
    finally:
        await close_db()
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    args = parser.parse_args(["--config", str(_write_config(tmp_path, sim)), "--yes"])
    code = await asyncio.to_thread(cli.run, args)
    out = capsys.readouterr().out
    state = await sim_state(sim)
    assert state["positions"] == [] and state["open_order_ids"] == []
    assert code == 0
    # The two resting limit orders are cancelled; the long's stop is never cancelled before its close
    # (the exchange drops it with the position it protected).
    assert "account is FLAT with no open orders" in out and "cancelled orders: 2" in out
    assert out.count("closed: NANO-USDT") == 2
    # The running bot (same database) now sees HALTED; the closes were stored before they were sent.
    await init_db(f"sqlite://{tmp_path / 'bot.db'}")
    try:
        newest = await TradingStateRecord.all().order_by("-id").first()
        assert newest.state == "HALTED" and newest.actor == "cli"
        assert await Order.filter(intent=OrderIntent.EMERGENCY_CLOSE).count() == 2
    finally:
        await close_db()


async def test_cli_refuses_without_yes_and_without_a_terminal(tmp_path: Path, sim, monkeypatch) -> None:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    args = parser.parse_args(["--config", str(_write_config(tmp_path, sim))])
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert await asyncio.to_thread(cli.run, args) == 2


async def test_not_flat_is_reported_honestly(sim) -> None:
    """When closing fails, the report says NOT flat and names what is left."""
    async with client_for(sim) as client:
        await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="MARKET",
                                              quantity=Decimal(10), client_order_id=new_client_order_id("p")))
        sim.faults.update({"reject_next_orders": [101400] * 20})
        report = await emergency_stop(client, verify_attempts=2, poll_s=0.01)
    assert not report.flat and report.failures and report.remaining_positions == [f"{SYM} LONG 10.0"]
    assert "NOT flat" in report.text()


async def test_shutdown_cancels_entries_keeps_stops_or_closes(db_url, sim) -> None:
    from bot.config import load_config
    from db.models import OrderStatus

    async with client_for(sim) as client:
        trade, stop_row = await open_trade(client, qty="30")
        price = Decimal((await sim_state(sim))["markets"][SYM]["last_price"])
        cid = new_client_order_id("en")
        placed = await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT",
                                                       quantity=Decimal(10), price=(price * Decimal("0.9")).quantize(Decimal("0.0001")),
                                                       client_order_id=cid))
        await Order.create(client_order_id=cid, exchange_order_id=placed.order_id, mode="live", symbol=SYM,
                           intent=OrderIntent.ENTRY, side="BUY", position_side="LONG", order_type="LIMIT",
                           quantity=10, status=OrderStatus.NEW)
        report = await cancel_entry_orders(client, "live")
        assert len(report.cancelled_entries) == 1
        open_ = open_orders_of(await sim_state(sim))
        assert [o["type"] for o in open_] == ["STOP_MARKET"]  # the stop stays on the exchange
        assert (await Order.get(client_order_id=cid)).status is OrderStatus.CANCELLED
        cfg = load_config(None, env={}, overrides={"mode": "live", "exchange": {"api_key": "k", "api_secret": "s"},
                                                   "symbols": [SYM]})
        closed = await close_bot_positions(client, cfg)
        assert len(closed.closed_positions) == 1
        assert (await sim_state(sim))["positions"] == []


async def test_emergency_closes_are_booked_to_their_trades_so_reconciliation_stays_clean(tmp_path: Path, sim) -> None:
    """After a flat emergency stop the bot's trades close in the DB; the next reconciliation finds nothing amiss."""
    from bot.config import load_config
    from db.models import Trade, TradeState
    from engine.risk.manager import RiskManager
    from engine.risk.reconcile import Reconciler

    await init_db(f"sqlite://{tmp_path / 'bot.db'}")
    try:
        async with client_for(sim) as client:
            long_trade, _ = await open_trade(client, side="LONG", qty="100")
            short_trade, _ = await open_trade(client, side="SHORT", qty="40", strategy="trend_distance_short")
            config = load_config(_write_config(tmp_path, sim), env={})
            risk = RiskManager(config)
            report = await emergency_stop(client, risk=risk, actor="test", mode="live")
            assert report.flat
            emergency_orders = await Order.filter(intent=OrderIntent.EMERGENCY_CLOSE)
            assert sorted(o.trade_id for o in emergency_orders) == sorted([long_trade.id, short_trade.id])

            reconcile = await Reconciler(client, config, risk, mode="live").run("after emergency stop")
            assert reconcile.ok, reconcile.summary()
            for trade in (long_trade, short_trade):
                assert (await Trade.get(id=trade.id)).state is TradeState.CLOSED
    finally:
        await close_db()
