"""The simulator's opt-in cap on pending stops (``cap_pending_stops``, protocol notes 6.2, UNCONFIRMED reading):
the working STOP*/TAKE_PROFIT* quantity on a position may not exceed its size. Driven over real sockets on 127.0.0.1
with the independent raw client; expectations are checked against ``GET /_sim/state``."""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from engine.market.candle import Candle, read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer, cli

from tests.simulator_rawclient import NANO_FILE, RawBingX

SYM = "NANO-USDT"
KEY, SECRET = "cap-key", "cap-secret"
STOP_BELOW, TP_ABOVE = "10.5", "11.5"  # NANO trades near 10.8 at the replay start: a long's stop below, target above

Client = Callable[..., Awaitable[RawBingX]]


@pytest.fixture(scope="module")
def nano_candles() -> list[Candle]:
    """The NANO-USDT candles the other simulator tests replay."""
    return read_candles_csv(NANO_FILE)


@pytest.fixture
async def client_with(nano_candles: list[Candle]) -> AsyncIterator[Client]:
    """``await client_with(cap_pending_stops=...)``: a paused simulator and a raw client for it; stopped after."""
    servers: list[SimulatorServer] = []
    async with aiohttp.ClientSession() as session:

        async def factory(**kw: Any) -> RawBingX:
            server = SimulatorServer([MarketSpec(SYM, nano_candles)], api_key=KEY, api_secret=SECRET, paused=True,
                                     rate_limit_scale=0, **kw)
            await server.start()
            servers.append(server)
            return RawBingX(session, server.rest_url, KEY, SECRET)

        yield factory
        for server in servers:
            await server.stop()


def _compact(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


async def _long(client: RawBingX, qty: str, **attached: str) -> None:
    reply = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity=qty, **attached)
    assert reply.code == 0, reply.text


async def _stop(client: RawBingX, qty: str | None, order_type: str = "STOP_MARKET", stop: str = STOP_BELOW,
                **extra: str) -> Any:
    """A closing order of the long (``qty`` None: none sent, for ``closePosition``)."""
    if qty is not None:
        extra["quantity"] = qty
    return await client.place(symbol=SYM, side="SELL", positionSide="LONG", type=order_type, stopPrice=stop,
                              workingType="CONTRACT_PRICE", **extra)


async def _working(client: RawBingX, order_type: str) -> list[Decimal]:
    """Quantities of the working orders of ``order_type``, as the exchange records them."""
    state = await client.admin_state()
    return sorted(Decimal(str(o["origQty"])) for o in state["orders"]
                  if o["type"] == order_type and o["status"] in ("NEW", "PENDING", "PARTIALLY_FILLED"))


async def test_second_full_size_stop_is_refused_with_the_cap(client_with: Client) -> None:
    client = await client_with(cap_pending_stops=True)
    await _long(client, "100")
    first = await _stop(client, "100")
    assert first.code == 0, first.text

    second = await _stop(client, "100", stop="10.6")
    assert (second.code, second.json["msg"]) == (110406, "The position stop loss order already exists")
    assert await _working(client, "STOP_MARKET") == [Decimal(100)]  # nothing stored for the refused one

    # cancel-then-place goes through: the cap counts only working orders
    assert (await client.cancel(SYM, orderId=first.data["order"]["orderId"])).code == 0
    again = await _stop(client, "100", stop="10.6")
    assert again.code == 0, again.text
    assert await _working(client, "STOP_MARKET") == [Decimal(100)]


async def test_second_full_size_stop_is_accepted_without_the_cap(client_with: Client) -> None:
    client = await client_with()  # default: off, as before
    await _long(client, "100")
    assert (await _stop(client, "100")).code == 0
    assert (await _stop(client, "100", stop="10.6")).code == 0
    assert await _working(client, "STOP_MARKET") == [Decimal(100), Decimal(100)]


async def test_stops_for_parts_of_the_size_fit_until_the_size_is_used_up(client_with: Client) -> None:
    client = await client_with(cap_pending_stops=True)
    await _long(client, "100")
    assert (await _stop(client, "60")).code == 0
    assert (await _stop(client, "40", order_type="STOP", price="10.4")).code == 0  # limit stops share the cap
    over = await _stop(client, "1", stop="10.6")
    assert over.code == 110406
    closing_all = await _stop(client, None, stop="10.6", closePosition="true")  # stands for the whole position
    assert closing_all.code == 110406
    assert await _working(client, "STOP_MARKET") == [Decimal(60)]


async def test_attached_stop_and_target_count_once_working(client_with: Client) -> None:
    client = await client_with(cap_pending_stops=True)
    await _long(client, "100", stopLoss=_compact({"type": "STOP_MARKET", "stopPrice": 10.5, "quantity": 100}),
                takeProfit=_compact({"type": "TAKE_PROFIT_MARKET", "stopPrice": 11.5, "quantity": 100}))
    assert await _working(client, "STOP_MARKET") == [Decimal(100)]

    stop = await _stop(client, "100", stop="10.6")
    assert stop.code == 110406
    target = await _stop(client, "100", order_type="TAKE_PROFIT_MARKET", stop="11.4")
    assert (target.code, target.json["msg"]) == (110407, "The position take profit order already exists")
    # stops and targets are capped separately: a target does not use up room for a stop
    await _long(client, "50")
    assert (await _stop(client, "50", stop="10.6")).code == 0
    assert (await _stop(client, "50", order_type="TAKE_PROFIT_MARKET", stop="11.4")).code == 0
    assert await _working(client, "TAKE_PROFIT_MARKET") == [Decimal(50), Decimal(100)]


async def test_entry_triggers_and_the_other_side_are_not_capped(client_with: Client) -> None:
    client = await client_with(cap_pending_stops=True)
    await _long(client, "100")
    assert (await _stop(client, "100")).code == 0
    # a TRIGGER_MARKET entry is a plan order, not a pending stop of the position
    trigger = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="TRIGGER_MARKET", quantity="100",
                                 stopPrice=TP_ABOVE, workingType="CONTRACT_PRICE")
    assert trigger.code == 0, trigger.text
    # a short's stop is measured against the short position only
    assert (await client.place(symbol=SYM, side="SELL", positionSide="SHORT", type="MARKET", quantity="30")).code == 0
    short_stop = await client.place(symbol=SYM, side="BUY", positionSide="SHORT", type="STOP_MARKET", quantity="30",
                                    stopPrice="11.5", workingType="CONTRACT_PRICE")
    assert short_stop.code == 0, short_stop.text


async def test_cli_flag_switches_the_cap_on() -> None:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    on = cli.build_server(parser.parse_args(["--data", str(NANO_FILE), "--symbol", SYM, "--cap-pending-stops"]))
    off = cli.build_server(parser.parse_args(["--data", str(NANO_FILE), "--symbol", SYM]))
    assert on.engine_config.cap_pending_stops is True and off.engine_config.cap_pending_stops is False
