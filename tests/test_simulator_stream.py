"""`simulate --speed max` streams a whole month of NANO-USDT through a subscribed client."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import pytest

from engine.market.candle import read_candles_csv

from tests.simulator_rawclient import NANO_FILE, RawBingX, gunzip_text
from tests.test_simulator_cli import start_cli


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_month_of_data_at_max_speed() -> None:
    candles = read_candles_csv(NANO_FILE)
    last_open = candles[-1].open_time_ms
    proc, rest_url = await start_cli("--data", str(NANO_FILE), "--symbol", "NANO-USDT", "--speed", "max", "--port", "0")
    ws_url = rest_url.replace("http://", "ws://") + "/swap-market"
    kline_times: list[int] = []
    trades = frames = pings = 0
    t0 = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(ws_url, max_msg_size=0)
            for i, topic in enumerate(["NANO-USDT@kline_1m", "NANO-USDT@trade"]):
                await ws.send_str(json.dumps({"id": str(i), "reqType": "sub", "dataType": topic}))
            while not kline_times or kline_times[-1] < last_open:
                msg = await ws.receive(timeout=20)
                assert msg.type == aiohttp.WSMsgType.BINARY, msg
                text = gunzip_text(msg.data)
                frames += 1
                if text == "Ping":
                    pings += 1
                    await ws.send_str("Pong")
                    continue
                frame = json.loads(text)
                assert frame.get("code", 0) == 0, frame
                if frame.get("dataType") == "NANO-USDT@kline_1m":
                    t = frame["data"][0]["T"]
                    assert not kline_times or t >= kline_times[-1]
                    if not kline_times or t > kline_times[-1]:
                        kline_times.append(t)
                elif frame.get("dataType") == "NANO-USDT@trade":
                    trades += len(frame["data"])
            elapsed = time.monotonic() - t0
            client = RawBingX(session, rest_url, "test-key", "test-secret")
            assert last_open + 50_000 < await client.server_time() < last_open + 60_000  # the clock followed the replay
            await ws.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    # Every minute arrived, in order (this file has no gaps), after the default one-day warm-up.
    assert all(b - a == 60_000 for a, b in zip(kline_times, kline_times[1:]))
    assert len(kline_times) >= len(candles) - 1440 - 1  # the replay waited for our subscription
    assert trades > 5 * len(kline_times)
    assert code == 0
    print(f"\nstreamed {len(kline_times)} candles, {trades} trades, {frames} frames in {elapsed:.1f} s "
          f"({len(kline_times) / elapsed:.0f} candles/s)")
