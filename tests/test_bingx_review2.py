"""Second review of the BingX client: ambiguous protocol readings (bingx-protocol.md 4, 6.5, 7, 8).

Everything that talks to an exchange goes over real sockets to the local simulator (engine.simulator),
with its switches set to the reading under test.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from engine.exchange.bingx.account_stream import AccountStream
from engine.exchange.bingx.errors import (
    BingxInvalidParameterError,
    BingxListenKeyNotExtendedError,
    BingxOrderNotFoundError,
    BingxRateLimitError,
    BingxServerError,
    OrderStateUnknownError,
    error_from_code,
)
from engine.exchange.bingx.events import AccountConfigUpdate
from engine.exchange.bingx.orders import OrderRequest, new_client_order_id
from engine.exchange.bingx.ratelimit import read_expire_header
from engine.exchange.bingx.rest import BingxRestClient
from engine.exchange.bingx.urls import PROD_WS_URL, VST_WS_URL
from engine.simulator import SimulatorServer
from engine.simulator.faults import Faults

from tests.bingx_fakes import EventCollector
from tests.bingx_sim_fixtures import (  # noqa: F401  (btc_candles, make_sim: fixtures used by name)
    btc_candles, client_for, make_sim, SimFactory, SYM,
)



async def open_long(client: BingxRestClient, qty: Decimal) -> Decimal:
    """Open a LONG position at market; returns the last price."""
    last = (await client.ticker_price(SYM)).price
    await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="MARKET",
                                          quantity=qty, client_order_id=new_client_order_id("entry")))
    return last


def stop_request(last: Decimal, qty: Decimal, cid: str) -> OrderRequest:
    return OrderRequest(symbol=SYM, side="SELL", position_side="LONG", type="STOP_MARKET", quantity=qty,
                        stop_price=last * Decimal("0.8"), client_order_id=cid)


def open_stops(sim: SimulatorServer) -> list[dict[str, Any]]:
    return [o for o in sim.state()["orders"] if o["type"] == "STOP_MARKET" and o["status"] == "NEW"]


# --- B1: conditional orders whose clientOrderId BingX ignores ------------------------------------------------


async def test_lost_stop_answer_adopts_the_placed_stop_when_bingx_ignores_its_client_id(make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0, conditional_ignores_client_id=True)
    qty = Decimal("0.01")
    async with client_for(sim, request_timeout_s=1.0) as client:
        last = await open_long(client, qty)
        sim.faults.hang_next_orders = 1  # the stop is executed, its answer never arrives
        cid = new_client_order_id("stop")
        stop = await client.place_order(stop_request(last, qty, cid))
    stops = open_stops(sim)
    assert len(stops) == 1, stops  # no duplicate stop from a blind resend
    assert stops[0]["clientOrderId"] == ""  # the simulator really dropped the id (the reading under test)
    assert stop.order_id == str(stops[0]["orderId"]) and stop.client_order_id == cid


async def test_unanswered_busy_stop_is_confirmed_absent_by_open_orders_and_sent_once_more(
        make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0, conditional_ignores_client_id=True)
    qty = Decimal("0.01")
    async with client_for(sim) as client:
        last = await open_long(client, qty)
        sim.faults.reject_next_orders.append((80012, "service unavailable"))  # busy: not executed
        cid = new_client_order_id("stop")
        stop = await client.place_order(stop_request(last, qty, cid))
    stops = open_stops(sim)
    assert len(stops) == 1 and stop.order_id == str(stops[0]["orderId"]) and stop.client_order_id == cid


async def test_lost_stop_answer_still_ends_with_one_stop_when_bingx_keeps_the_client_id(
        make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0)
    qty = Decimal("0.01")
    async with client_for(sim, request_timeout_s=1.0) as client:
        last = await open_long(client, qty)
        sim.faults.hang_next_orders = 1
        cid = new_client_order_id("stop")
        stop = await client.place_order(stop_request(last, qty, cid))
    stops = open_stops(sim)
    assert [s["clientOrderId"] for s in stops] == [cid] and stop.order_id == str(stops[0]["orderId"])


async def test_two_indistinguishable_stops_make_the_state_unknown_instead_of_a_guess(make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0, conditional_ignores_client_id=True)
    qty = Decimal("0.01")
    async with client_for(sim, request_timeout_s=1.0) as client:
        last = await open_long(client, qty * 2)
        await client.place_order(stop_request(last, qty, new_client_order_id("stopa")))
        sim.faults.hang_next_orders = 1
        with pytest.raises(OrderStateUnknownError):
            await client.place_order(stop_request(last, qty, new_client_order_id("stopb")))
    assert len(open_stops(sim)) == 2  # nothing resent


# --- B2: 109414 and code-before-text classification ----------------------------------------------------------


def test_109414_is_a_confirmed_absence_only_when_the_message_says_the_order_does_not_exist() -> None:
    assert isinstance(error_from_code(109414, "order not exist"), BingxOrderNotFoundError)
    failed = error_from_code(109414, "request failed")
    assert isinstance(failed, BingxServerError) and not isinstance(failed, BingxOrderNotFoundError)
    assert isinstance(error_from_code(109414, ""), BingxServerError)


def test_a_busy_code_mentioning_a_missing_order_stays_an_unknown_outcome() -> None:
    assert isinstance(error_from_code(80012, "order not exist, system busy"), BingxServerError)
    assert isinstance(error_from_code(80016, "order not exist"), BingxOrderNotFoundError)
    assert isinstance(error_from_code(99999, "the order does not exist"), BingxOrderNotFoundError)


# --- B4: 101209 may mean "already submitted" -----------------------------------------------------------------


async def test_101209_for_an_order_that_exists_returns_it_instead_of_a_rejection(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    cid = new_client_order_id("dup")
    async with client_for(sim) as client:
        last = (await client.ticker_price(SYM)).price
        req = OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT", quantity=Decimal("0.01"),
                           price=last * Decimal("0.9"), client_order_id=cid)
        first = await client.place_order(req)
        # The same order submitted again inside 1 s: the older code list answers 101209.
        sim.faults.reject_next_orders.append((101209, "same order number submitted twice within 1 s"))
        again = await client.place_order(req)
    assert again.order_id == first.order_id
    assert [o["clientOrderId"] for o in sim.state()["orders"]] == [cid]


async def test_101209_for_an_absent_order_is_still_a_rejection(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim) as client:
        last = (await client.ticker_price(SYM)).price
        sim.faults.reject_next_orders.append((101209, "The maximum position value for this leverage is exceeded"))
        with pytest.raises(BingxInvalidParameterError) as info:
            await client.place_order(OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT",
                                                  quantity=Decimal("0.01"), price=last * Decimal("0.9"),
                                                  client_order_id=new_client_order_id("big")))
    assert info.value.code == 101209
    assert sim.state()["orders"] == []


# --- B3: rate limits -------------------------------------------------------------------------------------------


def test_simulator_rate_limit_and_firewall_switches_are_settable_like_the_others() -> None:
    faults = Faults()
    faults.update({"rate_limit_no_headers": True, "firewall_block_s": 30})
    snap = faults.snapshot()
    assert snap["rate_limit_no_headers"] is True and snap["firewall_block_remaining_s"] > 25
    faults.clear()
    assert not faults.firewall_forced() and not faults.rate_limit_no_headers


def test_expire_header_small_values_are_seconds_large_are_milliseconds() -> None:
    assert read_expire_header("5", now_ms=0) == 5.0
    assert read_expire_header("10", now_ms=0) == 10.0
    assert read_expire_header("250", now_ms=0) == pytest.approx(0.25)  # ms left: not a 4-minute silence
    assert read_expire_header("850", now_ms=0) == pytest.approx(0.85)
    assert read_expire_header("9000000", now_ms=0) == 300.0  # capped at the documented 5-minute recovery
    assert read_expire_header(None, now_ms=0) is None
    assert read_expire_header("0", now_ms=0) is None


async def test_rate_limit_without_header_is_not_retried_while_restricted(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True, rate_limit_http_status=429)
    async with client_for(sim, backoff_base_s=0.01) as client:
        await client.balance()
        sim.faults.rate_limit_no_headers = True
        sim.faults.force_rate_limit(60)
        with pytest.raises(BingxRateLimitError) as info:
            await asyncio.wait_for(client.positions(), 5)
        assert info.value.retry_after_s is not None and info.value.retry_after_s >= 30
        # While blocked, a stop placement is refused at once, with a clear error, and never reaches BingX.
        started = asyncio.get_running_loop().time()
        with pytest.raises(BingxRateLimitError):
            await client.place_order(OrderRequest(
                symbol=SYM, side="SELL", position_side="LONG", type="STOP_MARKET", quantity=Decimal("0.01"),
                stop_price=Decimal("1000"), client_order_id=new_client_order_id("stop")))
        assert asyncio.get_running_loop().time() - started < 3
    assert sim.state()["orders"] == []


async def test_repeated_rate_limit_without_header_escalates_to_the_five_minute_recovery(
        make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim, rate_limit_default_backoff_s=0.2) as client:
        await client.balance()
        sim.faults.rate_limit_no_headers = True
        sim.faults.force_rate_limit(60)
        # The first breach pauses briefly and the read is retried once; the breach repeats: 5 minutes.
        with pytest.raises(BingxRateLimitError) as info:
            await asyncio.wait_for(client.positions(), 5)
        assert info.value.retry_after_s == pytest.approx(300.0)
        assert client.limiter.blocked_for("ip:account") > 250


async def test_firewall_403_blocks_every_endpoint(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim) as client:
        await client.balance()
        sim.faults.force_firewall_block(60)
        with pytest.raises(BingxRateLimitError) as info:
            await client.positions()
        assert info.value.http_status == 403 and info.value.retry_after_s == pytest.approx(300.0)
        sim.faults.firewall_until = 0.0  # even once BingX would answer, the client keeps away for 5 minutes
        with pytest.raises(BingxRateLimitError):
            await client.balance()
        assert client.limiter.blocked_for("uid:GET /openApi/swap/v2/trade/openOrders") > 250


# --- B9: listen-key extension answered 204 ---------------------------------------------------------------------


async def test_listen_key_extend_204_is_not_an_extension(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim) as client:
        with pytest.raises(BingxListenKeyNotExtendedError):
            await client.extend_listen_key("")  # the simulator answers 204 "no parameters"


async def test_account_stream_replaces_a_key_whose_extension_answered_204(
        make_sim: SimFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    sim = await make_sim(paused=True)
    caplog.set_level(logging.WARNING)
    async with client_for(sim) as client:
        stream = AccountStream(client, sim.ws_url, keepalive_interval_s=0.2)
        async with stream:
            await stream.wait_connected()
            first = stream.listen_key
            assert first
            # Make the key's extension request carry no key: BingX then answers 204 and extends nothing.
            real_extend = client.extend_listen_key
            monkeypatch.setattr(client, "extend_listen_key", lambda key: real_extend(""))

            async def renewed() -> None:
                while stream.keys_created < 2:
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(renewed(), 10)
    assert any("not extended (204 on extend)" in r.getMessage() for r in caplog.records)


# --- B7: an account-stream host that connects but never delivers account events ------------------------------


@pytest.fixture
async def silent_ws_host() -> AsyncIterator[str]:
    """A WebSocket host that accepts any connection and only pings, like a host without account streams."""
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        while not ws.closed:
            await ws.send_str("Ping")
            try:
                await ws.receive(timeout=0.2)
            except asyncio.TimeoutError:
                pass
        return ws

    app = web.Application()
    app.router.add_get("/swap-market", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"ws://127.0.0.1:{port}/swap-market"
    await runner.cleanup()


async def test_account_stream_leaves_a_host_that_sends_no_account_events(
        make_sim: SimFactory, silent_ws_host: str, caplog: pytest.LogCaptureFixture) -> None:
    sim = await make_sim(paused=True)
    sink = EventCollector()
    async with client_for(sim) as client:
        stream = AccountStream(client, silent_ws_host, on_event=sink, event_timeout_s=1.0,
                               alternate_ws_urls=[sim.ws_url])
        async with stream:
            await sink.wait_for(AccountConfigUpdate, timeout=10)  # only the alternate host delivers them
    silent_host = silent_ws_host.split("/")[2]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(silent_host in m and "no account event" in m for m in errors), errors
    assert all(stream.listen_key is None or stream.listen_key not in m for m in errors)


def test_vst_account_stream_alternates_with_the_production_host() -> None:
    client = BingxRestClient(rest_url="http://127.0.0.1:9", api_key="k", api_secret="s")
    assert AccountStream(client, VST_WS_URL)._ws_urls == [VST_WS_URL, PROD_WS_URL]
    assert AccountStream(client, PROD_WS_URL)._ws_urls == [PROD_WS_URL]
