"""The replay: candle -> trade path, the replay clock, kline aggregation, and the free-running loop."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.market.candle import Candle, read_candles_csv
from engine.simulator import MarketSpec, SimulatorServer
from engine.simulator.markets import Market, bucket_start
from engine.simulator.replay import ReplayClock, trade_path

from tests.simulator_rawclient import NANO_FILE, RawBingX, ws_sub, ws_wait_for

SYM = "NANO-USDT"


@pytest.fixture(scope="module")
def nano_candles():
    return read_candles_csv(NANO_FILE)


@pytest.fixture(scope="module")
def nano_market(nano_candles):
    return Market(MarketSpec(SYM, nano_candles), nano_candles)


def test_trade_path_reproduces_each_candle(nano_market: Market, nano_candles) -> None:
    for candle in nano_candles[:2000]:
        path = trade_path(candle, nano_market)
        ticks = [s.ticks for s in path]
        assert ticks[0] == nano_market.ticks(candle.open)
        assert ticks[-1] == nano_market.ticks(candle.close)
        assert max(ticks) == nano_market.ticks(candle.high)
        assert min(ticks) == nano_market.ticks(candle.low)
        times = [s.time_ms for s in path]
        assert times == sorted(times) and candle.open_time_ms <= times[0] and times[-1] < candle.open_time_ms + 60_000
        total = sum(s.qty for s in path)
        assert abs(total - candle.volume) < 0.1 + 1e-9  # quantities sit on the 0.1 step
        assert all(s.qty >= 0 for s in path)


@given(
    o=st.integers(1, 10_000), h_up=st.integers(0, 500), l_down=st.integers(0, 500), c_frac=st.floats(0, 1),
    volume=st.floats(0, 1e6, allow_nan=False),
)
@settings(max_examples=200, deadline=None)
def test_trade_path_properties(o: int, h_up: int, l_down: int, c_frac: float, volume: float) -> None:
    market = Market(MarketSpec("X-USDT", [Candle(0, 1.0, 1.0, 1.0, 1.0, 1.0)], price_precision=2, quantity_precision=3), [Candle(0, 1.0, 1.0, 1.0, 1.0, 1.0)])
    h, l = o + h_up, max(1, o - l_down)
    c = l + round((h - l) * c_frac)
    candle = Candle(60_000, o / 100, h / 100, l / 100, c / 100, volume)
    path = trade_path(candle, market)
    ticks = [s.ticks for s in path]
    assert (ticks[0], ticks[-1], max(ticks), min(ticks)) == (o, c, h, l)
    # Bullish candles visit the low first, bearish ones the high first.
    if h != l:
        first_low, first_high = ticks.index(l), ticks.index(h)
        assert (first_low < first_high) == (c >= o) or l == o or h == o
    assert abs(sum(s.qty for s in path) - volume) <= 0.001 * len(path) + 1e-6 * volume
    # Sells push the price down, buys push it up.
    for prev, step in zip(path, path[1:]):
        if step.ticks < prev.ticks:
            assert step.buyer_maker
        elif step.ticks > prev.ticks:
            assert not step.buyer_maker


async def test_replay_clock() -> None:
    clock = ReplayClock(1_000_000, 100.0)
    t0 = clock.now_ms()
    await asyncio.sleep(0.1)
    assert 7_000 < clock.now_ms() - t0 < 20_000
    clock.pause()
    frozen = clock.now_ms()
    await asyncio.sleep(0.05)
    assert clock.now_ms() == frozen
    clock.set_time(frozen + 5)
    assert clock.now_ms() == frozen + 5
    clock.set_time(0)  # never backwards
    assert clock.now_ms() == frozen + 5
    clock.set_speed(None)
    clock.resume()
    assert clock.now_ms() == frozen + 5  # at max speed time moves only with the replay
    with pytest.raises(ValueError):
        ReplayClock(0, 0.0)


@pytest.mark.parametrize("interval", ["3m", "15m", "1h", "4h", "1d", "1w", "1M"])
def test_kline_aggregation_matches_brute_force(nano_candles, interval: str) -> None:
    market = Market(MarketSpec(SYM, nano_candles), nano_candles)
    market.seek(nano_candles[20_000].open_time_ms)
    now = nano_candles[20_000].open_time_ms
    bars = market.klines(interval, start_ms=None, end_ms=None, limit=3, now_ms=now)
    known = nano_candles[:20_000]
    expected: dict[int, list] = {}
    for c in known:
        b = bucket_start(interval, c.open_time_ms)
        bar = expected.setdefault(b, [b, c.open, c.high, c.low, c.close, 0.0])
        bar[2], bar[3], bar[4], bar[5] = max(bar[2], c.high), min(bar[3], c.low), c.close, bar[5] + c.volume
    want = [expected[k] for k in sorted(expected)[-3:]]
    assert [b[0] for b in bars] == [w[0] for w in want]
    for got, w in zip(bars, want):
        assert got[1:5] == tuple(market.ticks(x) for x in w[1:5])
        assert abs(got[5] - w[5]) < 1e-6 * max(1.0, w[5])


async def test_free_running_replay_fills_orders_and_pushes_trades(nano_candles) -> None:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], speed=600.0, rate_limit_scale=5)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            ws = await session.ws_connect(sim.ws_url)
            assert (await ws_sub(ws, f"{SYM}@trade"))["code"] == 0
            trade = await ws_wait_for(ws, lambda f: f.get("dataType") == f"{SYM}@trade", timeout=3.0)
            assert len(trade["data"]) == 1  # finite speed: one push per trade
            price = float(trade["data"][0]["p"])
            reply = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="LIMIT", quantity="5",
                                       price=f"{price - 0.02:.4f}", clientOrderId="dip")
            assert reply.code == 0
            deadline = time.monotonic() + 8
            status = "PENDING"
            while time.monotonic() < deadline and status != "FILLED":
                await asyncio.sleep(0.1)
                status = (await client.query_order(SYM, clientOrderId="dip")).data["order"]["status"]
            assert status == "FILLED"
            reply = await client.admin("/_sim/clock", {"action": "pause"})
            paused_at = reply.json["now_ms"]
            await asyncio.sleep(0.2)
            assert await client.server_time() == paused_at
            await client.admin("/_sim/clock", {"action": "resume"})
            await asyncio.sleep(0.2)
            assert await client.server_time() > paused_at
            await ws.close()
    finally:
        await sim.stop()


async def test_max_speed_waits_for_a_client_then_runs_triggers(nano_candles) -> None:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], speed=None)
    await sim.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = RawBingX(session, sim.rest_url, "test-key", "test-secret")
            t0 = await client.server_time()
            await asyncio.sleep(0.2)
            assert await client.server_time() == t0  # nobody connected: the market waits
            start = sim.markets[SYM].closed_count
            target = round(max(c.high for c in nano_candles[start : start + 120]) - 0.01, 4)  # reached within 2 h
            tp = json.dumps({"type": "TAKE_PROFIT_MARKET", "stopPrice": target, "workingType": "CONTRACT_PRICE"}, separators=(",", ":"))
            placed = await client.place(symbol=SYM, side="BUY", positionSide="LONG", type="MARKET", quantity="10", takeProfit=tp)
            assert placed.code == 0
            ws = await session.ws_connect(sim.ws_url)
            await asyncio.sleep(0.2)
            assert await client.server_time() == t0  # connected but not listening: still waiting
            assert (await ws_sub(ws, f"{SYM}@kline_1m"))["code"] == 0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (await client.admin_state())["positions"]:
                await ws.receive(timeout=5)
            state = await client.admin_state()
            assert state["positions"] == []
            tp_order = next(o for o in state["orders"] if o["type"] == "TAKE_PROFIT_MARKET")
            assert tp_order["status"] == "FILLED"
            await ws.close()
    finally:
        await sim.stop()


async def test_advance_works_at_max_speed_without_clients(nano_candles) -> None:
    sim = SimulatorServer([MarketSpec(SYM, nano_candles)], speed=None)
    await sim.start()
    try:
        before = sim.clock.now_ms()
        replayed = await asyncio.wait_for(sim.advance(candles=2), 5)
        assert replayed > 0 and sim.clock.now_ms() > before
    finally:
        await sim.stop()
