"""Helpers shared by the reconciliation and emergency-stop tests: a paused simulator on the NANO
candles, the project's BingX client pointed at it, and DB rows written as the execution layer does."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest

from db.models import Order, OrderIntent, OrderStatus, Trade, TradeState
from engine.exchange.bingx import BingxRestClient, OrderRequest, new_client_order_id
from engine.simulator import MarketSpec, SimulatorServer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NANO_FILE = SHARED / "data" / "market" / "NANO_USDT-1m.csv.gz"
SYM = "NANO-USDT"
KEY, SECRET = "risk-key", "risk-secret"


async def start_sim(**kw: Any) -> SimulatorServer:
    sim = SimulatorServer([MarketSpec(SYM, NANO_FILE)], api_key=KEY, api_secret=SECRET, paused=True,
                          rate_limit_scale=10, **kw)
    await sim.start()
    return sim


def client_for(sim: SimulatorServer) -> BingxRestClient:
    return BingxRestClient(rest_url=sim.rest_url, api_key=KEY, api_secret=SECRET, order_lookup_delay_s=0.05)


async def sim_state(sim: SimulatorServer) -> dict[str, Any]:
    """``GET /_sim/state`` over the wire."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{sim.rest_url}/_sim/state") as resp:
            assert resp.status == 200
            return await resp.json(content_type=None)


def open_orders_of(state: dict[str, Any]) -> list[dict[str, Any]]:
    ids = set(state["open_order_ids"])
    return [o for o in state["orders"] if o["orderId"] in ids]


async def open_trade(client: BingxRestClient, *, side: str = "LONG", qty: str = "100", stop_offset: str = "0.5",
                     strategy: str = "multi_timeframe_long", mode: str = "live") -> tuple[Trade, Order]:
    """Enter at market, place the stop as its own order, and write the rows the execution layer writes."""
    entry_cid, stop_cid = new_client_order_id("en"), new_client_order_id("sl")
    buy, sell = ("BUY", "SELL") if side == "LONG" else ("SELL", "BUY")
    filled = await client.place_order(OrderRequest(symbol=SYM, side=buy, position_side=side, type="MARKET",
                                                   quantity=Decimal(qty), client_order_id=entry_cid))
    entry_price = filled.avg_price
    stop = entry_price - Decimal(stop_offset) if side == "LONG" else entry_price + Decimal(stop_offset)
    trade = await Trade.create(symbol=SYM, strategy=strategy, side=side, state=TradeState.OPEN, mode=mode,
                               entry_price=entry_price, initial_qty=Decimal(qty), qty=Decimal(qty), initial_stop=stop,
                               stop=stop, target=entry_price * 2, risk_per_unit=Decimal(stop_offset))
    await Order.create(client_order_id=entry_cid, exchange_order_id=filled.order_id, trade=trade, mode=mode,
                       symbol=SYM, intent=OrderIntent.ENTRY, side=buy, position_side=side, order_type="MARKET",
                       quantity=Decimal(qty), status=OrderStatus.FILLED, filled_qty=Decimal(qty), avg_price=entry_price)
    placed = await client.place_order(OrderRequest(symbol=SYM, side=sell, position_side=side, type="STOP_MARKET",
                                                   quantity=Decimal(qty), stop_price=stop, working_type="MARK_PRICE",
                                                   client_order_id=stop_cid))
    stop_row = await Order.create(client_order_id=stop_cid, exchange_order_id=placed.order_id, trade=trade, mode=mode,
                                  symbol=SYM, intent=OrderIntent.STOP_LOSS, side=sell, position_side=side,
                                  order_type="STOP_MARKET", quantity=Decimal(qty), stop_price=stop, reduce_only=True,
                                  status=OrderStatus.NEW)
    return trade, stop_row


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorServer]:
    """A running simulator for one test."""
    server = await start_sim()
    yield server
    await server.stop()


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[BingxRestClient]:
    """The project's client signed in to ``sim``."""
    async with client_for(sim) as c:
        yield c
