"""Review 2 of the chat-ops controls: the emergency stop is never cut short by the chat's timeout
(C1), /resume clears the execution halt only when its cause is resolved (C2), /stop works while
the trading side is not up (C3), /status, /pause and /stop keep working with the database down
(C10), and a one-way position is closed whatever the sign of its amount (B5).

The exchange is the local BingX simulator over real sockets; the commands go through the real
dispatcher and :class:`bot.chatops.WorkerTradingPorts`, over a worker stand-in holding what the
real worker holds (config, risk manager, runtime or none, alert hub, health).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

import commands.registry
from bot.chatops import WorkerTradingPorts
from bot.config import AppConfig
from bot.health import HealthState
from commands import build_dispatcher
from commands.model import Caller, Reply
from db.database import close_db
from db.models import Order, OrderIntent, OrderStatus, Trade, TradeState, TradingStateRecord
from engine.exchange.bingx import OrderRequest, new_client_order_id
from engine.execution.broker import ExecutionBroker
from engine.execution.paper_venue import PaperVenue
from engine.risk.emergency import emergency_stop
from engine.risk.manager import RiskManager
from engine.risk.state import TradingState
from tests.chatops_fixtures import ADMIN, CHAT, TOKEN, USER
from tests.risk_sim import KEY, SECRET, SYM, client_for, open_trade, sim_state, start_sim

pytestmark = pytest.mark.timeout(60)


class Alerts:
    """The worker's alert hub as chat-ops uses it: ``risk`` (engine events) and ``publish``."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.published: list[str] = []

    async def risk(self, event: Any) -> None:
        self.events.append(event)

    async def publish(self, event_type: str, text: str, payload: dict[str, Any]) -> None:
        self.published.append(text)

    def titles(self) -> list[str]:
        return [e.title for e in self.events] + self.published


def live_config(sim: Any) -> AppConfig:
    return AppConfig.model_validate({
        "mode": "live", "symbols": [SYM],
        "exchange": {"rest_url": sim.rest_url, "api_key": KEY, "api_secret": SECRET, "request_timeout_s": 5},
        "telegram": {"enabled": True, "token": TOKEN, "chat_id": CHAT, "authorized_users": [USER],
                     "admin_users": [ADMIN]},
    })


def worker_for(config: AppConfig, alerts: Alerts, *, runtime: Any = None, risk: Any = None) -> Any:
    """What :class:`WorkerTradingPorts` reads of ``bot.worker.Worker``."""
    return SimpleNamespace(config=config, mode=config.mode.value, runtime=runtime, risk=risk, alerts=alerts,
                           health=HealthState(stale_feed_s=120), started_at=time.monotonic())


def runtime_with(rest: Any = None, broker: Any = None) -> Any:
    return SimpleNamespace(rest=rest, broker=broker, account_stream_connected=True, tasks=lambda: {})


ME = Caller("telegram", ADMIN, CHAT, "admin")


async def confirmed_stop(dispatcher: Any) -> Reply:
    """/stop, then its Confirm button, as the admin presses them."""
    ask = await dispatcher.dispatch(ME, "stop", [])
    confirm = next(b.data for row in ask.buttons for b in row if b.data.startswith("k:"))
    result = await dispatcher.press(ME, confirm)
    assert result is not None and result.reply is not None
    return result.reply


def text_of(reply: Reply) -> str:
    return "\n".join([reply.title, reply.text, *(f"{k}: {v}" for k, v in reply.fields)])


async def until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def account_flat(sim: Any) -> bool:
    state = await sim_state(sim)
    return state["positions"] == [] and state["open_order_ids"] == []


@pytest.fixture
async def sim() -> Any:
    server = await start_sim()
    yield server
    await server.stop()


# -- C1: the chat's patience never cancels the emergency stop ---------------------------------------


async def test_slow_exchange_stop_runs_to_the_end_and_reports_by_alert(db_url: str, sim: Any, monkeypatch) -> None:
    monkeypatch.setattr(commands.registry, "PORT_TIMEOUT_S", 0.3)  # the chat stops waiting long before the stop ends
    config, alerts = live_config(sim), Alerts()
    async with client_for(sim) as client:
        await open_trade(client, side="LONG", qty="100")
        sim.faults.latency_ms = 250  # every REST answer is slow
        worker = worker_for(config, alerts, runtime=runtime_with(rest=client), risk=RiskManager(config))
        ports = WorkerTradingPorts(worker)
        dispatcher = build_dispatcher(config, ports, ports)
        reply = await confirmed_stop(dispatcher)
        assert reply.title == "/stop is still running", text_of(reply)
        assert "NOT cancelled" in reply.text and "alert" in reply.text
        again = await confirmed_stop(dispatcher)  # a second press does not race the first on the exchange
        assert again.title == "/stop is already running", text_of(again)
        # it goes on after the reply: the account ends flat and the final report arrives as an alert
        await until(lambda: account_flat(sim), 20, "the account flat")
        await until(lambda: any("account flat" in t for t in alerts.titles()), 10, "the final alert")
    assert any(t == "EMERGENCY STOP done: account flat" for t in alerts.titles()), alerts.titles()


# -- C3: /stop while the trading side is not up ------------------------------------------------------


async def test_stop_without_a_runtime_halts_first_and_flattens_with_its_own_client(db_url: str, sim: Any) -> None:
    config, alerts = live_config(sim), Alerts()
    async with client_for(sim) as client:
        await open_trade(client, side="SHORT", qty="100")
    risk = RiskManager(config)  # the worker made it; start-up reconciliation keeps failing: no runtime yet
    ports = WorkerTradingPorts(worker_for(config, alerts, runtime=None, risk=risk))
    reply = await confirmed_stop(build_dispatcher(config, ports, ports))
    assert reply.title == "Emergency stop done: flat", text_of(reply)
    assert await account_flat(sim)
    newest = await TradingStateRecord.all().order_by("-id").first()
    assert newest is not None and newest.state == "HALTED"
    # when the runtime starts later (same risk manager, or a restarted process) entries stay refused
    assert not await risk.entries_allowed()
    assert not await RiskManager(config).entries_allowed()
    assert "EMERGENCY STOP done: account flat" in alerts.titles()


# -- C2: /resume and the execution halt ----------------------------------------------------------------


def paper_broker() -> ExecutionBroker:
    venue = PaperVenue(starting_balance=Decimal(1000), slippage_bps=0, taker_fee=0.0005, price_ticks={}, qty_steps={})
    return ExecutionBroker(venue)


async def test_resume_refuses_while_an_order_state_is_unknown_then_clears_the_broker_halt(db_url: str, sim: Any) -> None:
    config, alerts = live_config(sim), Alerts()
    broker, risk = paper_broker(), RiskManager(config)
    ports = WorkerTradingPorts(worker_for(config, alerts, runtime=runtime_with(broker=broker), risk=risk))
    dispatcher = build_dispatcher(config, ports, ports)
    order = await Order.create(client_order_id="en-lost-1", mode="live", symbol=SYM, intent=OrderIntent.ENTRY, side="BUY",
                               position_side="LONG", order_type="MARKET", quantity=Decimal(10), status=OrderStatus.UNKNOWN)
    broker.halt("order en-lost-1 on NANO-USDT has an unknown state")
    await risk.pause("telegram:111", "checking")

    refused = await dispatcher.dispatch(ME, "resume", [])
    assert refused.title == "Not resumed: entries stay halted", text_of(refused)
    assert "en-lost-1" in refused.text and "unknown state" in refused.text
    assert broker.halted_reason is not None
    assert (await risk.state.current()).state is TradingState.PAUSED  # nothing changed

    order.status = OrderStatus.EXPIRED  # the order tracker resolved it (confirmed absent)
    await order.save()
    resumed = await dispatcher.dispatch(ME, "resume", [])
    assert resumed.title == "Resumed: entries allowed", text_of(resumed)
    assert broker.halted_reason is None
    assert await risk.entries_allowed()


async def test_resume_after_an_emergency_stop_allows_entries_again(db_url: str, sim: Any) -> None:
    """The live /stop stands the broker down; resuming must lift that too, or entries are refused until a restart."""
    config, alerts = live_config(sim), Alerts()
    broker, risk = paper_broker(), RiskManager(config)
    async with client_for(sim) as client:
        ports = WorkerTradingPorts(worker_for(config, alerts, runtime=runtime_with(rest=client, broker=broker), risk=risk))
        dispatcher = build_dispatcher(config, ports, ports)
        assert (await confirmed_stop(dispatcher)).title == "Emergency stop done: flat"
    assert broker.halted_reason == "emergency stop by telegram:111"
    resumed = await dispatcher.dispatch(ME, "resume", [])
    assert resumed.title == "Resumed: entries allowed", text_of(resumed)
    assert broker.halted_reason is None and await risk.entries_allowed()


async def test_a_halt_that_arrives_while_resume_checks_stays_in_force(db_url: str, sim: Any) -> None:
    """/resume lifts only the halts it checked: one the broker raises during its awaits (a close rejected just
    then) stays, and the reply says so."""
    config, alerts = live_config(sim), Alerts()
    broker, risk = paper_broker(), RiskManager(config)
    broker.halt("supervisor gave up on the funding job")
    real_resume = risk.resume

    async def resume_while_a_close_is_rejected(actor: str) -> Any:
        broker.halt_for_rejected_exit("ex-3", SYM)  # the broker's worker runs during this await
        return await real_resume(actor)

    risk.resume = resume_while_a_close_is_rejected
    ports = WorkerTradingPorts(worker_for(config, alerts, runtime=runtime_with(broker=broker), risk=risk))
    resumed = await build_dispatcher(config, ports, ports).dispatch(ME, "resume", [])
    assert broker.halted_reason == f"exit ex-3 on {SYM} rejected by the exchange"
    assert "new halt" in text_of(resumed), text_of(resumed)


async def test_resume_refuses_while_a_rejected_exit_left_its_position_open(db_url: str, sim: Any) -> None:
    config, alerts = live_config(sim), Alerts()
    broker, risk = paper_broker(), RiskManager(config)
    held = SimpleNamespace(symbol=SYM, position_id="pos-7")
    broker.open_trades = lambda: [held]  # type: ignore[method-assign] - the trade the broker still holds
    broker.halt("supervisor gave up on the funding job")  # an earlier halt: the rejected exit is not the first reason
    broker.halt_for_rejected_exit("ex-9", SYM)
    ports = WorkerTradingPorts(worker_for(config, alerts, runtime=runtime_with(broker=broker), risk=risk))
    refused = await build_dispatcher(config, ports, ports).dispatch(ME, "resume", [])
    assert refused.title == "Not resumed: entries stay halted", text_of(refused)
    assert "ex-9" in refused.text and "pos-7" in refused.text
    assert broker.halted_reason is not None


async def test_resume_refuses_while_a_trade_left_open_in_the_database_is_not_managed(db_url: str, sim: Any) -> None:
    """Restart recovery could not load a trade (its entry's outcome was unknown): entries were halted. Once the order
    tracker settles the entry the order check passes, but nothing manages that trade's position (no trailing,
    no partials, no exit): /resume keeps refusing until a restart has loaded it."""
    config, alerts = live_config(sim), Alerts()
    broker, risk = paper_broker(), RiskManager(config)
    ports = WorkerTradingPorts(worker_for(config, alerts, runtime=runtime_with(broker=broker), risk=risk))
    dispatcher = build_dispatcher(config, ports, ports)
    levels = {"initial_qty": 10, "qty": 0, "initial_stop": 1, "stop": 1, "target": 3, "risk_per_unit": 1}
    trade = await Trade.create(symbol=SYM, strategy="trend", side="LONG", mode="live", **levels)
    await Trade.create(symbol=SYM, strategy="trend", side="LONG", mode="paper", **levels)  # the paper bot's
    broker.halt(f"recovery: trade {trade.id} {SYM} trend LONG: entry order en-1 is SENT")

    refused = await dispatcher.dispatch(ME, "resume", [])
    assert refused.title == "Not resumed: entries stay halted", text_of(refused)
    assert f"trade {trade.id} on {SYM}" in refused.text and "not managed" in refused.text
    assert refused.text.count("not managed") == 1  # the paper bot's trade is not this bot's business

    trade.state, trade.exit_reason = TradeState.CLOSED, "entry_failed"  # a restart's recovery: never filled
    await trade.save()
    resumed = await dispatcher.dispatch(ME, "resume", [])
    assert resumed.title == "Resumed: entries allowed", text_of(resumed)


# -- C10: the database is down ------------------------------------------------------------------------


@pytest.fixture
async def db_down(db_url: str, sim: Any) -> Any:
    """A live stack with a long open, then the database goes away (every query raises)."""
    config, alerts = live_config(sim), Alerts()
    broker, risk = paper_broker(), RiskManager(config)
    async with client_for(sim) as client:
        await open_trade(client, side="LONG", qty="100")
        ports = WorkerTradingPorts(worker_for(config, alerts, runtime=runtime_with(rest=client, broker=broker), risk=risk))
        await close_db()
        yield SimpleNamespace(dispatcher=build_dispatcher(config, ports, ports), risk=risk, broker=broker, sim=sim)


async def test_status_shows_what_it_can_with_the_database_down(db_down: Any) -> None:
    status = await db_down.dispatcher.dispatch(ME, "status", [])
    assert status.title.startswith("Status: LIVE"), text_of(status)
    assert "Last signal: unknown (database unavailable" in text_of(status)
    assert "Open positions: 0" in text_of(status)  # the engine's in-memory part is still shown


async def test_pause_is_in_force_at_once_with_the_database_down_and_says_it_is_not_saved(db_down: Any) -> None:
    paused = await db_down.dispatcher.dispatch(ME, "pause", ["db", "down"])
    assert paused.title == "Paused: no new entries (NOT saved)", text_of(paused)
    assert "in force" in paused.text and "restart would forget" in paused.text
    assert (await db_down.risk.state.current()).state is TradingState.PAUSED  # entries refused without the database
    status = await db_down.dispatcher.dispatch(ME, "status", [])
    assert status.title == "Status: LIVE · PAUSED", text_of(status)
    refused = await db_down.dispatcher.dispatch(ME, "resume", [])  # RUNNING is never applied unsaved
    assert refused.severity == "error" and (await db_down.risk.state.current()).state is TradingState.PAUSED


async def test_stop_flattens_the_account_with_the_database_down(db_down: Any) -> None:
    reply = await confirmed_stop(db_down.dispatcher)
    text = text_of(reply)
    assert reply.title.startswith("Emergency stop done: flat"), text
    assert "Warning: HALTED is in force" in text and "database unavailable" in text
    assert "close order not recorded" in text
    assert await account_flat(db_down.sim)
    assert (await db_down.risk.state.current()).state is TradingState.HALTED
    assert db_down.broker.halted_reason == "emergency stop by telegram:111"


# -- B5: one-way positions under both readings of positionAmt ------------------------------------------


class UnsignedAmounts:
    """The simulator's client, except that one-way amounts come back positive for shorts too.

    Protocol 4.3: whether a one-way short's ``positionAmt`` is negative is UNCONFIRMED; the
    simulator signs it, so this wrapper serves the other reading. Orders still go to the simulator.
    """

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    async def positions(self, symbol: str | None = None) -> list[Any]:
        return [dataclasses.replace(p, position_amt=abs(p.position_amt)) for p in await self.client.positions(symbol)]


async def _one_way_short(client: Any) -> None:
    await client.place_order(OrderRequest(symbol=SYM, side="SELL", position_side="BOTH", type="MARKET",
                                          quantity=Decimal(100), client_order_id=new_client_order_id("os")))


@pytest.mark.parametrize("signed", [True, False], ids=["signed-amount", "positive-amount"])
async def test_one_way_short_is_closed_under_both_sign_readings(signed: bool) -> None:
    sim = await start_sim(hedge_mode=False)
    try:
        async with client_for(sim) as client:
            await _one_way_short(client)
            assert (await sim_state(sim))["positions"], "a one-way short is open"
            report = await emergency_stop(client if signed else UnsignedAmounts(client), mode=None, poll_s=0.05)
        assert report.flat, report.text()
        assert await account_flat(sim)
        assert report.failures == []
        assert any("SHORT" in c for c in report.closed_positions), report.closed_positions
    finally:
        await sim.stop()


async def test_a_halt_whose_write_fails_is_not_lost_to_a_pause_stored_meanwhile(db_url: str, monkeypatch: Any) -> None:
    """A flapping database: the emergency stop's HALTED write hangs and then fails, while a pause is stored in
    between. The pause's success must not clear the halt from memory: the bot stays HALTED, not merely PAUSED."""
    from engine.risk.state import TradingStateStore

    store = TradingStateStore()
    real_create = TradingStateRecord.create
    halted_write_may_fail = asyncio.Event()

    async def flapping_create(**row: Any) -> Any:
        if row["state"] == TradingState.HALTED.value:
            await halted_write_may_fail.wait()
            raise ConnectionError("database unavailable")
        return await real_create(**row)

    monkeypatch.setattr(TradingStateRecord, "create", flapping_create)
    halting = asyncio.create_task(store.set(TradingState.HALTED, "emergency stop by telegram:111", "telegram:111"))
    await until(lambda: store.unsaved is not None, 5, "the halt to be in force in memory")
    await store.set(TradingState.PAUSED, "paused from chat", "telegram:111")  # stored
    halted_write_may_fail.set()
    with pytest.raises(ConnectionError):
        await halting
    assert (await store.current()).state is TradingState.HALTED
