"""Parsers and contract rules; every recorded swap response from ccxt parses through the client."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web

from engine.exchange.bingx.contracts import ContractRules
from engine.exchange.bingx.errors import OrderValidationError
from engine.exchange.bingx.events import (
    AccountConfigUpdate,
    AccountUpdate,
    DepthEvent,
    KlineEvent,
    ListenKeyExpired,
    OrderUpdate,
    TickerEvent,
    TradeEvent,
    parse_account_event,
    parse_market_push,
)
from engine.exchange.bingx.models import MalformedPayloadError, OrderStatus, loads, parse_contract
from engine.exchange.bingx.orders import (
    OrderRequest,
    TriggerSpec,
    is_valid_client_order_id,
    new_client_order_id,
    parse_order,
)
from engine.exchange.bingx.rest import BingxRestClient

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RESPONSES = json.loads((SHARED / "data/ccxt-bingx-static/response.json").read_text())

Call = Callable[[BingxRestClient], Awaitable[Any]]

# (ccxt method, case description) -> (path the client calls, the client call, a check on the typed result)
SWAP_CASES: dict[tuple[str, str], tuple[str, Call, Callable[[Any], None]]] = {
    ("fetchFundingHistory", "funding"): (
        "/openApi/swap/v2/user/income", lambda c: c.income("LTC-USDT", "FUNDING_FEE"),
        lambda r: (len(r) == 2 and r[0].income == Decimal("-0.00056154") and r[0].time_ms == 1769241660000
                   and r[0].tran_id == "1769048666279853387_310_1941328") or _fail(r)),
    ("fetchMarketLeverageTiers", "fetch leverage tiers for ETH/USDT:USDT market"): (
        "/openApi/swap/v1/maintMarginRatio", lambda c: c.maint_margin_tiers("ETH-USDT"),
        lambda r: (r[0].maint_margin_ratio == Decimal("0.003300") and r[1].maint_amount == Decimal("2070"))
        or _fail(r)),
    ("fetchFundingRate", "fetch funding rate linear"): (
        "/openApi/swap/v2/quote/premiumIndex", lambda c: c.premium_index("BTC-USDT"),
        lambda r: (r.mark_price == Decimal("104701.1") and r.last_funding_rate == Decimal("0.000049")
                   and r.next_funding_time_ms == 1749830400000) or _fail(r)),
    ("closeAllPositions", "Fill this with a description of the method call"): (
        "/openApi/swap/v2/trade/closeAllPositions", lambda c: c.close_all_positions(),
        lambda r: (r.success_ids == ("1735124421028573200",) and r.failed_ids == ()) or _fail(r)),
    ("createOrder", "swap create order limit"): (
        "/openApi/swap/v2/trade/order", lambda c: c.place_order(_limit_order()),
        lambda r: (r.order_id == "1735119588833849344" and r.status is OrderStatus.NEW
                   and r.client_order_id == "fixture1") or _fail(r)),
    ("createOrder", "Create order with tp and sl"): (
        "/openApi/swap/v2/trade/order", lambda c: c.place_order(_limit_order()),
        lambda r: (r.order_id == "1743623387810590720" and r.stop_loss == TriggerSpec("STOP_MARKET", Decimal(50),
                   quantity=Decimal(1)) and r.take_profit.stop_price == Decimal(100)) or _fail(r)),
    ("createOrder", "assert #20991 fix"): (
        "/openApi/swap/v2/trade/order", lambda c: c.place_order(_limit_order()),
        lambda r: (r.order_id == "1751667285204103168" and r.orig_qty == Decimal("0.1") and r.stop_loss is None)
        or _fail(r)),
    ("createOrder", "create takeProfitOrder"): (
        "/openApi/swap/v2/trade/order", lambda c: c.place_order(_limit_order()),
        lambda r: (r.type == "TAKE_PROFIT_MARKET" and r.stop_price == Decimal(120)) or _fail(r)),
    ("createOrder", "create trigger order"): (
        "/openApi/swap/v2/trade/order", lambda c: c.place_order(_limit_order()),
        lambda r: (r.type == "TRIGGER_MARKET" and r.position_side == "BOTH") or _fail(r)),
    ("fetchClosedOrders", "Swap closed order"): (
        "/openApi/swap/v2/trade/allOrders", lambda c: c.order_history("LTC-USDT"),
        lambda r: (r[0].status is OrderStatus.FILLED and r[0].commission == Decimal("-0.003509")
                   and r[0].stop_price == 0 and r[0].stop_loss is None) or _fail(r)),
    ("fetchBalance", "swap fetch balance"): (
        "/openApi/swap/v3/user/balance", lambda c: c.balance(),
        lambda r: (r[0].asset == "USDT" and r[0].equity == Decimal("196.7431")
                   and r[0].freezed_margin == 0) or _fail(r)),
    ("fetchMyTrades", "Swap trade"): (
        "/openApi/swap/v2/trade/allFillOrders", lambda c: c.fills("LTC-USDT", 0, 1),
        lambda r: (r[0].order_id == "1743623387810590720" and r[0].volume == Decimal(10)) or _fail(r)),
    ("fetchTicker", "swap ticker"): (
        "/openApi/swap/v2/quote/ticker", lambda c: c.ticker_24h("BTC-USDT"),
        lambda r: (r.last_price == Decimal("69938.9") and r.bid_price == Decimal("69942.2")) or _fail(r)),
    ("fetchOrder", "fetch swap order"): (
        "/openApi/swap/v2/trade/order", lambda c: c.query_order("LTC-USDT", order_id="1770683446830788608"),
        lambda r: (r.order_id == "1770683446830788608" and r.leverage == 5 and r.reduce_only is True
                   and r.client_order_id == "b39b0316-1f99-4099-8f4b-bac0f46731f8") or _fail(r)),
    ("fetchOrder", "swap stopLoss order"): (
        "/openApi/swap/v2/trade/order", lambda c: c.query_order("LTC-USDT", order_id="1792481956836519936"),
        lambda r: (r.type == "STOP_MARKET" and r.status is OrderStatus.NEW and r.cum_quote == 0
                   and r.stop_price == Decimal("20.00")) or _fail(r)),
    ("fetchPositions", "fetch position"): (
        "/openApi/swap/v2/user/positions", lambda c: c.positions("LTC-USDT"),
        lambda r: (r[0].position_id == "1773289330136281088" and r[0].leverage == 5
                   and r[0].direction == "LONG" and r[0].liquidation_price == 0) or _fail(r)),
    ("fetchMarginMode", "fetch linear swap margin mode"): (
        "/openApi/swap/v2/trade/marginType", lambda c: c.get_margin_type("BTC-USDT"),
        lambda r: r.value == "CROSSED" or _fail(r)),
    ("fetchPositionHistory", "linear swap fetch position history with a limit argument"): (
        "/openApi/swap/v1/trade/positionHistory", lambda c: c.position_history("LTC-USDT"),
        lambda r: (r[0].net_profit == Decimal("99.63") and r[0].leverage == 6) or _fail(r)),
}

# Recorded cases that are not USDT-M swap endpoints this layer serves, with the reason.
NOT_SWAP = {
    ("fetchTransfers", "fetch USDT transfers from spot to swap"): "wallet transfer API",
    ("transfer", "transfer LTC from inverse swap to spot using the subType parameter"): "wallet transfer API",
    ("transfer", "transfer USDT from spot to linear swap"): "wallet transfer API",
    ("fetchCurrencies", "fetchCurrencies"): "wallet API (case disabled upstream)",
    ("cancelOrder", "spot cancel order"): "spot",
    ("cancelOrder", "twap cancel order"): "TWAP algo orders (/swap/v1/twap): the bot never uses them",
    ("createOrder", "spot create order limit buy"): "spot",
    ("createOrder", "swap create TWAP order"): "TWAP algo orders: the bot never uses them",
    ("fetchClosedOrders", "Spot closed order"): "spot",
    ("fetchClosedOrders", "twap closed order"): "TWAP algo orders: the bot never uses them",
    ("fetchBalance", "fetch funding balance"): "funding-wallet API",
    ("fetchBalance", "spot fetchBalance"): "spot",
    ("fetchMyTrades", "Spot trade"): "spot",
    ("fetchOpenOrders", "spot open orders"): "spot",
    ("fetchOpenOrders", "twap open orders"): "TWAP algo orders: the bot never uses them",
    ("fetchDepositAddressesByNetwork", "usdt addresses with prefix"): "wallet API",
    ("fetchTrades", "public spot trades"): "spot",
    ("fetchTicker", "public spot ticker"): "spot",
    ("fetchOHLCV", "public spot ohlcv"): "spot",
    ("fetchOrder", "twap order"): "TWAP algo orders: the bot never uses them",
    ("fetchMarginMode", "fetch inverse swap margin mode"): "coin-M (cswap)",
}


def _fail(result: Any) -> None:
    raise AssertionError(f"unexpected parse result: {result!r}")


def _limit_order() -> OrderRequest:
    return OrderRequest(symbol="LTC-USDT", side="BUY", position_side="LONG", type="LIMIT",
                        quantity=Decimal("1"), price=Decimal("100"), client_order_id="fixture1")


def _raw_body(case: dict[str, Any]) -> str:
    body = case["httpResponse"]
    return body if isinstance(body, str) else json.dumps(body)


def test_every_recorded_case_is_classified() -> None:
    recorded = {(m, c["description"]) for m, cases in RESPONSES["methods"].items() for c in cases}
    assert recorded == set(SWAP_CASES) | set(NOT_SWAP)


@pytest.mark.parametrize("key", list(SWAP_CASES), ids=[f"{m}:{d}" for m, d in SWAP_CASES])
async def test_recorded_swap_response_parses_through_the_client(key: tuple[str, str]) -> None:
    method, description = key
    case = next(c for c in RESPONSES["methods"][method] if c["description"] == description)
    path, call, check = SWAP_CASES[key]
    body = _raw_body(case)
    contracts = json.dumps({"code": 0, "msg": "", "data": [
        {"symbol": "LTC-USDT", "contractId": "5", "pricePrecision": 2, "quantityPrecision": 2,
         "tradeMinQuantity": 0.01, "tradeMinUSDT": 2, "status": 1, "apiStateOpen": "true"}]})
    served: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        served.append(request.path)
        if request.path.endswith("/server/time"):
            return web.json_response({"code": 0, "msg": "", "data": {"serverTime": 1_700_000_000_000}})
        if request.path.endswith("/quote/contracts"):
            return web.Response(text=contracts, content_type="application/json")
        assert request.path == path, request.path
        return web.Response(text=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with BingxRestClient(rest_url=f"http://127.0.0.1:{port}", api_key="k", api_secret="s") as client:
            result = await call(client)
        check(result)
        assert path in served
    finally:
        await runner.cleanup()


# --- parser details ------------------------------------------------------------------------------


def test_big_ids_stay_exact_and_statuses_normalise() -> None:
    data = loads('{"orderId":1743623387810590720,"status":"CANCELLED","symbol":"X-USDT","price":0.1}')
    order = parse_order(data)
    assert order.order_id == "1743623387810590720"
    assert order.status is OrderStatus.CANCELED is OrderStatus.CANCELLED
    assert order.price == Decimal("0.1")
    assert parse_order({"status": "CANCELED"}).status is OrderStatus.CANCELED
    assert parse_order({"status": "SOMETHING_NEW"}).status is OrderStatus.UNKNOWN
    assert OrderStatus.PENDING.is_open and OrderStatus.FILLED.is_final


def test_malformed_values_name_the_field() -> None:
    with pytest.raises(MalformedPayloadError, match="origQty"):
        parse_order({"orderId": 1, "origQty": "abc"})
    with pytest.raises(MalformedPayloadError, match="pricePrecision"):
        parse_contract({"symbol": "BTC-USDT"})


def test_client_order_ids() -> None:
    ids = {new_client_order_id("bot1") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_valid_client_order_id(i) and len(i) <= 40 and i.startswith("bot1") for i in ids)
    with pytest.raises(ValueError):
        new_client_order_id("Bad-Prefix")


def _btc_rules() -> ContractRules:
    return ContractRules(parse_contract({
        "symbol": "BTC-USDT", "contractId": "100", "pricePrecision": 1, "quantityPrecision": 4,
        "tradeMinQuantity": 0.0001, "tradeMinUSDT": 2, "status": 1, "apiStateOpen": "true", "asset": "BTC"}))


def test_contract_rounding_and_minimums() -> None:
    rules = _btc_rules()
    assert rules.round_price(Decimal("50000.06")) == Decimal("50000.1")
    assert rules.round_qty(Decimal("0.00199")) == Decimal("0.0019")  # down, never up
    req = OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="LIMIT",
                       quantity=Decimal("0.012345"), price=Decimal("50000.04"), client_order_id="a1",
                       stop_loss=TriggerSpec("STOP_MARKET", Decimal("49000.06")))
    prepared = rules.prepare(req)
    assert (prepared.quantity, prepared.price, prepared.stop_loss.stop_price) == (
        Decimal("0.0123"), Decimal("50000.0"), Decimal("49000.1"))
    with pytest.raises(OrderValidationError, match=r"below the minimum 0\.0001"):
        rules.prepare(OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="LIMIT",
                                   quantity=Decimal("0.00009"), price=Decimal("50000"), client_order_id="a2"))
    with pytest.raises(OrderValidationError, match=r"order value .* is below the minimum 2 USDT"):
        rules.prepare(OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="MARKET",
                                   quantity=Decimal("0.0001")), reference_price=Decimal("15000"))


def test_prepare_sends_prices_exactly_as_rounded() -> None:
    """What goes on the wire is the rounded spelling, even where the number is already on the tick ("50000.10")."""
    rules = _btc_rules()
    req = OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="LIMIT", quantity=Decimal("0.0100"),
                       price=Decimal("50000.10"), client_order_id="a1",
                       stop_loss=TriggerSpec("STOP_MARKET", Decimal("49000.00"), quantity=Decimal("0.01")))
    wire = rules.prepare(req).to_params()
    assert (wire["price"], wire["quantity"]) == (Decimal("50000.1"), Decimal("0.0100"))
    assert str(wire["price"]) == "50000.1" and '"stopPrice":49000.0,' in wire["stopLoss"]
    assert '"quantity":0.0100}' in wire["stopLoss"]
    on_tick = OrderRequest(symbol="BTC-USDT", side="BUY", position_side="LONG", type="LIMIT", quantity=Decimal("0.0100"),
                           price=Decimal("50000.1"), client_order_id="a2",
                           stop_loss=TriggerSpec("STOP_MARKET", Decimal("49000.0"), quantity=Decimal("0.0100")))
    assert rules.prepare(on_tick) is on_tick  # nothing to round: the request is sent as it is


def test_close_only_contract_refuses_entries_but_allows_reduce_only() -> None:
    rules = ContractRules(parse_contract({"symbol": "X-USDT", "pricePrecision": 2, "quantityPrecision": 0,
                                          "tradeMinQuantity": 1, "tradeMinUSDT": 2, "status": 25}))
    entry = OrderRequest(symbol="X-USDT", side="BUY", position_side="BOTH", type="LIMIT", quantity=Decimal(10),
                         price=Decimal(1), client_order_id="e1")
    with pytest.raises(OrderValidationError, match="does not accept new positions"):
        rules.prepare(entry)
    exit_order = OrderRequest(symbol="X-USDT", side="SELL", position_side="BOTH", type="LIMIT", quantity=Decimal(10),
                              price=Decimal(1), reduce_only=True, client_order_id="e2")
    assert rules.prepare(exit_order).quantity == 10


def test_hedge_mode_closing_orders_are_never_held_back_by_entry_checks() -> None:
    """In hedge mode stops and exits carry no reduceOnly: their side says they close, and a closed-to-new-
    positions contract or a remainder below the minimums must not block them (a stuck stop loses money)."""
    rules = ContractRules(parse_contract({"symbol": "X-USDT", "pricePrecision": 2, "quantityPrecision": 0,
                                          "tradeMinQuantity": 5, "tradeMinUSDT": 10, "status": 25}))
    for side, position_side in (("SELL", "LONG"), ("BUY", "SHORT")):
        stop = OrderRequest(symbol="X-USDT", side=side, position_side=position_side, type="STOP_MARKET",
                            quantity=Decimal("2.7"), stop_price=Decimal("1.005"), client_order_id="s1")
        prepared = rules.prepare(stop)  # below min qty 5 and min notional 10, contract close-only
        toward_entry = Decimal("1.01") if position_side == "LONG" else Decimal("1.00")  # a stop never adds risk
        assert (prepared.quantity, prepared.stop_price) == (Decimal(2), toward_entry)
        market_exit = OrderRequest(symbol="X-USDT", side=side, position_side=position_side, type="MARKET",
                                   quantity=Decimal(1), client_order_id="x1")
        assert rules.prepare(market_exit, reference_price=Decimal(1)).quantity == 1
    with pytest.raises(OrderValidationError, match="rounds down to 0"):
        rules.prepare(OrderRequest(symbol="X-USDT", side="SELL", position_side="LONG", type="MARKET",
                                   quantity=Decimal("0.4"), client_order_id="x2"))
    for side, position_side in (("BUY", "LONG"), ("SELL", "SHORT")):  # opening: still refused
        with pytest.raises(OrderValidationError, match="does not accept new positions"):
            rules.prepare(OrderRequest(symbol="X-USDT", side=side, position_side=position_side, type="MARKET",
                                       quantity=Decimal(10), client_order_id="o1"))


# --- WebSocket payloads --------------------------------------------------------------------------


def test_market_pushes() -> None:
    kl = parse_market_push({"code": 0, "dataType": "BTC-USDT@kline_1m", "s": "BTC-USDT", "data": [
        {"c": "121697.7", "o": "121684.1", "h": "121697.7", "l": "121638.7", "v": "5.8244", "T": 1759997460000}]})
    assert kl == [KlineEvent("BTC-USDT", "1m", 1759997460000, Decimal("121684.1"), Decimal("121697.7"),
                             Decimal("121638.7"), Decimal("121697.7"), Decimal("5.8244"))]
    tr = parse_market_push({"dataType": "BTC-USDT@trade", "data": [
        {"q": "0.0162", "p": "121934.9", "T": 1759994162450, "m": True, "s": "BTC-USDT"}]})
    assert tr == [TradeEvent("BTC-USDT", 1759994162450, Decimal("121934.9"), Decimal("0.0162"), True)]
    (depth,) = parse_market_push({"dataType": "BTC-USDT@depth5@500ms", "ts": 5, "data": {
        "bids": [["1", "1"], ["3", "1"]], "asks": [["9", "1"], ["7", "2"]]}})
    assert isinstance(depth, DepthEvent) and depth.levels == 5
    assert [p for p, _ in depth.bids] == [3, 1] and [p for p, _ in depth.asks] == [7, 9]  # best first
    (ticker,) = parse_market_push({"dataType": "BTC-USDT@ticker", "data": {
        "e": "24hTicker", "E": 1, "s": "BTC-USDT", "c": "10", "B": "9.9", "b": "3", "A": "10.1", "a": "4"}})
    assert isinstance(ticker, TickerEvent) and (ticker.bid_price, ticker.bid_qty) == (Decimal("9.9"), Decimal(3))
    (book,) = parse_market_push({"dataType": "BTC-USDT@bookTicker", "data": {
        "e": "bookTicker", "s": "BTC-USDT", "b": "9.9", "B": "3", "a": "10.1", "A": "4"}})
    assert (book.bid_price, book.bid_qty) == (Decimal("9.9"), Decimal(3))  # letters reversed vs @ticker
    with pytest.raises(MalformedPayloadError):
        parse_market_push({"dataType": "BTC-USDT@kline_1m", "data": [{"c": "x", "T": 1}]})


def test_account_events() -> None:
    upd = parse_account_event({"e": "ACCOUNT_UPDATE", "E": 1, "T": 2, "a": {"m": "ORDER", "B": [
        {"a": "USDT", "wb": "5277.59", "cw": "5233.21", "bc": "0"}], "P": [
        {"s": "LINK-USDT", "pa": "108.843", "ep": "7.2562", "up": "1.4222", "mt": "isolated", "iw": "23.19",
         "ps": "SHORT", "cr": "1"}]}})
    assert isinstance(upd, AccountUpdate) and upd.positions[0].position_amt == Decimal("108.843")
    base = {"E": 1, "o": {"s": "BTC-USDT", "c": "ABC1", "i": 1743623387810590720, "S": "BUY", "o": "LIMIT",
                          "q": "0.01", "p": "50000", "sp": "0", "ap": "0", "x": "CANCELED", "X": "CANCELED",
                          "N": "USDT", "n": "0", "T": 5, "wt": "MARK_PRICE", "ps": "LONG", "rp": "0", "z": "0"}}
    for name in ("ORDER_TRADE_UPDATE", "TRADE_UPDATE"):
        for status in ("CANCELED", "CANCELLED"):
            frame = {**base, "e": name, "o": {**base["o"], "X": status}}
            ev = parse_account_event(frame)
            assert isinstance(ev, OrderUpdate) and ev.status is OrderStatus.CANCELED
            assert ev.order_id == "1743623387810590720" and ev.client_order_id == "abc1"
    cfg = parse_account_event({"e": "ACCOUNT_CONFIG_UPDATE", "E": 1, "ac": {"s": "BTC-USDT", "l": 12, "S": 9,
                                                                              "mt": "cross"}})
    assert cfg == AccountConfigUpdate(1, "BTC-USDT", 12, 9, "cross")
    exp = parse_account_event({"e": "listenKeyExpired", "E": 1, "listenKey": "53c1abcdef"})
    assert isinstance(exp, ListenKeyExpired) and "53c1abcdef" not in exp.listen_key_hint
    assert parse_account_event({"id": "x", "code": 0}) is None
