"""The matching engine seen through the wire: a scripted scenario whose money adds up exactly,
SL/TP triggers, partial fills, one-way mode, time-in-force, liquidation and funding.

The clock is paused and moved with ``POST /_sim/clock``; expectations come from public market
data (depth, trades, ticker) and from the candle file, checked against ``GET /_sim/state``.
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable

import aiohttp
import pytest

from engine.market.candle import read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

from tests.simulator_rawclient import NANO_FILE, RawBingX

SYM = "NANO-USDT"
KEY, SECRET = "trade-key", "trade-secret"
TAKER, MAKER = Decimal("0.0005"), Decimal("0.0002")
E8 = Decimal("0.00000001")


def fee(price: Decimal, qty: Decimal, rate: Decimal) -> Decimal:
    return (price * qty * rate).quantize(E8, rounding=ROUND_HALF_UP)


def compact(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


@pytest.fixture(scope="module")
def nano_candles():
    return read_candles_csv(NANO_FILE)


async def _start(nano_candles, **kw: Any) -> SimulatorServer:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], api_key=KEY, api_secret=SECRET, paused=True,
                          rate_limit_scale=5, **kw)
    await sim.start()
    return sim


@pytest.fixture
async def sim(nano_candles):
    server = await _start(nano_candles)
    yield server
    await server.stop()


@pytest.fixture
async def client(sim):
    async with aiohttp.ClientSession() as session:
        yield RawBingX(session, sim.rest_url, KEY, SECRET)


async def best_prices(client: RawBingX) -> tuple[Decimal, Decimal]:
    depth = (await client.public("/openApi/swap/v2/quote/depth", symbol=SYM, limit=5)).data
    return max(Decimal(p) for p, _ in depth["bids"]), min(Decimal(p) for p, _ in depth["asks"])


def order_in(state: dict, order_id: int) -> dict:
    return next(o for o in state["orders"] if o["orderId"] == order_id)


async def step_until(client: RawBingX, done: Callable[[dict], bool], max_steps: int = 600) -> dict:
    """Replay one trade at a time (admin clock API) until ``done(state)``."""
    for _ in range(max_steps):
        reply = await client.admin("/_sim/clock", {"action": "step", "steps": 1})
        assert reply.status == 200, reply.text
        state = await client.admin_state()
        if done(state):
            return state
    raise AssertionError("condition not reached")


def assert_books_balance(state: dict, initial: Decimal) -> None:
    """The wallet is the initial balance plus every income record, fees match the fills."""
    wallet = Decimal(state["account"]["wallet"])
    income = [Decimal(r["income"]) for r in state["income"]]
    assert wallet == initial + sum(income, Decimal(0))
    fees = sum((Decimal(r["income"]) for r in state["income"] if r["incomeType"] == "TRADING_FEE"), Decimal(0))
    assert fees == sum((Decimal(f["commission"]) for f in state["fills"]), Decimal(0))
    pnl = sum((Decimal(r["income"]) for r in state["income"] if r["incomeType"] == "REALIZED_PNL"), Decimal(0))
    assert pnl == sum((Decimal(f["realizedPnl"]) for f in state["fills"]), Decimal(0))


async def test_scripted_scenario_adds_up_to_the_cent(client: RawBingX) -> None:
    initial = Decimal(10000)
    # 1. Market long 100 with an attached TP (last price) and SL (mark price).
    bid0, ask0 = await best_prices(client)
    tp = compact({"type": "TAKE_PROFIT_MARKET", "stopPrice": 10.98, "workingType": "CONTRACT_PRICE"})
    sl = compact({"type": "STOP_MARKET", "stopPrice": 10.6, "workingType": "MARK_PRICE"})
    entry = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="100",
                               takeProfit=tp, stopLoss=sl, clientOrderId="entry-1")
    assert entry.code == 0, entry.text
    entry_order = entry.data["order"]
    assert entry_order["status"] == "FILLED" and Decimal(entry_order["avgPrice"]) == ask0
    entry_fee = fee(ask0, Decimal(100), TAKER)
    balance = await client.balance()
    assert Decimal(balance["balance"]) == initial - entry_fee
    [long_pos] = await client.positions(SYM)
    assert (long_pos["positionSide"], long_pos["positionAmt"], Decimal(long_pos["avgPrice"])) == ("LONG", "100.0", ask0)
    opens = (await client.signed("GET", "/openApi/swap/v2/trade/openOrders", {"symbol": SYM})).data["orders"]
    assert sorted(o["type"] for o in opens) == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert all(o["side"] == "SELL" and o["positionSide"] == "LONG" and o["status"] == "NEW" for o in opens)
    tp_id = next(o["orderId"] for o in opens if o["type"] == "TAKE_PROFIT_MARKET")
    sl_id = next(o["orderId"] for o in opens if o["type"] == "STOP_MARKET")

    # 2. A resting short limit above the market freezes margin.
    short = await client.place(symbol=SYM, side="SELL", positionSide="SHORT", type="LIMIT", quantity="1500",
                               price="10.93", clientOrderId="short-1")
    assert short.code == 0 and short.data["order"]["status"] == "PENDING"
    short_id = short.data["order"]["orderId"]
    balance = await client.balance()
    assert Decimal(balance["freezedMargin"]) == Decimal("1500") * Decimal("10.93") / 20

    # 3. It fills partially against the replayed trades, at its own price, as a maker.
    state = await step_until(client, lambda s: Decimal(order_in(s, short_id)["executedQty"]) > 0)
    short_state = order_in(state, short_id)
    last_trade = (await client.public("/openApi/swap/v2/quote/trades", symbol=SYM, limit=1)).data[0]
    assert Decimal(last_trade["price"]) >= Decimal("10.93")
    assert short_state["status"] == "PARTIALLY_FILLED"
    assert Decimal(short_state["executedQty"]) == Decimal(last_trade["qty"]) < 1500
    [short_fill] = [f for f in state["fills"] if f["orderId"] == short_id]
    assert short_fill["maker"] and Decimal(short_fill["price"]) == Decimal("10.93")

    # 4. Cancel the rest: CANCELLED, the fill stays, frozen margin is released.
    cancelled = await client.cancel(SYM, clientOrderId="SHORT-1")
    assert cancelled.data["order"]["status"] == "CANCELLED"
    short_qty = Decimal(cancelled.data["order"]["executedQty"])
    assert Decimal((await client.balance())["freezedMargin"]) == 0

    # 5. The TP fires on the last price; the SL of the same position is cancelled with it.
    state = await step_until(client, lambda s: order_in(s, tp_id)["status"] == "FILLED")
    assert order_in(state, sl_id)["status"] == "CANCELLED"
    [tp_fill] = [f for f in state["fills"] if f["orderId"] == tp_id]
    exit_price = Decimal(tp_fill["price"])
    assert exit_price >= Decimal("10.98") and not tp_fill["maker"]
    assert Decimal(tp_fill["realizedPnl"]) == (exit_price - ask0) * 100
    positions = await client.positions(SYM)
    assert [p["positionSide"] for p in positions] == ["SHORT"]

    # 6. Close the short at the market: the buy walks the published ask levels.
    depth = (await client.public("/openApi/swap/v2/quote/depth", symbol=SYM, limit=20)).data
    walk, left = [], short_qty
    for price, qty in sorted((Decimal(p), Decimal(q)) for p, q in depth["asks"]):
        take = min(left, qty)
        walk.append((price, take))
        left -= take
        if not left:
            break
    close = await client.place(symbol=SYM, side="BUY", positionSide="SHORT", type="MARKET", quantity=str(short_qty))
    assert close.code == 0 and close.data["order"]["status"] == "FILLED"
    assert await client.positions(SYM) == []
    close_fills = [(Decimal(f["price"]), Decimal(f["qty"])) for f in (await client.admin_state())["fills"]
                   if f["orderId"] == close.data["order"]["orderId"]]
    assert close_fills == walk

    # 7. Everything adds up, to the cent and beyond.
    expected = (
        initial
        - entry_fee
        - fee(Decimal("10.93"), short_qty, MAKER)
        + (exit_price - ask0) * 100 - fee(exit_price, Decimal(100), TAKER)
        + Decimal("10.93") * short_qty - sum((p * q + fee(p, q, TAKER) for p, q in walk), Decimal(0))
    )
    balance = await client.balance()
    assert Decimal(balance["balance"]).quantize(Decimal("0.01")) == expected.quantize(Decimal("0.01"))
    state = await client.admin_state()
    assert Decimal(state["account"]["wallet"]) == expected
    assert Decimal(balance["equity"]) == Decimal(balance["balance"]) == Decimal(balance["availableMargin"])
    assert Decimal(balance["usedMargin"]) == 0
    assert_books_balance(state, initial)
    income = (await client.signed("GET", "/openApi/swap/v2/user/income", {"symbol": SYM, "limit": 1000})).data
    assert sum(Decimal(r["income"]) for r in income) == expected - initial


async def test_stop_loss_triggers_on_mark_price_and_cancels_take_profit(client: RawBingX) -> None:
    sl = compact({"type": "STOP_MARKET", "stopPrice": 10.8, "workingType": "MARK_PRICE"})
    tp = compact({"type": "TAKE_PROFIT_MARKET", "stopPrice": 12, "workingType": "MARK_PRICE"})
    assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="50",
                               stopLoss=sl, takeProfit=tp)).code == 0
    children = (await client.admin_state())["orders"][1:]
    sl_id = next(o["orderId"] for o in children if o["type"] == "STOP_MARKET")
    tp_id = next(o["orderId"] for o in children if o["type"] == "TAKE_PROFIT_MARKET")
    state = await step_until(client, lambda s: order_in(s, sl_id)["status"] == "FILLED", max_steps=1500)
    assert Decimal(state["markets"][SYM]["mark_price"]) <= Decimal("10.8")
    assert order_in(state, tp_id)["status"] == "CANCELLED"
    assert state["positions"] == []
    [sl_fill] = [f for f in state["fills"] if f["orderId"] == sl_id]
    assert Decimal(sl_fill["price"]) == Decimal(state["markets"][SYM]["last_price"])  # sold at the bid
    assert Decimal(sl_fill["realizedPnl"]) < 0
    assert_books_balance(state, Decimal(10000))


async def test_contract_price_trigger_fires_no_later_than_mark_price(client: RawBingX) -> None:
    assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="20")).code == 0
    ids = {}
    for working in ("CONTRACT_PRICE", "MARK_PRICE"):
        reply = await client.place(symbol=SYM, side="SELL", positionSide="LONG", type="STOP_MARKET", quantity="10",
                                   stopPrice="10.84", workingType=working)
        assert reply.code == 0, reply.text
        ids[working] = reply.data["order"]["orderId"]
    fired: dict[str, int] = {}
    for step in range(1500):
        await client.admin("/_sim/clock", {"action": "step", "steps": 1})
        state = await client.admin_state()
        market = state["markets"][SYM]
        for working, order_id in ids.items():
            if working not in fired and order_in(state, order_id)["status"] == "FILLED":
                fired[working] = step
                price = market["last_price"] if working == "CONTRACT_PRICE" else market["mark_price"]
                assert Decimal(price) <= Decimal("10.84")
        if len(fired) == 2:
            break
    assert fired["CONTRACT_PRICE"] <= fired["MARK_PRICE"]
    # The position is flat only once both 10-lot stops have run.
    assert state["positions"] == []


async def test_invalid_stop_sides_are_rejected(client: RawBingX) -> None:
    assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="20")).code == 0
    above = await client.place(symbol=SYM, side="SELL", positionSide="LONG", type="STOP_MARKET", quantity="20",
                               stopPrice="12", workingType="CONTRACT_PRICE")
    assert above.code == 110411
    below = await client.place(symbol=SYM, side="SELL", positionSide="LONG", type="TAKE_PROFIT_MARKET", quantity="20",
                               stopPrice="9", workingType="CONTRACT_PRICE")
    assert below.code == 110413
    attached = await client.place(symbol=SYM, side="SELL", positionSide="SHORT", type="MARKET", quantity="20",
                                  stopLoss=compact({"type": "STOP_MARKET", "stopPrice": 9}))
    assert attached.code == 110412


async def test_time_in_force_and_post_only(client: RawBingX, sim: SimulatorServer) -> None:
    bid, ask = await best_prices(client)
    level = Decimal((await client.public("/openApi/swap/v2/quote/depth", symbol=SYM, limit=5)).data["asks"][-1][1])
    base = {"symbol": SYM, "side": "BUY", "positionSide": "LONG", "type": "LIMIT"}
    post = await client.place(**base, quantity="10", price=str(ask), timeInForce="PostOnly")
    assert post.code == 101215
    resting = await client.place(**base, quantity="10", price=str(bid), timeInForce="PostOnly")
    assert resting.code == 0 and resting.data["order"]["status"] == "PENDING"
    big = str(level + 5)  # more than the best ask level holds
    fok = await client.place(**base, quantity=big, price=str(ask), timeInForce="FOK")
    assert fok.data["order"]["status"] == "EXPIRED" and fok.data["order"]["executedQty"] == "0.0"
    ioc = await client.place(**base, quantity=big, price=str(ask), timeInForce="IOC")
    assert ioc.data["order"]["status"] == "EXPIRED"
    assert Decimal(ioc.data["order"]["executedQty"]) == level
    gtc = await client.place(**base, quantity=big, price=str(ask), timeInForce="GTC")
    assert gtc.data["order"]["status"] == "PARTIALLY_FILLED"
    state = await client.admin_state()
    assert {o["orderId"] for o in (await client.signed("GET", "/openApi/swap/v2/trade/openOrders")).data["orders"]} == {
        resting.data["order"]["orderId"], gtc.data["order"]["orderId"]}
    assert_books_balance(state, Decimal(10000))


async def test_one_way_mode_reduce_only_flip_and_close_position(client: RawBingX) -> None:
    switched = await client.signed("POST", "/openApi/swap/v1/positionSide/dual", {"dualSidePosition": "false"})
    assert switched.code == 0
    assert (await client.signed("GET", "/openApi/swap/v1/positionSide/dual")).data == {"dualSidePosition": "false"}
    assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="1")).code == 109400
    assert (await client.place(symbol=SYM, side="BUY", type="MARKET", quantity="50")).code == 0
    increase = await client.place(symbol=SYM, side="BUY", type="MARKET", quantity="10", reduceOnly="true")
    assert increase.code == 101290
    reduce = await client.place(symbol=SYM, side="SELL", type="MARKET", quantity="80", reduceOnly="true")
    assert reduce.code == 0 and reduce.data["order"]["executedQty"] == "50.0"  # clamped to the position
    assert reduce.data["order"]["status"] == "EXPIRED"  # the unexecutable rest expires, IOC-style
    assert await client.positions(SYM) == []
    assert (await client.place(symbol=SYM, side="BUY", type="MARKET", quantity="30")).code == 0
    assert (await client.place(symbol=SYM, side="SELL", type="MARKET", quantity="50")).code == 0  # flips to short 20
    [pos] = await client.positions(SYM)
    assert pos["positionSide"] == "BOTH" and pos["positionAmt"] == "-20.0"
    blocked = await client.signed("POST", "/openApi/swap/v1/positionSide/dual", {"dualSidePosition": "true"})
    assert blocked.code == 109401
    stop = await client.place(symbol=SYM, side="BUY", type="STOP_MARKET", stopPrice="10.90", closePosition="true",
                              workingType="CONTRACT_PRICE")
    assert stop.code == 0, stop.text
    state = await step_until(client, lambda s: order_in(s, stop.data["order"]["orderId"])["status"] == "FILLED")
    assert state["positions"] == []
    assert Decimal(order_in(state, stop.data["order"]["orderId"])["executedQty"]) == 20
    assert_books_balance(state, Decimal(10000))


async def test_isolated_liquidation_loses_exactly_the_margin(client: RawBingX) -> None:
    assert (await client.signed("POST", "/openApi/swap/v2/trade/marginType", {"symbol": SYM, "marginType": "ISOLATED"})).json == {"code": 0, "msg": ""}
    assert (await client.signed("POST", "/openApi/swap/v2/trade/leverage", {"symbol": SYM, "side": "LONG", "leverage": 50})).code == 0
    _, ask = await best_prices(client)
    assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="100")).code == 0
    [pos] = await client.positions(SYM)
    margin = Decimal(pos["initialMargin"])
    assert pos["isolated"] is True and margin == ask * 100 / 50
    liq_price = Decimal(str(pos["liquidationPrice"]))
    assert ask * Decimal("0.98") < liq_price < ask
    busy = await client.signed("POST", "/openApi/swap/v2/trade/marginType", {"symbol": SYM, "marginType": "CROSSED"})
    assert busy.code == 109400
    state = await step_until(client, lambda s: not s["positions"], max_steps=1500)
    assert Decimal(state["markets"][SYM]["mark_price"]) <= liq_price + Decimal("0.001")
    assert any(f["liquidation"] for f in state["fills"])
    assert Decimal(state["account"]["wallet"]) == Decimal(10000) - fee(ask, Decimal(100), TAKER) - margin
    assert_books_balance(state, Decimal(10000))
    forced = (await client.signed("GET", "/openApi/swap/v2/trade/forceOrders", {"symbol": SYM})).data["orders"]
    assert len(forced) == 1 and forced[0]["type"] == "LIQUIDATION"


async def test_funding_every_eight_hours(client: RawBingX, sim: SimulatorServer) -> None:
    assert (await client.place(symbol=SYM, side="SELL", positionSide="SHORT", type="MARKET", quantity="100")).code == 0
    funding_time = sim.next_funding_ms
    await client.admin("/_sim/clock", {"action": "advance", "to_ms": funding_time - 1})
    mark = Decimal((await client.admin_state())["markets"][SYM]["mark_price"])
    await client.admin("/_sim/clock", {"action": "advance", "to_ms": funding_time + 60_000})
    income = (await client.signed("GET", "/openApi/swap/v2/user/income", {"incomeType": "FUNDING_FEE"})).data
    assert len(income) == 1 and income[0]["time"] == funding_time
    # A positive rate: the short receives mark x size x rate.
    assert Decimal(income[0]["income"]) == (mark * 100 * Decimal("0.0001")).quantize(E8, rounding=ROUND_HALF_UP)
    history = (await client.public("/openApi/swap/v2/quote/fundingRate", symbol=SYM)).data
    assert history == [{"symbol": SYM, "fundingRate": "0.00010000", "fundingTime": funding_time}]
    premium = (await client.public("/openApi/swap/v2/quote/premiumIndex", symbol=SYM)).data
    assert premium["nextFundingTime"] == funding_time + 8 * 3_600_000
    assert_books_balance(await client.admin_state(), Decimal(10000))


async def test_batch_orders_and_batch_cancel(client: RawBingX) -> None:
    bid, _ = await best_prices(client)
    orders = [
        {"symbol": SYM, "side": "BUY", "positionSide": "LONG", "type": "LIMIT", "quantity": 10, "price": float(bid - Decimal("0.1")), "clientOrderId": f"b{i}"}
        for i in range(3)
    ]
    orders.append({"symbol": SYM, "side": "BUY", "positionSide": "LONG", "type": "LIMIT", "quantity": 10})
    reply = await client.signed("POST", "/openApi/swap/v2/trade/batchOrders", {"batchOrders": compact(orders)})
    assert reply.code == 0 and len(reply.data["orders"]) == 3
    assert reply.data["errors"] == [{"index": 3, "code": 80014, "msg": "parameter price is must"}]
    cancel = await client.signed("DELETE", "/openApi/swap/v2/trade/batchOrders",
                                 {"symbol": SYM, "clientOrderIDList": compact(["b0", "b1", "nope"])})
    assert [o["clientOrderId"] for o in cancel.data["success"]] == ["b0", "b1"]
    assert cancel.data["failed"][0]["errorCode"] == 80016
    rest = await client.signed("DELETE", "/openApi/swap/v2/trade/allOpenOrders", {"symbol": SYM})
    assert [o["clientOrderId"] for o in rest.data["success"]] == ["b2"]


async def test_two_markets_share_one_clock_and_one_wallet(nano_candles) -> None:
    etc_file = NANO_FILE.with_name("ETC_USDT-1m.csv.gz")
    sim = SimulatorServer([MarketSpec(SYM, nano_candles), MarketSpec("ETC-USDT", etc_file)], api_key=KEY,
                          api_secret=SECRET, paused=True, rate_limit_scale=5)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, KEY, SECRET)
            contracts = (await client.public("/openApi/swap/v2/quote/contracts")).data
            assert sorted(c["symbol"] for c in contracts) == ["ETC-USDT", SYM]
            etc = next(c for c in contracts if c["symbol"] == "ETC-USDT")
            price = Decimal((await client.public("/openApi/swap/v1/ticker/price", symbol="ETC-USDT")).data["price"])
            tick, step = Decimal(1).scaleb(-etc["pricePrecision"]), Decimal(1).scaleb(-etc["quantityPrecision"])
            assert Decimal("1e-6") < tick / price <= Decimal("1e-5")  # defaults follow the price scale
            assert 1 <= step * price < 100
            assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="50")).code == 0
            assert (await client.place(symbol="ETC-USDT", side="SELL", positionSide="SHORT", type="MARKET", quantity="2")).code == 0
            await client.admin("/_sim/clock", {"action": "advance", "candles": 3})
            now = await client.server_time()
            for symbol in (SYM, "ETC-USDT"):
                [bar] = (await client.public("/openApi/swap/v3/quote/klines", symbol=symbol, interval="1m", limit=1)).data
                assert now - 60_000 < bar["time"] <= now  # both markets replayed up to the same clock
            positions = {p["symbol"]: p for p in await client.positions()}
            assert set(positions) == {SYM, "ETC-USDT"}
            balance = await client.balance()
            upnl = sum(Decimal(p["unrealizedProfit"]) for p in positions.values())
            assert Decimal(balance["equity"]) == Decimal(balance["balance"]) + upnl
            assert Decimal(balance["usedMargin"]) == sum(Decimal(p["initialMargin"]) for p in positions.values())
            assert_books_balance(await client.admin_state(), Decimal(10000))
    finally:
        await sim.stop()


async def test_cross_liquidation_when_equity_falls_to_maintenance(nano_candles) -> None:
    sim = await _start(nano_candles, balance=Decimal(25))
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, KEY, SECRET)
            assert (await client.signed("POST", "/openApi/swap/v2/trade/leverage", {"symbol": SYM, "side": "LONG", "leverage": 50})).code == 0
            assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="100")).code == 0
            [pos] = await client.positions(SYM)
            assert pos["isolated"] is False
            liq_price = Decimal(str(pos["liquidationPrice"]))
            state = await step_until(client, lambda s: not s["positions"], max_steps=1500)
            mark = Decimal(state["markets"][SYM]["mark_price"])
            assert mark <= liq_price + Decimal("0.001")
            [liq] = [f for f in state["fills"] if f["liquidation"]]
            assert Decimal(liq["price"]) == mark  # closed at the mark price
            wallet = Decimal(state["account"]["wallet"])
            assert 0 <= wallet < Decimal(25)
            assert_books_balance(state, Decimal(25))
            balance = await client.balance()
            assert Decimal(balance["balance"]) == wallet and Decimal(balance["usedMargin"]) == 0
    finally:
        await sim.stop()


async def test_close_limit_larger_than_the_position_is_cancelled_once_flat(client: RawBingX) -> None:
    assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="40")).code == 0
    bid, _ = await best_prices(client)
    close = await client.place(symbol=SYM, side="SELL", positionSide="LONG", type="LIMIT", quantity="100",
                               price=str(bid + Decimal("0.0100")))
    assert close.code == 0 and close.data["order"]["status"] == "PENDING"
    order_id = close.data["order"]["orderId"]
    state = await step_until(client, lambda s: not s["positions"])
    order = order_in(state, order_id)
    assert order["status"] == "CANCELLED" and order["executedQty"] == "40.0"
    assert state["open_order_ids"] == []
