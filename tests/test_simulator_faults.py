"""Every fault switch does what it says, driven through the admin API over real sockets."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from engine.market.candle import read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

from tests.simulator_rawclient import NANO_FILE, RawBingX, ws_sub

SYM = "NANO-USDT"
CLOSED = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR)


@pytest.fixture(scope="module")
def nano_candles():
    return read_candles_csv(NANO_FILE)


@pytest.fixture
async def sim(nano_candles):
    server = SimulatorServer([MarketSpec(SYM, nano_candles)], paused=True, rate_limit_scale=10, strict_recv_window=True)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(sim):
    async with aiohttp.ClientSession() as session:
        yield RawBingX(session, sim.rest_url, "test-key", "test-secret")


async def faults(client: RawBingX, **switches) -> dict:
    reply = await client.admin("/_sim/faults", switches)
    assert reply.status == 200, reply.text
    return reply.json


async def wait_closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await ws.receive(timeout=timeout)
        if msg.type in CLOSED:
            return
    raise AssertionError("connection was not dropped")


async def test_drop_all_websockets_now(client: RawBingX, sim: SimulatorServer) -> None:
    key = (await client.signed("POST", "/openApi/user/auth/userDataStream")).json["listenKey"]
    market = await client.session.ws_connect(sim.ws_url)
    account = await client.session.ws_connect(f"{sim.ws_url}?listenKey={key}")
    assert (await ws_sub(market, f"{SYM}@kline_1m"))["code"] == 0
    reply = await client.request("POST", "/_sim/ws/drop")
    assert reply.json == {"dropped": 2}
    await wait_closed(market)
    await wait_closed(account)
    again = await client.session.ws_connect(sim.ws_url)  # reconnecting works
    assert (await ws_sub(again, f"{SYM}@kline_1m"))["code"] == 0
    await again.close()


async def test_drop_websockets_every_n_seconds(client: RawBingX, sim: SimulatorServer) -> None:
    await faults(client, ws_drop_every_s=0.4)
    drops = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.5:
        ws = await client.session.ws_connect(sim.ws_url)
        await wait_closed(ws, 2.0)
        drops += 1
    assert drops >= 2
    await faults(client, ws_drop_every_s=0)
    ws = await client.session.ws_connect(sim.ws_url)
    with pytest.raises(asyncio.TimeoutError):
        await ws.receive(timeout=0.8)  # nothing: no drop, no data while subscribed to nothing (Pings are 5 s apart)
    await ws.close()


async def test_fraction_of_rest_calls_answer_5xx(client: RawBingX) -> None:
    await faults(client, rest_5xx_fraction=1.0, rest_5xx_status=503)
    replies = [await client.public("/openApi/swap/v2/server/time") for _ in range(5)]
    assert {r.status for r in replies} == {503}
    assert "<html>" in replies[0].text
    await faults(client, rest_5xx_fraction=0.5, rest_5xx_status=0, seed=7)
    statuses = [(await client.public("/openApi/swap/v2/server/time")).status for _ in range(40)]
    errors = [s for s in statuses if s >= 500]
    assert 5 < len(errors) < 35 and set(errors) <= {500, 502, 503, 504}
    await faults(client, rest_5xx_fraction=0.0)
    assert [(await client.public("/openApi/swap/v2/server/time")).status for _ in range(5)] == [200] * 5


async def test_5xx_before_and_after_processing(client: RawBingX) -> None:
    ts = await client.server_time()
    await faults(client, rest_5xx_fraction=1.0, rest_5xx_status=502)
    lost = await client.signed("POST", "/openApi/swap/v2/trade/order", {"symbol": SYM, "side": "BUY", "positionSide": "LONG",
                                                                        "type": "MARKET", "quantity": "10", "clientOrderId": "lost"}, timestamp=ts)
    assert lost.status == 502
    await faults(client, rest_5xx_after=True)
    done = await client.signed("POST", "/openApi/swap/v2/trade/order", {"symbol": SYM, "side": "BUY", "positionSide": "LONG",
                                                                        "type": "MARKET", "quantity": "10", "clientOrderId": "done"}, timestamp=ts)
    assert done.status == 502
    await faults(client, rest_5xx_fraction=0.0, rest_5xx_after=False)
    assert (await client.query_order(SYM, clientOrderId="lost")).code == 80016  # never processed
    executed = await client.query_order(SYM, clientOrderId="done")  # processed, answer lost
    assert executed.code == 0 and executed.data["order"]["status"] == "FILLED"


async def test_accepted_order_that_is_never_answered(client: RawBingX) -> None:
    await faults(client, hang_next_orders=1)
    with pytest.raises(asyncio.TimeoutError):
        await client.signed("POST", "/openApi/swap/v2/trade/order", {"symbol": SYM, "side": "BUY", "positionSide": "LONG",
                                                                     "type": "MARKET", "quantity": "10", "clientOrderId": "silent"},
                            timeout=0.5)
    found = await client.query_order(SYM, clientOrderId="silent")
    assert found.code == 0 and found.data["order"]["status"] == "FILLED"  # the order exists
    assert len(await client.positions(SYM)) == 1
    after = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10")
    assert after.code == 0  # only the next one was held back


async def test_latency(client: RawBingX) -> None:
    await faults(client, latency_ms=300)
    t0 = time.monotonic()
    await client.public("/openApi/swap/v2/server/time")
    assert time.monotonic() - t0 >= 0.3
    await faults(client, latency_ms=0)
    t0 = time.monotonic()
    await client.public("/openApi/swap/v2/server/time")
    assert time.monotonic() - t0 < 0.2


async def test_clock_skew(client: RawBingX, sim: SimulatorServer) -> None:
    before = await client.server_time()
    await faults(client, clock_skew_ms=20_000)
    after = await client.server_time()
    assert after - before == 20_000  # the replay clock is paused: the difference is the skew alone
    assert sim.strict_recv_window
    stale = await client.signed("GET", "/openApi/swap/v3/user/balance", timestamp=before)
    assert stale.code == 100421
    assert (await client.signed("GET", "/openApi/swap/v3/user/balance", timestamp=after)).code == 0
    placed = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10")
    assert (await client.query_order(SYM, orderId=placed.data["order"]["orderId"])).data["order"]["time"] == after


async def test_forced_rate_limit_for_n_seconds(client: RawBingX) -> None:
    await faults(client, force_rate_limit_s=0.5)
    limited = await client.public("/openApi/swap/v2/server/time")
    assert limited.code == 100410 and limited.headers["X-RateLimit-Requests-Remain"] == "0"
    assert 0 < int(limited.headers["X-RateLimit-Requests-Expire"]) <= 500
    await asyncio.sleep(0.6)
    assert (await client.public("/openApi/swap/v2/server/time")).code == 0


async def test_reject_next_order_with_a_code(client: RawBingX) -> None:
    await faults(client, reject_next_order_code=101204, reject_next_orders=[{"code": 80012, "msg": "busy, try later"}])
    first = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10")
    assert (first.code, first.json["msg"]) == (101204, "Insufficient margin")
    second = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10")
    assert (second.code, second.json["msg"]) == (80012, "busy, try later")
    assert (await client.admin_state())["orders"] == []  # rejected orders leave nothing behind
    third = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10")
    assert third.code == 0


async def test_fault_admin_validates_and_reports(client: RawBingX) -> None:
    assert (await client.admin("/_sim/faults", {"no_such_switch": 1})).status == 400
    assert (await client.admin("/_sim/faults", {"rest_5xx_fraction": 2})).status == 400
    assert (await client.admin("/_sim/faults", {"latency_ms": 50, "rest_5xx_fraction": 7})).status == 400
    snapshot = (await client.request("GET", "/_sim/state")).json["faults"]
    assert snapshot["latency_ms"] == 0  # a rejected update changes nothing
    state = await faults(client, latency_ms=5, hang_next_orders=2)
    assert state["latency_ms"] == 5 and state["hang_next_orders"] == 2
    cleared = await faults(client, clear=True)
    assert cleared["latency_ms"] == 0 and cleared["hang_next_orders"] == 0
