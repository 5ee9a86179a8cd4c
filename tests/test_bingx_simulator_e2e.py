"""End-to-end: the BingX exchange layer against the project's simulator (engine.simulator) on 127.0.0.1.

The fault cases are also covered against the purpose-built fake in test_bingx_rest/streams; here the
same client code meets an independent implementation of the protocol with real market replay.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

import pytest

from engine.exchange.bingx.account_stream import AccountStream
from engine.exchange.bingx.doctor import render_doctor_report, run_doctor
from engine.exchange.bingx.events import (
    AccountConfigUpdate,
    KlineEvent,
    ListenKeyExpired,
    OrderUpdate,
    StreamReconnected,
)
from engine.exchange.bingx.market_stream import MarketStream, kline_topic
from engine.exchange.bingx.models import OrderStatus
from engine.exchange.bingx.orders import OrderRequest, new_client_order_id
from engine.exchange.bingx.rest import BingxRestClient

from tests.bingx_fakes import EventCollector
from tests.bingx_sim_fixtures import (  # noqa: F401  (btc_candles, make_sim: fixtures used by name)
    btc_candles, client_for, KEY, make_sim, SECRET, SimFactory, SYM,
)



async def test_doctor_reports_offset_rules_balance_positions_mode_leverage(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim) as client:
        report = await run_doctor(client, [SYM, "NOPE-USDT"])
    assert report.reachable and report.authenticated
    assert report.server_time_offset_ms is not None
    btc = report.symbols[0]
    assert btc.contract is not None and btc.contract.tick_size == Decimal("0.1")
    assert btc.leverage is not None and btc.leverage.long_leverage == 20
    assert report.hedge_mode is True and report.positions == []
    assert report.balances[0].equity == Decimal("10000")
    assert "no such perpetual contract" in report.symbols[1].problems[0]
    text = render_doctor_report(report)
    assert "clock offset" in text and "tick 0.1" in text and "hedge" in text and "leverage long 20x" in text
    assert SECRET not in text and KEY not in text


async def test_doctor_explains_a_wrong_secret_in_plain_words(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    async with BingxRestClient(rest_url=sim.rest_url, api_key=KEY, api_secret="wrong") as client:
        report = await run_doctor(client, [SYM])
    assert report.authenticated is False and not report.ok
    assert any("API secret is wrong" in p for p in report.problems)


async def test_lost_placement_response_ends_with_exactly_one_order(make_sim: SimFactory) -> None:
    sim = await make_sim(paused=True)
    sim.faults.hang_next_orders = 1  # executed by the simulator, never answered
    cid = new_client_order_id("e2e")
    async with client_for(sim, request_timeout_s=1.0) as client:
        last = (await client.ticker_price(SYM)).price
        req = OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT", quantity=Decimal("0.01"),
                           price=last * Decimal("0.9"), client_order_id=cid)
        order = await client.place_order(req)
    orders = sim.state()["orders"]
    assert [o["clientOrderId"] for o in orders] == [cid]
    assert order.client_order_id == cid and order.order_id == str(orders[0]["orderId"])
    assert order.status is OrderStatus.PENDING


async def test_klines_range_matches_the_replayed_csv(make_sim: SimFactory, btc_candles: list[Any]) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim) as client:
        now = await client.server_time()
        end = now - now % 60_000
        start = end - 1440 * 60_000
        klines = await client.klines_range(SYM, "1m", start, end)
    by_time = {c.open_time_ms: c for c in btc_candles}
    assert [k.open_time_ms for k in klines] == list(range(start, end, 60_000))
    for k in klines:
        src = by_time[k.open_time_ms]
        half_tick = 0.05 + 1e-6  # the simulator rounds the CSV prices to the 0.1 tick
        assert abs(float(k.close) - src.close) <= half_tick and abs(float(k.high) - src.high) <= half_tick


async def test_clock_skew_is_recovered_via_100421(make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0, strict_recv_window=True)
    async with client_for(sim) as client:
        await client.balance()
        before = client.time.offset_ms
        sim.faults.clock_skew_ms = 30_000
        assert (await client.balance())[0].asset == "USDT"
        assert 29_000 < client.time.offset_ms - before < 31_000


async def test_forced_rate_limit_is_waited_out_and_logged(make_sim: SimFactory,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    sim = await make_sim(paused=True)
    async with client_for(sim, backoff_base_s=0.05) as client:
        await client.balance()
        sim.faults.force_rate_limit(0.5)
        assert await client.positions() == []
    assert any("until the window resets" in r.getMessage() for r in caplog.records)


async def test_ws_drop_reconnects_and_resubscribes(make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0)
    sink = EventCollector()
    stream = MarketStream(sim.ws_url, on_event=sink, backoff_base_s=0.05, backoff_max_s=0.2)
    await stream.subscribe(kline_topic(SYM, "1m"))
    async with stream:
        await sink.wait_for(KlineEvent)
        assert sim.drop_websockets() == 1
        mark = len(sink.events)
        event = await sink.wait_for(StreamReconnected, after=mark)
        assert event.topics == (kline_topic(SYM, "1m"),)
        await sink.wait_for(KlineEvent, after=len(sink.events))


async def test_listen_key_expiry_and_renewal(make_sim: SimFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sim = await make_sim(speed=1.0, listen_key_ttl_s=1.0)
    sink = EventCollector()
    async with client_for(sim) as client:
        # No extension before the 1 s lifetime ends: the simulator expires the key and says so.
        stream = AccountStream(client, sim.ws_url, on_event=sink, keepalive_interval_s=30,
                               backoff_base_s=0.05, backoff_max_s=0.2)
        async with stream:
            await sink.wait_for(AccountConfigUpdate)
            first_key = stream.listen_key
            await sink.wait_for(ListenKeyExpired, timeout=5)
            await sink.wait_for(StreamReconnected, timeout=5)
            mark = len(sink.events)
            await sink.wait_for(AccountConfigUpdate, after=mark)
            assert stream.listen_key not in (None, first_key) and stream.keys_created == 2


async def test_listen_key_extension_keeps_it_alive(make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0, listen_key_ttl_s=1.5)
    sink = EventCollector()
    async with client_for(sim) as client:
        stream = AccountStream(client, sim.ws_url, on_event=sink, keepalive_interval_s=0.6)
        async with stream:
            await sink.wait_for(AccountConfigUpdate)
            await asyncio.sleep(3.0)
            assert not [e for e in sink.events if isinstance(e, (ListenKeyExpired, StreamReconnected))]
            assert stream.keys_created == 1


async def test_every_endpoint_round_trips_against_the_simulator(make_sim: SimFactory) -> None:
    """One pass over the whole REST surface a bot uses, checked against the simulator's own state."""
    sim = await make_sim(speed=1.0)
    async with client_for(sim) as client:
        assert await client.ping() < 5
        last = (await client.ticker_price(SYM)).price
        assert (await client.ticker_24h(SYM)).last_price > 0
        book = await client.depth(SYM, 5)
        assert book.bids[0][0] < book.asks[0][0]
        assert (await client.premium_index(SYM)).mark_price > 0
        assert isinstance(await client.funding_rate_history(SYM), list)
        assert isinstance(await client.recent_trades(SYM, 10), list)
        assert (await client.commission_rate()).taker == Decimal("0.0005")

        # Settings (no positions yet, so mode and margin may change).
        assert await client.set_position_mode(False) is False
        assert await client.get_position_mode() is False
        await client.set_margin_type(SYM, "ISOLATED")
        assert (await client.get_margin_type(SYM)).value == "ISOLATED"
        await client.set_leverage(SYM, "BOTH", 7)
        lev = await client.get_leverage(SYM)
        assert 7 in (lev.long_leverage, lev.short_leverage)

        far = (last * Decimal("0.8"))
        def limit(cid: str) -> OrderRequest:
            return OrderRequest(symbol=SYM, side="BUY", position_side="BOTH", type="LIMIT",
                                quantity=Decimal("0.001"), price=far, client_order_id=cid)

        assert (await client.test_order(limit("probe1"))).symbol == SYM
        one = await client.place_order(limit("single1"))
        batch = await client.place_batch_orders([limit("batch1"), limit("batch2"), limit("batch3")])
        assert sorted(o.client_order_id for o in batch.orders) == ["batch1", "batch2", "batch3"]
        assert {o.client_order_id for o in await client.open_orders(SYM)} == {"single1", "batch1", "batch2", "batch3"}
        cancelled = await client.cancel_order(SYM, order_id=one.order_id)
        assert cancelled.status is OrderStatus.CANCELED
        res = await client.cancel_orders(SYM, client_order_ids=["batch1"])
        assert [o.client_order_id for o in res.cancelled] == ["batch1"]
        res = await client.cancel_all_orders(SYM)
        assert sorted(o.client_order_id for o in res.cancelled) == ["batch2", "batch3"]
        assert await client.open_orders(SYM) == []
        assert (await client.query_order(SYM, client_order_id="single1")).status is OrderStatus.CANCELED

        # A position, then close everything.
        buy = OrderRequest(symbol=SYM, side="BUY", position_side="BOTH", type="MARKET", quantity=Decimal("0.002"),
                           client_order_id="mkt1")
        filled = await client.place_order(buy)
        assert filled.client_order_id == "mkt1"
        (pos,) = await client.positions(SYM)
        assert pos.size == Decimal("0.002") and pos.direction == "LONG"
        closed = await client.close_all_positions(SYM)
        assert closed.success_ids and await client.positions(SYM) == []
        history = await client.order_history(SYM)
        assert {"mkt1"} <= {o.client_order_id for o in history}
        fees = await client.income(SYM, "TRADING_FEE")
        assert fees and all(f.income < 0 for f in fees)

        key = await client.create_listen_key()
        await client.extend_listen_key(key)
        await client.delete_listen_key(key)
    state = sim.state()
    assert state["account"]["hedge_mode"] is False and state["positions"] == []


async def test_account_stream_reports_order_lifecycle(make_sim: SimFactory) -> None:
    sim = await make_sim(speed=1.0)
    sink = EventCollector()
    async with client_for(sim) as client, AccountStream(client, sim.ws_url, on_event=sink):
        await sink.wait_for(AccountConfigUpdate, timeout=8)
        last = (await client.ticker_price(SYM)).price
        req = OrderRequest(symbol=SYM, side="BUY", position_side="LONG", type="LIMIT",
                           quantity=Decimal("0.001"), price=last * Decimal("0.8"), client_order_id="life1")
        placed = await client.place_order(req)
        await client.cancel_order(SYM, client_order_id="life1")

        def statuses(events: list[Any]) -> list[OrderStatus] | None:
            seen = [e.status for e in events if isinstance(e, OrderUpdate) and e.client_order_id == "life1"]
            return seen if OrderStatus.CANCELED in seen else None

        seen = await sink.wait_until(statuses)
    assert seen[0] is OrderStatus.NEW and seen[-1] is OrderStatus.CANCELED
    updates = [e for e in sink.events if isinstance(e, OrderUpdate)]
    assert all(u.order_id == placed.order_id for u in updates)
