"""`trading-bot run` as a real subprocess against the in-process BingX simulator (live mode, real sockets).

XRP/USDT minutes 2620-2840 (real data): the bot takes a long at about replay minute 22, books a 2R
partial at minute 28 and moves its stop at minute 36. The replay runs at 120x, so the first entry
comes ~10 s after the start.
"""

from __future__ import annotations

import re
import sqlite3
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from engine.exchange.bingx.rest import BingxRestClient
from tests.execution_sim import API_KEY, API_SECRET, SYMBOL, simulator, window
from tests.worker_harness import BotProcess, open_position, wait_until, working_stops, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SPEED = 120.0


def _entries(state: dict) -> list[dict]:
    return [o for o in state["orders"] if o["type"] == "MARKET" and o["side"] == "BUY" and o["positionSide"] == "LONG"]


def _trading(sim: object) -> dict | None:
    """The simulator state once the bot holds a position protected by its own stop."""
    state = sim.state()  # type: ignore[attr-defined]
    working = [o for o in state["orders"] if o["status"] in ("NEW", "PENDING")]
    # settled: the attached SL/TP (no client id) replaced by the bot's own stop and target
    settled = len(working) == 2 and all(o["clientOrderId"] for o in working)
    return state if open_position(state) and _bot_stop_working(state) and settled else None


def _placed_after(sim: object, index: int, prefix: str) -> dict | None:
    """The simulator state once an order with a client id starting ``prefix`` exists after position ``index``."""
    state = sim.state()  # type: ignore[attr-defined]
    return state if any(o["clientOrderId"].startswith(prefix) for o in state["orders"][index:]) else None


def _bot_stop_working(state: dict) -> dict | None:
    """The bot's own (client id) working stop once the attached one has been replaced from the fill price."""
    return next((o for o in working_stops(state, "LONG") if o["clientOrderId"]), None)


async def test_run_trades_survives_socket_drops_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    data, start_ms = window(2620, 2840)
    sim = simulator(data, start_ms)
    await sim.start()
    bot = BotProcess(write_config(tmp_path, sim), tmp_path)
    try:
        bot.start()
        await bot.wait_started()
        sim.set_speed(SPEED)
        sim.resume()

        # it trades: a market entry, then its own stop and target on the exchange
        state = await wait_until(lambda: _trading(sim), 40, "the bot's first position with its stop")
        assert len(_entries(state)) == 1
        orders_before_drop = len(state["orders"])

        # kill every WebSocket (market and account streams)
        mark = len(bot.output())
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{sim.rest_url}/_sim/ws/drop") as resp:
                assert (await resp.json())["dropped"] >= 2
        await bot.wait_for_output("reconnected", 15, after=mark)
        await bot.wait_for_output("reconciliation (stream reconnect)", 15, after=mark)

        # trading continues after the reconnect: the bot places its next orders (2R partial, stop move)
        state = await wait_until(lambda: _placed_after(sim, orders_before_drop, "ex"), 40, "an order placed after the reconnect")
        assert len(_entries(state)) == 1, "no duplicate entry after the reconnect"
        status, body = await bot.health()
        assert status == 200, body

        code, elapsed = await bot.terminate()
        assert code == 0, bot.output()[-3000:]
        assert elapsed < 10
        log = bot.output()
        assert "stopped cleanly" in log
        assert "Traceback" not in log
        state = sim.state()
        if open_position(state):  # stops stay on the exchange over a shutdown
            assert working_stops(state, "LONG")
    finally:
        bot.ensure_dead()
        await sim.stop()


async def test_health_goes_unhealthy_when_the_feed_stops_and_recovers(tmp_path: Path) -> None:
    data, start_ms = window(2620, 2840)
    sim = simulator(data, start_ms)
    await sim.start()
    bot = BotProcess(write_config(tmp_path, sim, stale_feed_s=3), tmp_path)
    try:
        bot.start()
        await bot.wait_started()
        sim.set_speed(SPEED)
        sim.resume()
        await wait_until(lambda: True, 0.1, "")
        status, body = await bot.health()
        assert status == 200, body

        sim.pause()  # the replay stands still: no more trades or candles
        unhealthy = None
        for _ in range(100):
            status, body = await bot.health()
            if status != 200:
                unhealthy = body
                break
            await _sleep(0.1)
        assert unhealthy is not None, "health stayed 200 with no market data"
        assert any("no market data" in p for p in unhealthy["problems"]), unhealthy

        sim.resume()
        for _ in range(100):
            status, body = await bot.health()
            if status == 200:
                break
            await _sleep(0.1)
        assert status == 200, body
        assert body["market_data_age_s"] is not None and body["market_data_age_s"] < 3

        code, _ = await bot.terminate()
        assert code == 0
    finally:
        bot.ensure_dead()
        await sim.stop()


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_kill9_mid_trade_then_restart_recovers_without_duplicates_and_replaces_a_deleted_stop(tmp_path: Path) -> None:
    data, start_ms = window(2620, 2840)
    sim = simulator(data, start_ms)
    await sim.start()
    config = write_config(tmp_path, sim)
    bots: list[BotProcess] = []

    async def start_bot(name: str) -> BotProcess:
        bot = BotProcess(config, tmp_path, name)
        bots.append(bot)
        bot.start()
        await bot.wait_started()
        return bot

    try:
        bot = await start_bot("first")
        sim.set_speed(SPEED)
        sim.resume()
        state = await wait_until(lambda: _trading(sim), 40, "the first position with the bot's stop")
        sim.pause()  # freeze the market mid-trade
        await _sleep(0.5)  # let the bot write what the exchange just acknowledged (a crash in between is reconciliation's job)
        bot.kill9()
        state = sim.state()
        position = open_position(state)
        assert position is not None
        stop = _bot_stop_working(state)
        assert stop is not None
        orders_at_crash = len(state["orders"])

        # 1. restart with everything in place: it finds the position and its stop; no new order at all
        bot = await start_bot("second")
        assert "recovered" in bot.output()
        state = sim.state()
        assert len(state["orders"]) == orders_at_crash, state["orders"][orders_at_crash:]
        assert [o["orderId"] for o in working_stops(state, "LONG")] == [stop["orderId"]]
        status, body = await bot.health()
        assert not body["halted"], body

        # 2. crash again; the stop is deleted on the exchange while the bot is down
        bot.kill9()
        async with BingxRestClient(rest_url=sim.rest_url, api_key=API_KEY, api_secret=API_SECRET) as client:
            await client.cancel_order(SYMBOL, order_id=stop["orderId"])
        assert not working_stops(sim.state(), "LONG")
        bot = await start_bot("third")
        state = sim.state()
        stops = working_stops(state, "LONG")
        assert len(stops) == 1, stops
        assert Decimal(str(stops[0]["origQty"])) == Decimal(str(position["positionAmt"]))
        assert len(_entries(state)) == 1, "no duplicate entry"
        assert open_position(state)["positionAmt"] == position["positionAmt"]

        # 3. it carries on managing the recovered trade: the 2R partial comes from the recovered plan
        orders_now = len(state["orders"])
        sim.resume()
        state = await wait_until(lambda: _placed_after(sim, orders_now, "ex"), 40, "the partial exit of the recovered trade")
        assert len(_entries(state)) == 1
        assert len(working_stops(state, "LONG")) == 1
        code, _ = await bot.terminate()
        assert code == 0, bot.output()[-3000:]
    finally:
        for b in bots:
            b.ensure_dead()
        await sim.stop()

    db = sqlite3.connect(tmp_path / "bot.db")
    try:
        rows = db.execute("select count(*) from trades where mode='live'").fetchone()
        assert rows[0] == 1  # one trade, never re-opened
        exits = [r[0] for r in db.execute("select kind from trade_exits")]
        assert exits and exits[0].startswith("partial")
    finally:
        db.close()


async def test_paper_mode_trades_from_the_feed_and_recovers_after_kill9(tmp_path: Path) -> None:
    data, start_ms = window(2620, 2840)
    sim = simulator(data, start_ms)
    await sim.start()
    config = write_config(tmp_path, sim, mode="paper")
    bots: list[BotProcess] = []
    try:
        bot = BotProcess(config, tmp_path, "paper1")
        bots.append(bot)
        bot.start()
        await bot.wait_started()
        sim.set_speed(SPEED)
        sim.resume()
        await bot.wait_for_output("[PAPER] XRP-USDT multi_timeframe_long LONG opened", 40)
        await bot.wait_for_output(re.compile(r"\[PAPER\] target \S+ placed"), 10)
        sim.pause()
        bot.kill9()
        assert sim.state()["orders"] == [], "paper mode never sends an order to the exchange"

        bot = BotProcess(config, tmp_path, "paper2")
        bots.append(bot)
        bot.start()
        await bot.wait_started()
        assert "recovered XRP-USDT:multi_timeframe_long" in bot.output()
        assert "[PAPER] stop" in bot.output()  # the in-memory paper stop is put back
        sim.resume()
        await bot.wait_for_output("partial_2R", 40)
        code, _ = await bot.terminate()
        assert code == 0, bot.output()[-3000:]
        assert "opened" not in bot.output(), "no second entry after the restart"
    finally:
        for b in bots:
            b.ensure_dead()
        await sim.stop()
    db = sqlite3.connect(tmp_path / "bot.db")
    try:
        assert db.execute("select count(*) from trades where mode='paper'").fetchone()[0] == 1
        assert db.execute("select count(*) from orders where mode='paper' and intent='entry'").fetchone()[0] == 1
    finally:
        db.close()
