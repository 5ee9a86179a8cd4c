"""WebSockets over real sockets: gzip framing, Ping/Pong and idle drops, subscriptions and their
errors, market channel pushes and cadence, and the account stream."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from engine.market.candle import Candle, read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer

from tests.simulator_rawclient import NANO_FILE, RawBingX, gunzip_text, ws_next, ws_sub, ws_wait_for

SYM = "NANO-USDT"
ACK_KEYS = {"id", "code", "msg", "dataType", "data"}


@pytest.fixture(scope="module")
def nano_candles():
    return read_candles_csv(NANO_FILE)


async def _sim(candles, **kw: Any) -> SimulatorServer:
    options = dict(paused=True, ping_interval_s=0.2, idle_timeout_s=0.8, config_interval_s=0.3, rate_limit_scale=5)
    options.update(kw)
    sim = SimulatorServer([MarketSpec(SYM, candles)], **options)
    await sim.start()
    return sim


@pytest.fixture
async def sim(nano_candles):
    server = await _sim(nano_candles)
    yield server
    await server.stop()


async def test_gzip_frames_ping_every_interval_and_idle_drop(sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(sim.ws_url)
        pings = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:  # answering Pong keeps the connection alive past the idle timeout
            msg = await ws.receive(timeout=1.0)
            assert msg.type == aiohttp.WSMsgType.BINARY
            if gunzip_text(msg.data) == "Ping":
                pings += 1
                await ws.send_str("Pong")
        assert pings >= 3
        assert not ws.closed
        t_silent = time.monotonic()
        while True:  # now stay silent: the server drops us
            msg = await ws.receive(timeout=3.0)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break
            assert gunzip_text(msg.data) == "Ping"
        assert 0.5 < time.monotonic() - t_silent < 2.5
    assert sim.state()["ws"]["connections"] == 0


async def test_subscription_acks_and_errors(sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(sim.ws_url)
        ack = await ws_sub(ws, f"{SYM}@kline_1m", "a1")
        assert ack == {"id": "a1", "code": 0, "msg": "", "dataType": "", "data": None}
        for i, bad in enumerate(["nano-usdt@kline_1m", "FOO-USDT@trade", f"{SYM}@depth30@200ms", f"{SYM}@kline_7m", f"{SYM}@nothing"]):
            err = await ws_sub(ws, bad, f"bad{i}")
            assert set(err) == ACK_KEYS and err["code"] == 80015 and err["msg"] == "dataType not support"
        await ws.send_str("{not json")
        junk = await ws_wait_for(ws, lambda f: isinstance(f, dict) and f.get("code") == 80014)
        assert "JSON" in junk["msg"]
        await ws.send_str(json.dumps({"id": "u1", "reqType": "unsub", "dataType": f"{SYM}@kline_1m"}))
        unsub = await ws_wait_for(ws, lambda f: isinstance(f, dict) and f.get("id") == "u1")
        assert unsub["code"] == 0
        # Depth with and without the interval suffix are both accepted.
        assert (await ws_sub(ws, f"{SYM}@depth20", "d1"))["code"] == 0
        assert (await ws_sub(ws, f"{SYM}@depth5@500ms", "d2"))["code"] == 0
        await ws.close()


async def test_topic_cap_is_200() -> None:
    def flat(price: float) -> list[Candle]:
        return [Candle(1_700_000_000_000 + i * 60_000, price, price, price, price, 1.0) for i in range(1500)]

    symbols = [f"C{i}-USDT" for i in range(7)]
    sim = SimulatorServer([MarketSpec(s, flat(10.0 + i)) for i, s in enumerate(symbols)], paused=True)
    await sim.start()
    try:
        channels = ["trade", "ticker", "lastPrice", "markPrice", "bookTicker"] + [f"kline_{i}" for i in
                    ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")] + [
                    f"depth{n}" for n in (5, 10, 20, 50, 100)] + [f"depth{n}@500ms" for n in (5, 10, 20, 50, 100)]
        topics = [f"{s}@{c}" for s in symbols for c in channels]
        assert len(topics) > 200
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(sim.ws_url)
            for i, topic in enumerate(topics[:200]):
                await ws.send_str(json.dumps({"id": str(i), "reqType": "sub", "dataType": topic}))
            acks = 0
            while acks < 200:
                frame = await ws_next(ws)
                if "id" in frame:
                    assert frame["code"] == 0
                    acks += 1
            over = await ws_sub(ws, topics[200], "over")
            assert over["code"] == 80403 and over["msg"] == "your topic num over max 200"
            again = await ws_sub(ws, topics[0], "again")  # an existing topic is not a new one
            assert again["code"] == 0
            await ws.close()
    finally:
        await sim.stop()


async def test_market_channel_pushes(sim: SimulatorServer, nano_candles) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(sim.ws_url)
        for i, channel in enumerate(["kline_1m", "trade", "depth5@500ms", "ticker", "markPrice", "bookTicker", "lastPrice"]):
            assert (await ws_sub(ws, f"{SYM}@{channel}", f"s{i}"))["code"] == 0
        await sim.advance(steps=4)
        seen: dict[str, Any] = {}
        trades: list[dict] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (len(seen) < 7 or len(trades) < 4):
            frame = await ws_next(ws, 2.0)
            kind = frame.get("dataType", "")
            if kind.endswith("@trade"):
                trades.extend(frame["data"])
            if kind:
                seen[kind.split("@", 1)[1]] = frame
        kline = seen["kline_1m"]
        assert kline["s"] == SYM and len(kline["data"]) == 1
        bar = kline["data"][0]
        assert set(bar) == {"o", "h", "l", "c", "v", "T"}  # no closed flag
        assert bar["T"] % 60_000 == 0
        candle = next(c for c in nano_candles if c.open_time_ms == bar["T"])
        assert Decimal(bar["o"]) == Decimal(str(candle.open))
        assert len(trades) >= 4
        assert set(trades[0]) == {"q", "p", "T", "m", "s"} and isinstance(trades[0]["m"], bool)
        assert all(candle.open_time_ms <= t["T"] < candle.open_time_ms + 60_000 for t in trades)
        depth = seen["depth5@500ms"]
        asks = [Decimal(p) for p, _ in depth["data"]["asks"]]
        assert len(asks) == 5 and asks == sorted(asks, reverse=True) and "ts" in depth
        assert max(Decimal(p) for p, _ in depth["data"]["bids"]) < min(asks)
        ticker = seen["ticker"]["data"]
        assert ticker["e"] == "24hTicker" and Decimal(ticker["B"]) < Decimal(ticker["A"])
        assert seen["markPrice"]["data"]["e"] == "markPriceUpdate"
        assert seen["lastPrice"]["data"]["c"] == trades[-1]["p"]
        book = seen["bookTicker"]["data"]
        assert book["e"] == "bookTicker" and Decimal(book["b"]) < Decimal(book["a"])
        # Closing the candle: a final push, then the next minute arrives with a later T.
        await sim.advance(candles=2)
        later = await ws_wait_for(ws, lambda f: f.get("dataType") == f"{SYM}@kline_1m" and f["data"][0]["T"] > bar["T"])
        assert later["data"][0]["T"] == bar["T"] + 60_000
        await ws.close()


async def test_kline_push_cadence_at_speed_one(nano_candles) -> None:
    sim = await _sim(nano_candles, paused=False, speed=1.0, ping_interval_s=5.0, idle_timeout_s=30.0)
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(sim.ws_url)
            assert (await ws_sub(ws, f"{SYM}@kline_1m"))["code"] == 0
            times = []
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.3:
                frame = await ws_next(ws, 2.0)
                if frame.get("dataType") == f"{SYM}@kline_1m":
                    times.append(time.monotonic())
            gaps = [b - a for a, b in zip(times, times[1:])]
            assert len(times) >= 3
            assert all(gap < 1.6 for gap in gaps)  # about every second
            await ws.close()
    finally:
        await sim.stop()


async def test_account_stream_events(sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
        key = (await client.signed("POST", "/openApi/user/auth/userDataStream")).json["listenKey"]
        ws = await session.ws_connect(f"{sim.ws_url}?listenKey={key}")
        config = await ws_wait_for(ws, lambda f: f.get("e") == "ACCOUNT_CONFIG_UPDATE")
        assert config["ac"] == {"s": SYM, "l": 20, "S": 20, "mt": "cross"}
        placed = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="30", clientOrderId="WsOrder")
        order_id = placed.data["order"]["orderId"]
        new = await ws_wait_for(ws, lambda f: f.get("e") == "ORDER_TRADE_UPDATE" and f["o"]["x"] == "NEW")
        assert new["o"]["i"] == order_id and new["o"]["c"] == "wsorder" and new["o"]["X"] == "NEW"
        trade = await ws_wait_for(ws, lambda f: f.get("e") == "ORDER_TRADE_UPDATE" and f["o"]["x"] == "TRADE")
        o = trade["o"]
        assert (o["X"], o["S"], o["ps"], o["z"], o["N"]) == ("FILLED", "BUY", "LONG", "30.0", "USDT")
        assert Decimal(o["n"]) < 0 and Decimal(o["ap"]) > 0
        update = await ws_wait_for(ws, lambda f: f.get("e") == "ACCOUNT_UPDATE")
        assert update["a"]["m"] == "ORDER"
        [balance] = update["a"]["B"]
        assert balance["a"] == "USDT" and Decimal(balance["bc"]) == Decimal(o["n"])
        [pos] = update["a"]["P"]
        assert (pos["s"], pos["pa"], pos["ps"], pos["mt"]) == (SYM, "30.0", "LONG", "cross")
        limit = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="LIMIT", quantity="10", price="5")
        await client.cancel(SYM, orderId=limit.data["order"]["orderId"])
        cancel = await ws_wait_for(ws, lambda f: f.get("e") == "ORDER_TRADE_UPDATE" and f["o"]["x"] == "CANCELED")
        assert cancel["o"]["X"] == "CANCELED"  # single L on the WebSocket
        await client.signed("POST", "/openApi/swap/v2/trade/leverage", {"symbol": SYM, "side": "SHORT", "leverage": 7})
        changed = await ws_wait_for(ws, lambda f: f.get("e") == "ACCOUNT_CONFIG_UPDATE" and f["ac"]["S"] == 7)
        assert changed["ac"]["l"] == 20
        # ... and repeated every config interval without any change.
        t0 = time.monotonic()
        await ws_wait_for(ws, lambda f: f.get("e") == "ACCOUNT_CONFIG_UPDATE", timeout=1.0)
        assert time.monotonic() - t0 < 1.0
        await ws.close()


async def test_listen_key_expired_is_pushed(nano_candles) -> None:
    sim = await _sim(nano_candles, listen_key_ttl_s=0.5)
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            key = (await client.signed("POST", "/openApi/user/auth/userDataStream")).json["listenKey"]
            ws = await session.ws_connect(f"{sim.ws_url}?listenKey={key}")
            expired = await ws_wait_for(ws, lambda f: f.get("e") == "listenKeyExpired", timeout=3.0)
            assert expired["listenKey"] == key and isinstance(expired["E"], int)
            with pytest.raises(ConnectionError):
                for _ in range(50):
                    await ws_next(ws, 2.0)
            assert (await client.signed("PUT", "/openApi/user/auth/userDataStream", {"listenKey": key})).status == 404
            stale = await session.ws_connect(f"{sim.ws_url}?listenKey={key}")
            msg = await stale.receive(timeout=2.0)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await sim.stop()


async def test_funding_pushes_account_update(sim: SimulatorServer) -> None:
    async with aiohttp.ClientSession() as session:
        client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
        key = (await client.signed("POST", "/openApi/user/auth/userDataStream")).json["listenKey"]
        assert (await client.signed("POST", "/openApi/swap/v2/trade/marginType", {"symbol": SYM, "marginType": "ISOLATED"})).code == 0
        assert (await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="30")).code == 0
        ws = await session.ws_connect(f"{sim.ws_url}?listenKey={key}")
        await ws_wait_for(ws, lambda f: f.get("e") == "ACCOUNT_CONFIG_UPDATE")
        await sim.advance(to_ms=sim.next_funding_ms + 1)
        update = await ws_wait_for(ws, lambda f: f.get("e") == "ACCOUNT_UPDATE" and f["a"]["m"] == "FUNDING_FEE")
        assert Decimal(update["a"]["B"][0]["bc"]) < 0  # a long pays a positive rate
        assert update["a"]["P"][0]["mt"] == "isolated"
        await ws.close()
