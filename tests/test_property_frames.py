"""Bad input, property-based: hostile WebSocket frames and REST bodies never crash the parsers.

Every input either parses or raises the parser's documented error (``MalformedFrameError``,
``MalformedPayloadError``, ``BingxError``) with a message; nothing else escapes. REST bodies go
through a real ``BingxRestClient`` against a local aiohttp server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from decimal import Decimal
from typing import Any

from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.exchange.bingx import models
from engine.exchange.bingx.errors import BingxError
from engine.exchange.bingx.events import parse_account_event, parse_market_push
from engine.exchange.bingx.models import MalformedPayloadError
from engine.exchange.bingx.rest import BingxRestClient
from engine.exchange.bingx.wsconn import MalformedFrameError, decode_frame
from engine.market.events import KlineUpdate
from engine.market.feed import MarketFeed

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "NaN", "inf", "-1", "1e309", "0x10", "1,5", "  7 ", "BTC-USDT", "99999999999999999999999"]),
)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(st.text(max_size=6), inner, max_size=5)), max_leaves=12)
FIELDS = ["T", "t", "o", "h", "l", "c", "v", "p", "q", "s", "m", "E", "e", "X", "x", "i", "c", "S", "ps", "ap", "z", "bids", "asks"]
rows = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=10)
topics = st.one_of(st.text(max_size=20), st.sampled_from([
    "BTC-USDT@kline_1m", "BTC-USDT@trade", "BTC-USDT@depth20@500ms", "BTC-USDT@ticker", "BTC-USDT@markPrice",
    "BTC-USDT@lastPrice", "BTC-USDT@bookTicker", "@kline_1m", "BTC-USDT@", "kline_1m"]))
pushes = st.fixed_dictionaries({"dataType": topics, "data": st.one_of(rows, st.lists(rows, max_size=3), json_values)},
                               optional={"code": json_values, "ts": json_values, "s": json_values})


@FAST
@given(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"\x1f\x8b" + b),
                 st.binary(max_size=200).map(gzip.compress), st.text(max_size=50)))
def test_any_bytes_decode_or_malformed_frame_error(data: bytes | str) -> None:
    try:
        text = decode_frame(data)
    except MalformedFrameError as exc:
        assert "frame" in str(exc)
    else:
        assert isinstance(text, str)


@FAST
@given(pushes)
def test_hostile_market_pushes_parse_or_raise_malformed(msg: dict[str, Any]) -> None:
    try:
        events = parse_market_push(msg)
    except MalformedPayloadError as exc:
        assert str(exc)
    else:
        assert isinstance(events, list)


@FAST
@given(st.fixed_dictionaries({"e": st.sampled_from(["ORDER_TRADE_UPDATE", "ACCOUNT_UPDATE", "ACCOUNT_CONFIG_UPDATE",
                                                   "listenKeyExpired", "x", ""])},
                             optional={"E": json_values, "o": st.one_of(rows, json_values), "a": json_values, "ac": json_values,
                                       "T": json_values}))
def test_hostile_account_events_parse_or_raise_malformed(msg: dict[str, Any]) -> None:
    try:
        parse_account_event(msg)
    except MalformedPayloadError as exc:
        assert str(exc)


PARSERS = [models.parse_contract, models.parse_ticker_price, models.parse_kline, models.parse_balance, models.parse_position,
           models.parse_income, models.parse_fill, models.parse_premium_index, models.parse_funding_rate, models.parse_balances,
           models.parse_commission_rate, models.parse_position_mode, models.parse_margin_type]


@FAST
@given(st.sampled_from(PARSERS), json_values)
def test_model_parsers_parse_or_raise_malformed(parser: Any, body: Any) -> None:
    try:
        parser(body)
    except MalformedPayloadError as exc:
        assert str(exc)


class _Sink:
    def __init__(self) -> None:
        self.candles: list[Any] = []

    def on_candle(self, candle: Any) -> None:
        self.candles.append(candle)

    def on_warmup_candle(self, candle: Any) -> None:
        self.candles.append(candle)


prices = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e300, 1e-300]))


@FAST
@given(st.lists(st.tuples(st.integers(min_value=-5, max_value=5), prices, prices, prices, prices, prices), min_size=1, max_size=8))
def test_absurd_klines_never_reach_the_engine_as_invalid_candles(updates: list[tuple[int, float, float, float, float, float]]) -> None:
    """Whatever the pushes carry, every candle the feed hands on is finite, positive and consistent."""
    sink = _Sink()
    feed = MarketFeed("BTC-USDT", sink, warmup_candles=0)

    async def run() -> None:
        for minute, o, h, l, c, v in updates:
            await feed.on_kline(KlineUpdate("BTC-USDT", 1_700_000_000_000 + minute * 60_000, o, h, l, c, v))
        await feed.on_clock(1_700_000_000_000 + 3_600_000)

    asyncio.run(run())
    for candle in sink.candles:
        values = [candle.open, candle.high, candle.low, candle.close]
        assert all(v == v and 0 < v < float("inf") for v in values), candle
        assert candle.low <= min(candle.open, candle.close) and candle.high >= max(candle.open, candle.close), candle
        assert candle.volume >= 0


bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v, default=str)),
    st.fixed_dictionaries({"code": scalars, "msg": scalars, "data": json_values}).map(lambda v: json.dumps(v, default=str)),
    st.fixed_dictionaries({"code": st.just(0), "msg": st.just(""), "data": st.one_of(
        st.lists(rows, max_size=3), rows, json_values)}).map(lambda v: json.dumps(v, default=str)),
    st.text(max_size=80), st.sampled_from(["<html>502 Bad Gateway</html>", "", "{", "null", "[]"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, st.sampled_from([200, 200, 200, 400, 429, 500, 503]), st.sampled_from(["positions", "balance", "contract", "klines",
                                                                                        "server_time", "open_orders"]))
def test_hostile_rest_bodies_raise_bingx_errors_only(body: str, status: int, call: str) -> None:
    """A real client against a local server answering garbage: a result or a BingxError, never anything else."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=body, status=status, content_type="application/json")

    async def run() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = BingxRestClient(rest_url=f"http://127.0.0.1:{port}", api_key="KEYVALUE123", api_secret="SECRETVALUE123",
                                 request_timeout_s=2.0, max_retries=0)
        try:
            if call == "positions":
                await client.positions()
            elif call == "balance":
                await client.balance()
            elif call == "contract":
                await client.contract("BTC-USDT")
            elif call == "klines":
                await client.klines("BTC-USDT", "1m", limit=5)
            elif call == "server_time":
                await client.server_time()
            else:
                await client.open_orders("BTC-USDT")
        except BingxError as exc:
            assert str(exc)
            assert "SECRETVALUE123" not in str(exc) and "SECRETVALUE123" not in repr(exc)
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(run())

