"""REST fidelity: shapes against the recorded BingX responses, klines, listen keys, rate limits."""

from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import Decimal

import aiohttp
import pytest

from engine.market.candle import read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

from tests.simulator_rawclient import NANO_FILE, RawBingX, load_fixture_response

KEY, SECRET = "rest-key", "rest-secret"
SYM = "NANO-USDT"


@pytest.fixture(scope="module")
def nano_candles():
    return read_candles_csv(NANO_FILE)


@pytest.fixture
async def sim(nano_candles):
    # Bursts of calls are the point of several tests here; limits themselves are tested below.
    server = SimulatorServer([MarketSpec(SYM, nano_candles)], api_key=KEY, api_secret=SECRET, paused=True, rate_limit_scale=5)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def client(sim):
    async with aiohttp.ClientSession() as session:
        yield RawBingX(session, sim.rest_url, KEY, SECRET)


def _keys(obj: dict) -> set[str]:
    return set(obj)


async def test_place_order_echo_matches_the_recorded_raw_shape(client: RawBingX) -> None:
    recorded = load_fixture_response("createOrder", "Create order with tp and sl")["data"]["order"]
    stop_loss = json.dumps({"stopPrice": 5, "workingType": "MARK_PRICE", "type": "STOP_MARKET", "quantity": 10}, separators=(",", ":"))
    reply = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10", stopLoss=stop_loss)
    assert reply.status == 200 and reply.code == 0 and reply.json["msg"] == ""
    # Big integer ids travel unquoted.
    assert re.search(r'"orderId":\d{18,}', reply.text)
    order = reply.data["order"]
    assert _keys(recorded) <= _keys(order)
    for key, value in recorded.items():
        assert type(order[key]) is type(value), key
    assert order["orderId"] > 2**53
    assert order["stopLoss"] == stop_loss  # echoed as the JSON string sent
    assert order["takeProfit"] == ""
    assert "clientOrderID" in order and "clientOrderId" not in order


async def test_query_order_shape_and_client_id_rules(client: RawBingX) -> None:
    recorded = load_fixture_response("fetchOrder", "fetch swap order")["data"]["order"]
    placed = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="LIMIT", quantity="10",
                                price="5", clientOrderID="MyOrder-01")
    assert placed.code == 0
    assert placed.data["order"]["clientOrderID"] == "myorder-01"
    queried = await client.query_order(SYM, clientOrderId="MYORDER-01")
    order = queried.data["order"]
    assert _keys(recorded) <= _keys(order)
    assert order["status"] == "PENDING"
    assert order["clientOrderId"] == "myorder-01"
    assert isinstance(order["takeProfit"], dict) and isinstance(order["stopLoss"], dict)
    assert order["orderId"] == placed.data["order"]["orderId"]
    duplicate = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="LIMIT", quantity="10",
                                   price="5", clientOrderId="myorder-01")
    assert duplicate.code in (101400, 101481)
    cancelled = await client.cancel(SYM, orderId=order["orderId"])
    assert cancelled.data["order"]["status"] == "CANCELLED"
    again = await client.cancel(SYM, orderId=order["orderId"])
    assert again.code == 80016
    missing = await client.query_order(SYM, orderId=123456789012345678)
    assert missing.code == 80016


async def test_account_shapes_match_recordings(client: RawBingX) -> None:
    balance = await client.signed("GET", "/openApi/swap/v3/user/balance")
    recorded_balance = load_fixture_response("fetchBalance", "swap fetch balance")["data"]
    assert isinstance(balance.data, list)
    assert _keys(balance.data[0]) == _keys(recorded_balance[0])
    assert balance.data[0]["balance"] == "10000.0000"
    # Open a short: positionAmt is positive, the side is in positionSide.
    assert (await client.place(symbol=SYM, side="SELL", positionSide="SHORT", type="MARKET", quantity="20")).code == 0
    positions = await client.positions(SYM)
    recorded_position = load_fixture_response("fetchPositions", "fetch position")["data"][0]
    assert len(positions) == 1
    assert _keys(recorded_position) <= _keys(positions[0])
    assert positions[0]["positionSide"] == "SHORT" and positions[0]["positionAmt"] == "20.0"
    income = (await client.signed("GET", "/openApi/swap/v2/user/income")).data
    recorded_income = load_fixture_response("fetchFundingHistory", "funding")["data"][0]
    assert income and _keys(income[0]) == _keys(recorded_income)
    assert income[0]["incomeType"] == "TRADING_FEE"
    fills = (await client.signed("GET", "/openApi/swap/v2/trade/allFillOrders", {"symbol": SYM})).data["fill_orders"]
    recorded_fill = load_fixture_response("fetchMyTrades", "Swap trade")["data"]["fill_orders"][0]
    assert _keys(fills[0]) == _keys(recorded_fill)
    margin = (await client.signed("GET", "/openApi/swap/v2/trade/marginType", {"symbol": SYM})).data
    assert _keys(margin) == _keys(load_fixture_response("fetchMarginMode", "fetch linear swap margin mode")["data"])
    closed = await client.signed("POST", "/openApi/swap/v2/trade/closeAllPositions", {"symbol": SYM})
    recorded_close = load_fixture_response("closeAllPositions", "Fill this with a description of the method call")["data"]
    assert _keys(closed.data) == _keys(recorded_close)
    assert len(closed.data["success"]) == 1 and isinstance(closed.data["success"][0], int)
    assert await client.positions(SYM) == []
    history = (await client.signed("GET", "/openApi/swap/v2/trade/allOrders", {"symbol": SYM, "limit": 10})).data["orders"]
    recorded_closed = load_fixture_response("fetchClosedOrders", "Swap closed order")["data"]["orders"][0]
    assert len(history) == 2 and _keys(recorded_closed) <= _keys(history[0])
    commission = (await client.signed("GET", "/openApi/swap/v2/user/commissionRate")).data["commission"]
    assert commission == {"takerCommissionRate": 0.0005, "makerCommissionRate": 0.0002}


async def test_market_data_shapes(client: RawBingX, sim: SimulatorServer) -> None:
    ticker = (await client.public("/openApi/swap/v2/quote/ticker", symbol=SYM)).data
    assert _keys(ticker) == _keys(load_fixture_response("fetchTicker", "swap ticker")["data"])
    premium = (await client.public("/openApi/swap/v2/quote/premiumIndex", symbol=SYM)).data
    assert _keys(premium) == _keys(load_fixture_response("fetchFundingRate", "fetch funding rate linear")["data"])
    tiers = (await client.signed("GET", "/openApi/swap/v1/maintMarginRatio", {"symbol": SYM})).data
    recorded_tiers = load_fixture_response("fetchMarketLeverageTiers", "fetch leverage tiers for ETH/USDT:USDT market")["data"]
    assert _keys(tiers[0]) == _keys(recorded_tiers[0])
    contracts = (await client.public("/openApi/swap/v2/quote/contracts")).data
    assert [c["symbol"] for c in contracts] == [SYM]
    assert isinstance(contracts[0]["pricePrecision"], int) and isinstance(contracts[0]["tradeMinUSDT"], (int, float))
    depth = (await client.public("/openApi/swap/v2/quote/depth", symbol=SYM, limit=5)).data
    asks = [Decimal(p) for p, _ in depth["asks"]]
    bids = [Decimal(p) for p, _ in depth["bids"]]
    assert asks == sorted(asks, reverse=True)  # highest first, like the live feed
    assert max(bids) < min(asks)
    funding = await client.public("/openApi/swap/v2/quote/fundingRate", symbol=SYM)
    assert funding.code == 0 and funding.json["data"] is None  # nothing settled yet: null, not []
    unknown = await client.public("/openApi/swap/v2/quote/ticker", symbol="NANOUSDT")
    assert unknown.code == 109400
    missing = await client.public("/openApi/swap/v2/quote/ticker", symbol="FOO-USDT")
    assert missing.code == 109425
    route = await client.public("/openApi/swap/v9/nothing")
    assert route.status == 404 and route.code == 100400


async def test_klines_follow_the_replay_and_never_leak_the_future(client: RawBingX, sim: SimulatorServer, nano_candles) -> None:
    market = sim.markets[SYM]
    now = await client.server_time()
    history = [c for c in nano_candles if c.open_time_ms < now]
    rows = (await client.public("/openApi/swap/v3/quote/klines", symbol=SYM, interval="1m", limit=5)).data
    assert [r["time"] for r in rows] == [c.open_time_ms for c in reversed(history[-5:])]  # newest first
    for row, candle in zip(rows, reversed(history[-5:])):
        assert Decimal(row["close"]) == Decimal(market.price_str(market.ticks(candle.close)))
        assert Decimal(row["high"]) == Decimal(market.price_str(market.ticks(candle.high)))
    await sim.advance(steps=3)  # part of the next minute
    now = await client.server_time()
    forming = (await client.public("/openApi/swap/v3/quote/klines", symbol=SYM, interval="1m", limit=1)).data[0]
    candle = next(c for c in nano_candles if c.open_time_ms == forming["time"])
    assert candle.open_time_ms <= now < candle.open_time_ms + 60_000
    assert Decimal(forming["volume"]) < Decimal(str(candle.volume))
    assert Decimal(forming["low"]) >= Decimal(str(candle.low)) - market.tick
    await sim.advance(candles=2)
    rows = (await client.public("/openApi/swap/v3/quote/klines", symbol=SYM, interval="1m", limit=3)).data
    now = await client.server_time()
    assert all(r["time"] <= now for r in rows)
    assert rows[0]["time"] == candle.open_time_ms + 60_000
    assert Decimal(rows[0]["volume"]) == Decimal(market.qty_str(nano_candles[market.closed_count - 1].volume))
    # Hour bars aggregate the minutes known so far.
    hour = (await client.public("/openApi/swap/v3/quote/klines", symbol=SYM, interval="1h", limit=1)).data[0]
    minutes = [c for c in nano_candles if hour["time"] <= c.open_time_ms < min(hour["time"] + 3_600_000, now)]
    assert Decimal(hour["high"]) == max(Decimal(market.price_str(market.ticks(c.high))) for c in minutes)
    ranged = (await client.public("/openApi/swap/v3/quote/klines", symbol=SYM, interval="1m",
                                  startTime=history[-10].open_time_ms, endTime=history[-7].open_time_ms)).data
    assert sorted(r["time"] for r in ranged) == [c.open_time_ms for c in history[-10:-7]]
    trades = (await client.public("/openApi/swap/v2/quote/trades", symbol=SYM, limit=5)).data
    assert trades and trades[0]["time"] >= trades[-1]["time"] and set(trades[0]) == {"time", "isBuyerMaker", "price", "qty", "quoteQty"}


async def test_server_time_runs_at_replay_speed(nano_candles) -> None:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], speed=60.0)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            t0, w0 = await client.server_time(), time.monotonic()
            await asyncio.sleep(0.5)
            t1, w1 = await client.server_time(), time.monotonic()
        assert abs((t1 - t0) - (w1 - w0) * 60_000) < 6_000
    finally:
        await sim.stop()


async def test_listen_key_lifecycle(client: RawBingX, sim: SimulatorServer) -> None:
    path = "/openApi/user/auth/userDataStream"
    created = await client.signed("POST", path)
    key = created.json["listenKey"]
    assert created.status == 200 and set(created.json) == {"listenKey"} and re.fullmatch(r"[0-9a-f]{64}", key)
    assert (await client.signed("PUT", path, {"listenKey": key})).status == 200
    assert (await client.signed("PUT", path)).status == 204
    assert (await client.signed("DELETE", path, {"listenKey": key})).status == 200
    assert (await client.signed("PUT", path, {"listenKey": key})).status == 404


async def test_listen_key_expires(nano_candles) -> None:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], paused=True, listen_key_ttl_s=0.3)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            key = (await client.signed("POST", "/openApi/user/auth/userDataStream")).json["listenKey"]
            await asyncio.sleep(0.45)
            assert (await client.signed("PUT", "/openApi/user/auth/userDataStream", {"listenKey": key})).status == 404
    finally:
        await sim.stop()


@pytest.mark.parametrize("http_status", [200, 429])
async def test_rate_limit_per_endpoint(nano_candles, http_status: int) -> None:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], paused=True, rate_limit_http_status=http_status)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            ts = await client.server_time()
            path = "/openApi/swap/v1/positionSide/dual"  # 2 requests/s per account
            replies = [await client.signed("GET", path, timestamp=ts) for _ in range(3)]
            assert [r.code for r in replies] == [0, 0, 100410]
            assert [r.headers["X-RateLimit-Requests-Remain"] for r in replies] == ["1", "0", "0"]
            assert replies[2].status == http_status
            assert 0 < int(replies[2].headers["X-RateLimit-Requests-Expire"]) <= 1000
            assert "busy" in replies[2].json["msg"].lower()
            other = await client.signed("GET", "/openApi/swap/v3/user/balance", timestamp=ts)
            assert other.code == 0  # the limit is per endpoint
            await asyncio.sleep(int(replies[2].headers["X-RateLimit-Requests-Expire"]) / 1000 + 0.05)
            assert (await client.signed("GET", path, timestamp=ts)).code == 0
    finally:
        await sim.stop()


async def test_bad_parameters_get_clear_errors(client: RawBingX) -> None:
    base = {"symbol": SYM, "side": "BUY", "positionSide": "LONG"}
    assert (await client.place(**base, type="LIMIT", quantity="10")).code == 80014  # no price
    assert (await client.place(**base, type="MARKET")).code == 80014  # no quantity
    assert (await client.place(**base, type="MARKET", quantity="abc")).code == 80014
    assert (await client.place(**base, type="SIDEWAYS", quantity="1")).code == 109400
    assert (await client.place(**base, type="MARKET", quantity="0.01")).code == 101400  # below min quantity
    assert (await client.place(**base, type="MARKET", quantity="0.1")).code == 101400  # below 2 USDT notional
    assert (await client.place(symbol=SYM, side="BUY", positionSide="BOTH", type="MARKET", quantity="1")).code == 109400
    assert (await client.place(**base, type="MARKET", quantity="1", reduceOnly="true")).code == 109400
    assert (await client.place(**base, type="MARKET", quantity="1", stopLoss="5")).code == 80014
    assert (await client.place(**base, type="MARKET", quantity="1", stopLoss="{oops")).code == 80014
    assert (await client.place(symbol=SYM, side="SELL", positionSide="LONG", type="MARKET", quantity="1")).code == 101205
    assert (await client.place(**base, type="MARKET", quantity="100000")).code == 101204  # margin
    too_high = await client.signed("POST", "/openApi/swap/v2/trade/leverage", {"symbol": SYM, "side": "LONG", "leverage": 500})
    assert too_high.code == 101414
    state = await client.admin_state()
    assert state["orders"] == [] and Decimal(state["account"]["wallet"]) == Decimal(10000)


async def test_rate_limit_per_ip_group(nano_candles) -> None:
    # Scaled down 100x: market data (group 1) allows 5 requests per 10 s across all its endpoints.
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], paused=True, rate_limit_scale=0.01)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            replies = [await client.public("/openApi/swap/v2/server/time") for _ in range(3)]
            replies += [await client.public("/openApi/swap/v2/quote/ticker", symbol=SYM) for _ in range(2)]
            assert [r.code for r in replies] == [0] * 5
            other = await client.public("/openApi/swap/v2/quote/depth", symbol=SYM)
            assert other.code == 100410  # a different endpoint of the same group
            assert 9_000 < int(other.headers["X-RateLimit-Requests-Expire"]) <= 10_000
    finally:
        await sim.stop()
