"""Shared helpers of the execution tests: a stepped simulator replay and the DB-vs-exchange checks."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from bot.config import AppConfig
from db.models import Fill, Order, Trade, TradeState
from engine.execution.runtime import RuntimeOptions, TradingRuntime
from engine.market.candle import ONE_MINUTE_MS, Candle, read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer
from engine.simulator.audit import stop_gaps

MARKET_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "market"
SYMBOL = "XRP-USDT"
API_KEY = "exec-test-key"
API_SECRET = "exec-test-secret"
WARMUP = 1000  # candles the bot loads at start (RSI/ATR converge long before)

_CACHE: dict[str, list[Candle]] = {}


def xrp_candles() -> list[Candle]:
    """XRP/USDT 1m (real data); the backtester takes trades at minutes 2640, 2792 and 3162 of it."""
    if "xrp" not in _CACHE:
        _CACHE["xrp"] = read_candles_csv(MARKET_DATA / "XRP_USDT-1m.csv.gz")
    return _CACHE["xrp"]


def window(first_replayed: int, last_replayed: int) -> tuple[list[Candle], int]:
    """Candles from ``WARMUP`` before ``first_replayed`` to ``last_replayed`` (indices in the file); the replay start."""
    candles = xrp_candles()
    data = candles[first_replayed - WARMUP : last_replayed + 2]
    return data, candles[first_replayed].open_time_ms


def simulator(data: list[Candle], start_ms: int, **kwargs: Any) -> SimulatorServer:
    """A paused simulator whose replay starts at ``start_ms``, with ``WARMUP`` candles of history."""
    return SimulatorServer([MarketSpec(SYMBOL, data)], api_key=API_KEY, api_secret=API_SECRET, paused=True, start_ms=start_ms,
                           warmup_minutes=WARMUP, rate_limit_scale=0, **kwargs)


def app_config(mode: str, sim: SimulatorServer, db_url: str, **exchange: Any) -> AppConfig:
    """The bot's configuration against the simulator."""
    return AppConfig.model_validate({
        "mode": mode,
        "symbols": [SYMBOL],
        "exchange": {"rest_url": sim.rest_url, "ws_url": sim.ws_url, "api_key": API_KEY, "api_secret": API_SECRET,
                     "request_timeout_s": 1.0, **exchange},
        "database": {"url": db_url},
    })


def options(**kwargs: Any) -> RuntimeOptions:
    """Test timings: the feed clock is ticked by the test, polls are fast."""
    base = dict(clock_interval_s=3600.0, warmup_candles=WARMUP, fast_poll_s=0.2, slow_poll_s=0.5, fill_grace_s=1.0,
                exit_grace_s=1.0, settle_timeout_s=5.0)
    base.update(kwargs)
    return RuntimeOptions(**base)


async def wait_for(predicate: Any, timeout_s: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


async def subscribed(sim: SimulatorServer) -> None:
    """Until a live connection of the exchange carries both market topics (connected is not yet subscribed: trades
    replayed before the exchange has the subscription never reach the bot)."""
    await wait_for(lambda: any(len(c.topics) == 2 and not c.closed for c in sim.hub.connections), timeout_s=15.0,
                   what="the subscriptions")


async def step_minutes(sim: SimulatorServer, runtime: TradingRuntime, start_ms: int, minutes: int, *, into_next_ms: int = 5_000,
                       on_step: Any = None) -> None:
    """Replay ``minutes`` candles one at a time; after each, let the bot see it close and act on it."""
    market = sim.markets[SYMBOL]
    sym = runtime.symbols[SYMBOL]
    for i in range(minutes):
        await sim.advance(to_ms=start_ms + (i + 1) * ONE_MINUTE_MS + into_next_ms)
        await wait_for(lambda: sym.last_trade_ms >= market.last_trade_ms, what="the trades of the minute")
        await runtime.tick_clock()
        await runtime.wait_idle(timeout_s=15.0)
        if on_step is not None:
            on_step(i)


async def open_live_trade(sim: SimulatorServer, runtime: TradingRuntime, start_ms: int) -> int:
    """Step the replay until the bot holds an open trade; the minutes stepped."""
    minutes = 0
    while await Trade.filter(mode="live", state=TradeState.OPEN).count() == 0:
        assert minutes < 40, "no trade opened"
        await step_minutes(sim, runtime, start_ms + minutes * 60_000, 1)
        minutes += 1
    await runtime.wait_idle()
    return minutes


def hold_account_reports(sim: SimulatorServer, holds: Callable[[dict[str, Any]], bool]
                         ) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], None]]:
    """Keep back the account-stream reports ``holds`` picks: they reach the bot only when the test publishes them.

    Returns the held reports and the simulator's own publish.
    """
    publish = sim.hub.publish_account
    held: list[dict[str, Any]] = []

    def filtered(payload: dict[str, Any]) -> None:
        if holds(payload):
            held.append(payload)
            return
        publish(payload)

    sim.hub.publish_account = filtered  # type: ignore[method-assign]
    return held, publish


def is_funding_report(payload: dict[str, Any]) -> bool:
    """An account-stream report of a funding payment (BingX ``ACCOUNT_UPDATE`` with reason ``FUNDING_FEE``)."""
    return payload.get("e") == "ACCOUNT_UPDATE" and (payload.get("a") or {}).get("m") == "FUNDING_FEE"


def funding_paid(sim: SimulatorServer) -> Decimal:
    """Every funding payment of the simulator's account so far (negative = paid)."""
    return sum((r.amount for r in sim.engine.account.income if r.income_type == "FUNDING_FEE"), Decimal(0))


def settle_funding(sim: SimulatorServer) -> Decimal:
    """Settle funding now on the simulator; every funding payment of the account so far (negative = paid)."""
    sim.engine.apply_funding(sim.server_time_ms())
    return funding_paid(sim)


def dec(text: Any) -> Decimal:
    """A simulator number as Decimal."""
    return Decimal(str(text))


_STATUS = {"FILLED": "filled", "CANCELLED": "cancelled", "CANCELED": "cancelled", "NEW": "new", "PENDING": "new",
           "PARTIALLY_FILLED": "partially_filled", "EXPIRED": "expired"}


async def assert_db_matches_exchange(state: dict[str, Any], initial_balance: Decimal) -> dict[str, Any]:
    """The simulator's own record (orders, fills, positions, wallet) and the bot's database agree exactly."""
    db_orders = {o.exchange_order_id: o for o in await Order.filter(mode="live") if o.exchange_order_id}
    sim_orders = {str(o["orderId"]): o for o in state["orders"]}
    assert set(db_orders) == set(sim_orders), (set(db_orders) ^ set(sim_orders))
    for oid, so in sim_orders.items():
        do = db_orders[oid]
        assert do.status.value == _STATUS[so["status"]], (oid, do.status, so["status"], do.intent)
        assert do.filled_qty == dec(so["executedQty"]), (oid, do.filled_qty, so["executedQty"])
        assert do.side == so["side"] and do.position_side == so["positionSide"] and do.order_type == so["type"], oid
        if so["clientOrderId"]:
            assert do.client_order_id == so["clientOrderId"]
    never_sent = [o for o in await Order.filter(mode="live") if not o.exchange_order_id]
    assert all(o.status.value == "rejected" for o in never_sent), [(o.client_order_id, o.status) for o in never_sent]

    db_fills = sorted((f.order.exchange_order_id, f.price, f.qty, f.fee, f.realized_pnl)
                      for f in await Fill.all().prefetch_related("order"))
    sim_fills = sorted((str(f["orderId"]), dec(f["price"]), dec(f["qty"]), -dec(f["commission"]), dec(f["realizedPnl"]))
                       for f in state["fills"])
    assert db_fills == sim_fills

    open_trades = await Trade.filter(mode="live", state__not=TradeState.CLOSED)
    db_positions = {}
    for trade in open_trades:
        db_positions[(trade.symbol, trade.side)] = db_positions.get((trade.symbol, trade.side), Decimal(0)) + trade.qty
    sim_positions = {(p["symbol"], p["positionSide"]): dec(p["positionAmt"]) for p in state["positions"] if dec(p["positionAmt"]) != 0}
    assert {k: v for k, v in db_positions.items() if v} == sim_positions

    trades = await Trade.filter(mode="live")
    realized = sum((f[4] for f in db_fills), Decimal(0))
    fees = sum((f[3] for f in db_fills), Decimal(0))
    funding = sum((t.funding for t in trades), Decimal(0))
    assert initial_balance + realized - fees + funding == dec(state["account"]["wallet"])
    return {"orders": len(sim_orders), "fills": len(sim_fills), "trades": len(trades)}


def assert_stop_always_on_exchange(state: dict[str, Any]) -> int:
    """Every moment a position was open after its entry filled, a stop order of its side was working (simulator's view)."""
    spans, gaps = stop_gaps(state)
    assert gaps == [], gaps
    return spans