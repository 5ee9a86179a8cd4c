"""Live feed throughput: gzip'd WebSocket frames -> events -> closed candles -> validation -> the trading engine.

Main figure (``"frames"``, target >= 50,000 frames/s): the largest candle file as BingX-style gzip'd
binary frames (``--pushes`` ``@kline_1m`` frames and ``--trades`` ``@trade`` frames per minute), each
one gunzipped (``decode_frame``), JSON-parsed as the market stream does (``loads_market``), validated
into events (``parse_market_push``), converted exactly as ``TradingRuntime`` does and fed to
``MarketFeed`` (kline candles, trades as the clock), whose closed candles go through ``CandleStream``
validation into a simulated-broker ``BacktestSession`` (indicator updates, both strategies). Frame
building is excluded.

Second figure (``"kline_updates"``): already-decoded kline updates only, as before:

Replays the largest candle file as BingX-style kline pushes (``--pushes`` per minute, the bar
final when the next minute's first push arrives) through ``MarketFeed`` into a simulated-broker
``BacktestSession``, on one asyncio loop, and reports closed candles per second and pushes per
second (median of ``--runs``). Both are merged into ``bench/results.json`` under ``"feed"``.

    .venv/bin/python bench/bench_feed.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_backtest import largest_candle_file, merge_results  # noqa: E402  (this script's folder is on sys.path)
from engine.backtest.contract import contract_from_candles  # noqa: E402
from engine.backtest.runner import BacktestSession  # noqa: E402
from engine.market.candle import Candle, read_candles_csv  # noqa: E402
from engine.exchange.bingx.events import KlineEvent, TradeEvent, parse_market_push  # noqa: E402
from engine.exchange.bingx.models import loads_market  # noqa: E402
from engine.exchange.bingx.wsconn import decode_frame  # noqa: E402
from engine.market.events import KlineUpdate, TradeTick  # noqa: E402
from engine.simulator.protocol import dumps, gzip_frame  # noqa: E402

TARGET_FRAMES = 50_000
from engine.market.feed import MarketFeed  # noqa: E402
from strategies.params import StrategiesConfig  # noqa: E402



def pushes_for(candles: list[Candle], per_minute: int, symbol: str) -> list[KlineUpdate]:
    """``per_minute`` cumulative pushes per candle; the last one carries the final values."""
    out = []
    for c in candles:
        for k in range(1, per_minute):
            frac = k / per_minute
            close = c.open + (c.close - c.open) * frac
            out.append(KlineUpdate(symbol, c.open_time_ms, c.open, max(c.open, close), min(c.open, close), close, c.volume * frac))
        out.append(KlineUpdate(symbol, c.open_time_ms, c.open, c.high, c.low, c.close, c.volume))
    return out


async def replay(updates: list[KlineUpdate], candles: list[Candle], symbol: str) -> tuple[float, int]:
    session = BacktestSession(symbol, StrategiesConfig(), contract_from_candles(candles), record_equity=False)
    feed = MarketFeed(symbol, session, warmup_candles=0)
    on_kline = feed.on_kline
    started = time.perf_counter()
    for update in updates:
        await on_kline(update)
    await feed.on_clock(candles[-1].open_time_ms + 120_000)
    return time.perf_counter() - started, session.candles


def _price(value: float) -> str:
    return f"{value:.6g}"


def frames_for(candles: list[Candle], pushes: int, trades: int, symbol: str) -> list[bytes]:
    """Gzip'd frames as BingX sends them: per minute ``trades`` trade frames interleaved with ``pushes`` kline frames."""
    kline_topic, trade_topic = f"{symbol}@kline_1m", f"{symbol}@trade"
    out: list[bytes] = []
    for c in candles:
        path = [c.open, c.low if c.close >= c.open else c.high, c.high if c.close >= c.open else c.low, c.close]
        for k in range(trades):
            price = path[min(len(path) - 1, k * len(path) // trades)]
            t = c.open_time_ms + (k + 1) * 60_000 // (trades + 1)
            out.append(gzip_frame(dumps({"code": 0, "dataType": trade_topic, "data": [
                {"q": f"{c.volume / trades:.4f}", "p": _price(price), "T": t, "m": k % 2 == 0, "s": symbol}]})))
            if k < pushes:
                frac = (k + 1) / pushes
                close = price if k + 1 < pushes else c.close
                high = c.high if k + 1 == pushes else max(c.open, close)
                low = c.low if k + 1 == pushes else min(c.open, close)
                out.append(gzip_frame(dumps({"code": 0, "dataType": kline_topic, "s": symbol, "data": [
                    {"c": _price(close), "o": _price(c.open), "h": _price(high), "l": _price(low),
                     "v": f"{c.volume * frac:.4f}", "T": c.open_time_ms}]})))
    return out


async def replay_frames(frames: list[bytes], candles: list[Candle], symbol: str) -> tuple[float, int]:
    """Seconds to take every frame from bytes to the engine; closed candles seen."""
    session = BacktestSession(symbol, StrategiesConfig(), contract_from_candles(candles), record_equity=False)
    feed = MarketFeed(symbol, session, warmup_candles=0)
    started = time.perf_counter()
    for frame in frames:
        message = loads_market(decode_frame(frame).strip())  # as the market stream decodes it
        for event in parse_market_push(message):
            # the same conversions as TradingRuntime._on_market_event
            if isinstance(event, TradeEvent):
                await feed.on_trade(TradeTick(event.symbol, float(event.price), float(event.qty), event.time_ms))
            elif isinstance(event, KlineEvent) and event.interval == "1m":
                await feed.on_kline(KlineUpdate(event.symbol, event.open_time_ms, float(event.open), float(event.high),
                                                float(event.low), float(event.close), float(event.volume)))
    await feed.on_clock(candles[-1].open_time_ms + 120_000)
    return time.perf_counter() - started, session.candles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=3, help="kline frames per minute (BingX sends about 60)")
    parser.add_argument("--trades", type=int, default=6, help="trade frames per minute")
    parser.add_argument("--candles", type=int, default=20_000, help="candles of the largest file turned into frames (0 = all)")
    args = parser.parse_args()
    path = largest_candle_file()
    candles = read_candles_csv(path)
    symbol = "BENCH-USDT"

    subset = candles[: args.candles] if args.candles else candles
    frames = frames_for(subset, args.pushes, args.trades, symbol)
    frame_times = []
    for _ in range(args.runs):
        seconds, closed = asyncio.run(replay_frames(frames, subset, symbol))
        assert closed == len(subset), (closed, len(subset))
        frame_times.append(seconds)
    rates = sorted(len(frames) / t for t in frame_times)
    frames_fig = {
        "file": path.name, "candles": len(subset), "frames": len(frames), "kline_frames_per_minute": args.pushes,
        "trade_frames_per_minute": args.trades, "runs": args.runs,
        "median_frames_per_s": round(statistics.median(rates)), "min_frames_per_s": round(rates[0]), "max_frames_per_s": round(rates[-1]),
        "median_candles_per_s": round(len(subset) / statistics.median(frame_times)), "target_frames_per_s": TARGET_FRAMES,
    }
    print(
        f"{path.name}: {len(subset)} candles as {len(frames)} gzip'd frames: median {frames_fig['median_frames_per_s']:,} frames/s "
        f"(min {frames_fig['min_frames_per_s']:,}, max {frames_fig['max_frames_per_s']:,}; "
        f"{frames_fig['median_candles_per_s']:,} candles/s) {'OK' if frames_fig['median_frames_per_s'] >= TARGET_FRAMES else 'BELOW TARGET'}"
    )

    updates = pushes_for(candles, args.pushes, symbol)
    times = []
    for _ in range(args.runs):
        seconds, closed = asyncio.run(replay(updates, candles, symbol))
        assert closed == len(candles), (closed, len(candles))
        times.append(seconds)
    median = statistics.median(times)
    figures = {
        "file": path.name,
        "candles": len(candles),
        "pushes_per_minute": args.pushes,
        "runs": args.runs,
        "median_seconds": round(median, 4),
        "median_candles_per_s": round(len(candles) / median),
        "median_pushes_per_s": round(len(updates) / median),
        "min_candles_per_s": round(len(candles) / max(times)),
        "max_candles_per_s": round(len(candles) / min(times)),
    }
    print(
        f"{path.name}: {len(candles)} candles as {len(updates)} decoded kline updates: median {figures['median_candles_per_s']:,} candles/s "
        f"({figures['median_pushes_per_s']:,} updates/s; min {figures['min_candles_per_s']:,}, max {figures['max_candles_per_s']:,})"
    )
    merge_results("feed", {"frames": frames_fig, "kline_updates": figures,
                           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
