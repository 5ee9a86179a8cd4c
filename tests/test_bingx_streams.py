"""Market and account streams against a local BingX WebSocket fake on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gzip
import logging
from typing import Any, AsyncIterator

import pytest

from engine.exchange.bingx.account_stream import AccountStream
from engine.exchange.bingx.events import (
    AccountConfigUpdate,
    AccountUpdate,
    KlineEvent,
    ListenKeyExpired,
    OrderUpdate,
    StreamReconnected,
    SubscriptionError,
)
from engine.exchange.bingx.market_stream import MarketStream, kline_topic, trade_topic
from engine.exchange.bingx.models import OrderStatus
from engine.exchange.bingx.rest import BingxRestClient

from tests.bingx_fakes import API_KEY, API_SECRET, EventCollector, FakeBingx

TOPIC = kline_topic("BTC-USDT", "1m")


@pytest.fixture
async def fake() -> AsyncIterator[FakeBingx]:
    async with FakeBingx() as server:
        yield server


def market(fake: FakeBingx, sink: EventCollector, **kw: Any) -> MarketStream:
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    return MarketStream(fake.ws_url, on_event=sink, **kw)


async def test_klines_arrive_typed_and_pings_are_answered(fake: FakeBingx) -> None:
    sink = EventCollector()
    stream = market(fake, sink)
    await stream.subscribe(TOPIC)
    async with stream:
        event = await sink.wait_for(KlineEvent)
        assert (event.symbol, event.interval, event.open_time_ms % 60_000) == ("BTC-USDT", "1m", 0)
        await asyncio.sleep(0.6)  # the fake pings every 0.2 s
        assert fake.ws_clients and fake.ws_clients[0].pongs >= 2


async def test_async_iterator_delivery(fake: FakeBingx) -> None:
    stream = MarketStream(fake.ws_url)
    await stream.subscribe(TOPIC)
    async with stream:
        async def first_kline() -> KlineEvent:
            async for event in stream.events():
                if isinstance(event, KlineEvent):
                    return event
            raise AssertionError("stream ended")
        assert (await asyncio.wait_for(first_kline(), 5)).symbol == "BTC-USDT"


async def test_drop_mid_stream_reconnects_resubscribes_and_says_so(fake: FakeBingx) -> None:
    sink = EventCollector()
    stream = market(fake, sink)
    await stream.subscribe(TOPIC)
    async with stream:
        await sink.wait_for(KlineEvent)
        assert await fake.drop_ws() == 1  # abrupt: no close frame, like a BingX release
        mark = len(sink.events)
        reconnected = await sink.wait_for(StreamReconnected, after=mark)
        assert reconnected.topics == (TOPIC,) and reconnected.stream == "market"
        mark = len(sink.events)
        await sink.wait_for(KlineEvent, after=mark)  # data flows again
    assert fake.ws_connections_total == 2
    assert fake.sub_requests.count(("sub", TOPIC)) == 2  # subscribed again on the new connection


async def test_silent_connection_is_detected_and_replaced(fake: FakeBingx, caplog: pytest.LogCaptureFixture) -> None:
    sink = EventCollector()
    stream = market(fake, sink, ping_timeout_s=0.5)
    await stream.subscribe(TOPIC)
    async with stream:
        await sink.wait_for(KlineEvent)
        mark = len(sink.events)
        fake.switches.silent = True  # connection stays open but nothing arrives, not even Ping
        await sink.wait_for(StreamReconnected, after=mark)
        fake.switches.silent = False
        mark = len(sink.events)
        await sink.wait_for(KlineEvent, after=mark)
    assert fake.ws_connections_total >= 2
    assert any("no frame for 0.5 s" in r.getMessage() for r in caplog.records)


async def test_malformed_frames_are_logged_and_skipped(fake: FakeBingx, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    sink = EventCollector()
    stream = market(fake, sink)
    await stream.subscribe(TOPIC)
    async with stream:
        await sink.wait_for(KlineEvent)
        for junk in (b"\x1f\x8b\x08garbage", b"\xff\xfe not utf8", gzip.compress(b"{not json"),
                     gzip.compress(b'{"code":0,"dataType":"BTC-USDT@kline_1m","data":[{"c":"abc","T":1}]}'),
                     gzip.compress(b'{"code":0,"dataType":"nosymbol","data":{}}'), gzip.compress(b"[1,2]"),
                     gzip.compress(b'{"code":0,"dataType":"BTC-USDT@kline_1m","data":[{"c":NaN,"T":1}]}')):
            await fake.push_to_market(junk)
        mark = len(sink.events)
        await sink.wait_for(KlineEvent, after=mark)
    assert fake.ws_connections_total == 1  # never reconnected because of junk
    skipped = [r for r in caplog.records if "skipping" in r.getMessage()]
    assert len(skipped) >= 7
    assert any("non-JSON" in r.getMessage() and "NaN" in r.getMessage() for r in skipped)  # the market decoder refuses it


async def test_topics_are_sharded_at_200_per_connection(fake: FakeBingx) -> None:
    sink = EventCollector()
    stream = market(fake, sink, subscribe_rate_per_s=1000)
    topics = [trade_topic(f"C{i:03d}-USDT") for i in range(250)]
    for topic in topics:
        await stream.subscribe(topic)
    assert stream.shard_count == 2
    async with stream:
        await stream.wait_connected()
        for _ in range(100):
            if sum(len(c.topics) for c in fake.ws_clients) == 250:
                break
            await asyncio.sleep(0.05)
        sizes = sorted(len(c.topics) for c in fake.ws_clients)
    assert sizes == [50, 200]  # as the server counts them per connection
    assert not sink.of(SubscriptionError)  # no 80403 "over max 200"
    assert fake.ws_connections_total == 2
    assert {t for _, t in fake.sub_requests} == set(topics)


async def test_refused_subscription_is_reported_not_retried(fake: FakeBingx) -> None:
    sink = EventCollector()
    stream = market(fake, sink)
    await stream.subscribe("btc-usdt@kline_1m")  # lower case: BingX answers 80015
    async with stream:
        err = await sink.wait_for(SubscriptionError)
        assert err.code == 80015 and err.topic == "btc-usdt@kline_1m"
        assert stream.topics == []


async def test_unsubscribe_stops_the_topic(fake: FakeBingx) -> None:
    sink = EventCollector()
    stream = market(fake, sink)
    await stream.subscribe(TOPIC)
    async with stream:
        await sink.wait_for(KlineEvent)
        await stream.unsubscribe(TOPIC)
        await asyncio.sleep(0.2)
        mark = len(sink.events)
        await asyncio.sleep(0.3)
        assert not [e for e in sink.events[mark:] if isinstance(e, KlineEvent)]
    assert ("unsub", TOPIC) in fake.sub_requests


# --- account stream ------------------------------------------------------------------------------


def account(fake: FakeBingx, client: BingxRestClient, sink: EventCollector, **kw: Any) -> AccountStream:
    kw.setdefault("backoff_base_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    return AccountStream(client, fake.ws_url, on_event=sink, **kw)


def rest(fake: FakeBingx) -> BingxRestClient:
    return BingxRestClient(rest_url=fake.rest_url, api_key=API_KEY, api_secret=API_SECRET)


ORDER_EVENT = {"e": "ORDER_TRADE_UPDATE", "E": 1, "T": 1, "o": {
    "s": "BTC-USDT", "c": "bot1abc", "i": 1900000000000000123, "S": "SELL", "o": "STOP_MARKET", "q": "0.01",
    "p": "0", "sp": "48000", "ap": "0", "x": "CANCELED", "X": "CANCELED", "N": "USDT", "n": "0", "T": 1,
    "wt": "MARK_PRICE", "ps": "LONG", "rp": "0", "z": "0"}}
ACCOUNT_EVENT = {"e": "ACCOUNT_UPDATE", "E": 1, "T": 1, "a": {"m": "ORDER", "B": [
    {"a": "USDT", "wb": "999.5", "cw": "999.5", "bc": "-0.5"}], "P": [
    {"s": "BTC-USDT", "pa": "0.01", "ep": "50000", "up": "0", "mt": "cross", "iw": "0", "ps": "LONG"}]}}


async def test_account_events_are_typed_and_the_key_is_kept_alive(fake: FakeBingx) -> None:
    # Short lifetimes, but within BingX's 2/s listen-key budget that the client enforces.
    fake.switches.listen_key_ttl_s = 1.5
    sink = EventCollector()
    async with rest(fake) as client:
        stream = account(fake, client, sink, keepalive_interval_s=0.6)
        async with stream:
            await sink.wait_for(AccountConfigUpdate)  # pushed on connect
            key = stream.listen_key
            assert key and await fake.push_to_account(ORDER_EVENT) == 1
            await fake.push_to_account(ACCOUNT_EVENT)
            order = await sink.wait_for(OrderUpdate)
            assert order.status is OrderStatus.CANCELED and order.order_id == "1900000000000000123"
            upd = await sink.wait_for(AccountUpdate)
            assert upd.balances[0].balance_change == -0.5
            await asyncio.sleep(2.6)  # well past the 1.5 s lifetime: only extensions keep it alive
            assert stream.listen_key == key and stream.keys_created == 1
            assert fake.listen_keys[key].extends >= 3
        assert key not in fake.listen_keys  # deleted on close
    assert not sink.of(StreamReconnected)


async def test_pushed_expiry_renews_the_key_and_reconnects(fake: FakeBingx) -> None:
    sink = EventCollector()
    async with rest(fake) as client:
        stream = account(fake, client, sink)
        async with stream:
            await stream.wait_connected()
            old = stream.listen_key
            assert old is not None
            await fake.expire_listen_key(old)
            expired = await sink.wait_for(ListenKeyExpired)
            await sink.wait_for(StreamReconnected)
            assert stream.listen_key not in (None, old) and stream.keys_created == 2
            mark = sink.events.index(expired) + 1  # the new connection's first push may already be in
            await sink.wait_for(AccountConfigUpdate, after=mark)  # new connection
            assert await fake.push_to_account(ORDER_EVENT) == 1  # only the new connection is left
            await sink.wait_for(OrderUpdate, after=mark)


async def test_extension_404_recreates_the_key(fake: FakeBingx, caplog: pytest.LogCaptureFixture) -> None:
    fake.switches.listen_key_ttl_s = 0.3  # expires before the first extension
    sink = EventCollector()
    async with rest(fake) as client:
        stream = account(fake, client, sink, keepalive_interval_s=0.6)
        async with stream:
            await stream.wait_connected()
            old = stream.listen_key
            await sink.wait_for(StreamReconnected, timeout=5)
            assert stream.listen_key != old and stream.keys_created >= 2
    assert any("404 on extend" in r.getMessage() for r in caplog.records)
    assert fake.calls("/openApi/user/auth/userDataStream", "PUT")
